"""Outbound registration (issue 15, item 4) against real peers.

- Kamailio as a PBX (registrar, usrloc, auth with one fixed password): the gateway registers a
  trunk with digest auth; Kamailio grants 4 s (its max_expires), so the 200's Contact expires=
  is honoured and the binding is refreshed before it runs out, several times, never lapsing;
  /readyz and /metrics report it; baresip calls the registered AOR through Kamailio and the
  gateway answers with the trunk's settings (the call is attributed to the trunk although
  Kamailio's address is outside sip_allow; routing matched `trunk`), heard by content; on
  shutdown the gateway un-registers: Kamailio's location is empty (kamcmd ul.dump) and a new
  INVITE to the AOR gets 404.
- A wrong password: the registration fails, /readyz is 503 `registrations_failed`.
- sipp as a registrar answering 423 Min-Expires: 1800: the retry asks for Expires: 1800, then
  the un-REGISTER at shutdown has Expires: 0 (sipp checks each).
"""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import telcodecs

from gateway.media.format import AudioFormat
from gateway.secret import Secret
from tests.support.audio import windows_found
from tests.support.baresip import Baresip, speech_wav
from tests.support.gateway import running_gateway
from tests.support.registrar import KamailioRegistrar
from tests.support.scenarios import CallLog
from tests.support.sip_messages import sip_exchange, sip_request, status_code
from tests.support.sipp import Sipp
from tests.support.waiting import wait_for

PASSWORD = "pbx-pw-5c1d9e"
#: an allow-list that excludes loopback: only the trunk's registrar may send us INVITEs
ELSEWHERE = ["192.0.2.0/24"]


def pbx_trunk(port: int, password: str = PASSWORD, **extra: Any) -> dict[str, Any]:
    return {
        "pbx": {
            "uri": f"sip:127.0.0.1:{port}",
            "register": True,
            "username": "1001",
            "password": password,
            **extra,
        }
    }


async def readyz(port: int) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/readyz") as resp,
    ):
        return resp.status, await resp.json()


async def metrics_text(port: int) -> str:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/metrics") as resp,
    ):
        return await resp.text()


def metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for m in re.finditer(rf"(?m)^{name}\{{([^}}]*)\}} (\S+)$", text):
        have = ",".join(sorted(m.group(1).split(",")))
        if have == want:
            return float(m.group(2))
    return 0.0


def invite_status(registrar: tuple[str, int], user: str) -> int:
    """The final answer of the registrar to an INVITE for `user` (SDP-less, then CANCELled by
    nobody: only used where the answer is a refusal)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        probe = sip_request(
            "INVITE", f"sip:{user}@{registrar[0]}:{registrar[1]}", sock.getsockname()
        )
        return status_code(sip_exchange(sock, probe, registrar, timeout=3.0))


async def test_registers_to_kamailio_refreshes_takes_a_call_and_unregisters(
    tmp_path: Path,
) -> None:
    log = CallLog()
    with KamailioRegistrar(tmp_path / "kamailio", PASSWORD, max_expires=4) as pbx:
        _, port = pbx.address
        routes = [{"trunk": "pbx", "instructions": "You answer the PBX's extension 1001."}]
        async with running_gateway(
            log.setup,
            trunks=pbx_trunk(port, register_expires=60),
            sip_allow=ELSEWHERE,
            routes=routes,
        ) as gw:
            assert gw.sip_registrations is not None and gw.local_provider is not None
            contact = f"sip:1001@127.0.0.1:{gw.sip_port}"
            registrations = gw.sip_registrations
            await wait_for(lambda: registrations.states == {"pbx": "registered"}, 5, "registered")
            assert pbx.contacts("1001") == [contact]
            status, body = await readyz(gw.http_port)
            assert (status, body["registrations"]) == (200, {"pbx": "registered"}), body

            # refreshed before it runs out: Kamailio granted 4 s, so a REGISTER every ~2 s,
            # and the binding is there at every look for 7 s
            registers = len(re.findall(r"REGISTER sip:1001@", pbx.log()))
            watched_from = asyncio.get_running_loop().time()
            for _ in range(14):
                await asyncio.sleep(0.5)
                assert pbx.contacts("1001") == [contact], pbx.log()[-2000:]
            refreshes = len(re.findall(r"REGISTER sip:1001@", pbx.log())) - registers
            watched = asyncio.get_running_loop().time() - watched_from
            assert abs(refreshes - watched / 2) <= 1.5, (refreshes, watched)  # every 2 s
            assert re.search(r"REGISTER sip:1001@127\.0\.0\.1 contact .* expires 60 ", pbx.log())
            text = await metrics_text(gw.http_port)
            assert metric(text, "gateway_sip_registration_state", trunk="pbx", state="registered")
            assert metric(text, "gateway_sip_registrations_total", result="registered") >= 4

            # baresip calls the AOR through Kamailio; the gateway answers it as the pbx trunk
            greeting = telcodecs.ulaw_decode(
                gw.local_provider.options.prompts.audio("greeting", AudioFormat("pcmu", 8000))
            )
            source, said = speech_wav(tmp_path, len(greeting) / 8000 + 0.7, 4.0)
            seconds = int(len(greeting) / 8000 + 0.7 + 6) + 4
            phone = Baresip(
                tmp_path,
                source,
                f"sip:1001@127.0.0.1:{port}",
                seconds,
                account="<sip:caller@127.0.0.1>;regint=0;answermode=auto",
            ).start()
            try:
                waiter = asyncio.create_task(phone.wait_async())
                await wait_for(lambda: bool(log.ended) or waiter.done(), seconds + 5, "the call")
                assert log.ended, phone.log.read_text(errors="replace")[-2000:]
                await asyncio.sleep(0.5)
            finally:
                phone.kill()
            await waiter
            [call] = log.calls
            assert call.info.trunk == "pbx" and call.info.called == "1001"
            assert call.info.source == "127.0.0.1"
            assert log.outcomes() == ["remote_hangup"]
            heard = phone.heard()
            found = windows_found(greeting, heard)
            assert np.mean(np.array(found) >= 0.8) >= 0.85, found
            found = windows_found(said, heard[len(greeting) :])
            assert np.mean(np.array(found) >= 0.8) >= 0.7, found
        # the gateway stopped: it un-registered on the way out
        assert pbx.contacts("1001") == [], pbx.log()[-2000:]
        assert invite_status(pbx.address, "1001") == 404
        assert re.search(r"REGISTER sip:1001@127\.0\.0\.1 contact .* expires 0 ", pbx.log())


async def test_a_wrong_password_fails_the_registration_and_readiness(tmp_path: Path) -> None:
    with KamailioRegistrar(tmp_path / "kamailio", PASSWORD) as pbx:
        _, port = pbx.address
        async with running_gateway(trunks=pbx_trunk(port, "not-the-password")) as gw:
            assert gw.sip_registrations is not None
            await wait_for(
                lambda: (
                    gw.sip_registrations is not None
                    and gw.sip_registrations.states == {"pbx": "failed"}
                ),
                5,
                "the registration to fail",
            )
            status, body = await readyz(gw.http_port)
            assert status == 503 and body["reason"] == "registrations_failed", body
            assert body["registrations"] == {"pbx": "failed"}
            text = await metrics_text(gw.http_port)
            assert metric(text, "gateway_sip_registration_state", trunk="pbx", state="failed") == 1
            assert metric(text, "gateway_sip_registrations_total", result="rejected") >= 1
            assert pbx.contacts("1001") == []
            assert PASSWORD not in text and "not-the-password" not in text


async def test_423_min_expires_is_retried_with_the_larger_expires(tmp_path: Path) -> None:
    registrar = Sipp(tmp_path, "", scenario="registrar_423.xml", extra=["-m", "1"], timeout=20)
    registrar.start()
    trunk = {
        "pbx": {
            "uri": f"sip:127.0.0.1:{registrar.local_port}",
            "register": True,
            "register_user": "2002",
            "register_expires": 60,
        }
    }
    try:
        async with running_gateway(trunks=trunk, api_token=Secret("t")) as gw:
            assert gw.sip_registrations is not None
            await wait_for(
                lambda: (
                    gw.sip_registrations is not None
                    and gw.sip_registrations.states == {"pbx": "registered"}
                ),
                5,
                "registered",
            )
        result = await registrar.wait_async()
    finally:
        registrar.kill()
    assert result.returncode == 0 and result.successful_calls == 1, result.explain()
    sent = [m for m in registrar.traced() if m.direction == "received"]
    expires = [re.search(r"(?m)^Expires: *(\d+)", m.text) for m in sent]
    assert [e.group(1) if e else None for e in expires] == ["60", "1800", "0"]
    assert len({m.call_id for m in sent}) == 1
    cseqs = [int(re.search(r"(?m)^CSeq: *(\d+)", m.text).group(1)) for m in sent]  # type: ignore[union-attr]
    assert cseqs == sorted(cseqs) and len(set(cseqs)) == 3

"""`gateway serve` (a child process, on uvloop as users run it) and baresip over TLS, with
certificates the test makes (a CA, the gateway's certificate, baresip's): calls both ways,
baresip dialling `sips:` and the gateway dialling baresip through a `;transport=tls` trunk, each
hung up by either side, and the greeting checked by content in what baresip heard."""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import telcodecs

from gateway.media.format import AudioFormat
from gateway.realtime.local.tts import render_prompts
from tests.support.audio import Pcm, windows_found
from tests.support.baresip import Baresip
from tests.support.binaries import require_binary
from tests.support.certs import TestCa
from tests.support.gateway import GatewayProcess, call_summaries
from tests.support.harness import free_port
from tests.support.waiting import wait_for

# the gateway is a child process on uvloop: the test's own loop does not matter (conftest.py)
pytestmark = pytest.mark.asyncio(loop_factories=["asyncio"])


async def greeting() -> Pcm:
    prompts = await render_prompts()
    return telcodecs.ulaw_decode(prompts.audio("greeting", AudioFormat("pcmu", 8000)))


def silence(workdir: Path, seconds: float) -> Path:
    """What baresip sends: silence; it hangs up when the file ends."""
    sox = require_binary("sox", "sox")
    path = workdir / "silence.wav"
    subprocess.run(
        [sox, "-n", "-r", "8000", "-c", "1", "-b", "16", str(path), "trim", "0", str(seconds)],
        check=True,
    )
    return path


def heard_the_greeting(phone: Baresip, expected: Pcm) -> None:
    found = windows_found(expected[:16000], phone.heard())
    assert np.mean(np.array(found) >= 0.8) >= 0.85, found


async def stop(gw: GatewayProcess) -> None:
    rc = await asyncio.to_thread(gw.stop)
    assert rc == 0, gw.log_path.read_text()[-3000:]


async def live_call_id(gw: GatewayProcess) -> str:
    ids: list[str] = []

    def listed() -> bool:
        _, body = gw.http("GET", "/calls")
        ids[:] = [c["id"] for c in body["calls"]]
        return bool(ids)

    await wait_for(listed, 15, "the call to be up")
    return ids[0]


async def test_baresip_dials_the_gateway_over_tls_and_the_gateway_hangs_up(tmp_path: Path) -> None:
    """baresip dials `sip:...;transport=tls` (baresip 1.0 cannot send requests to a sips: URI:
    libre answers ENOSYS, so `sips:` calls in are shown with a scripted TLS peer in
    test_e2e_sip_tls_trunks.py); the API hangs up, and our BYE reaches baresip over the call's
    TLS connection. (baresip hanging up: test_e2e_sip_serve_transports.py.)"""
    ca = TestCa(tmp_path)
    ours = ca.issue("gateway", "IP:127.0.0.1")
    tls_port = free_port()
    gw = GatewayProcess(
        tmp_path,
        "--sip-tls-listen", f"127.0.0.1:{tls_port}",
        "--sip-tls-cert", str(ours.cert),
        "--sip-tls-key", str(ours.key),
    )  # fmt: skip
    expected = await greeting()
    seconds = int(len(expected) / 8000) + 3
    await asyncio.to_thread(gw.start)
    try:
        phone = Baresip(
            tmp_path,
            silence(tmp_path, seconds + 30),
            f"sip:agent@127.0.0.1:{tls_port};transport=tls",
            seconds + 34,
            config_extra=f"sip_cafile {ca.cert}\n",
        )
        phone.args.insert(1, "-s")  # SIP trace in its log
        phone.start()
        try:
            call_id = await live_call_id(gw)
            await asyncio.sleep(seconds - 1)  # the greeting has played
            status, body = await asyncio.to_thread(gw.http, "DELETE", f"/calls/{call_id}")
            assert status == 200, body
            await wait_for(lambda: "CSeq: 1 BYE" in phone.trace(), 10, "baresip to get our BYE")
            await asyncio.sleep(0.5)
        finally:
            phone.kill()
        trace = phone.trace()
    finally:
        await stop(gw)
    assert f"Contact: <sip:gateway@127.0.0.1:{tls_port};transport=tls>" in trace, trace
    assert re.search(rf"-> 127\.0\.0\.1:{tls_port}\nACK ", trace), trace
    # our BYE came over TLS from our TLS port (the connection baresip opened), and got its 200
    assert re.search(rf"TLS 127\.0\.0\.1:{tls_port} -> 127\.0\.0\.1:\d+\nBYE sip:", trace), trace
    assert re.search(r"SIP/2\.0 200 OK\r?\n(.*\r?\n){1,8}CSeq: 1 BYE", trace), trace
    [summary] = call_summaries(gw)
    assert summary["outcome"] == "api_hangup", summary
    heard_the_greeting(phone, expected)


@pytest.mark.parametrize("hangup_by", ["gateway", "baresip"])
async def test_the_gateway_dials_baresip_through_a_tls_trunk(
    tmp_path: Path, hangup_by: str
) -> None:
    """POST /calls through `uri = "sip:...;transport=tls"`: the INVITE goes over TLS to
    baresip's TLS port, baresip's certificate verified against the trunk's `tls_ca_file`;
    baresip answers, hears the greeting, and the call is hung up by either side."""
    ca = TestCa(tmp_path)
    ours, theirs = ca.issue("gateway", "IP:127.0.0.1"), ca.issue("phone", "IP:127.0.0.1")
    expected = await greeting()
    seconds = int(len(expected) / 8000) + 3
    phone = Baresip(
        tmp_path,
        silence(tmp_path, seconds if hangup_by == "baresip" else seconds + 30),
        "",  # it answers
        seconds + 40,
        config_extra=f"sip_certificate {theirs.combined}\nsip_cafile {ca.cert}\n",
    )
    phone.args.insert(1, "-s")
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[trunks.phone]\nuri = "sip:127.0.0.1:{phone.sip_port + 1};transport=tls"\n'
        f'tls_ca_file = "{ca.cert}"\n'
    )
    tls_port = free_port()
    gw = GatewayProcess(
        tmp_path,
        "--config", str(config),
        "--sip-tls-listen", f"127.0.0.1:{tls_port}",
        "--sip-tls-cert", str(ours.cert),
        "--sip-tls-key", str(ours.key),
    )  # fmt: skip
    phone.start()
    await asyncio.to_thread(gw.start)
    try:
        status, body = await asyncio.to_thread(
            gw.http, "POST", "/calls", {"to": "gw", "trunk": "phone"}
        )
        assert status == 201, body
        call_id = body["id"]
        await live_call_id(gw)  # answered
        if hangup_by == "gateway":
            await asyncio.sleep(seconds - 1)  # the greeting has played
            status, body = await asyncio.to_thread(gw.http, "DELETE", f"/calls/{call_id}")
            assert status == 200, body
            bye = rf"TLS 127\.0\.0\.1:\d+ -> 127\.0\.0\.1:{phone.sip_port + 1}\nBYE "
        else:  # its file ends: it hangs up, its BYE to our Contact: the TLS listener
            bye = rf"TLS 127\.0\.0\.1:\d+ -> 127\.0\.0\.1:{tls_port}\nBYE sip:gateway@"
        await wait_for(lambda: re.search(bye, phone.trace()) is not None, seconds + 10, "BYE")
        await wait_for(lambda: bool(call_summaries(gw)), 10, "the call to end")
        await asyncio.sleep(0.5)
    finally:
        phone.kill()
        await stop(gw)
    trace = phone.trace()
    # our INVITE over TLS names our TLS listener in Via and Contact (§8.1.1.8, §18.1.1)
    invite = re.search(r"\nINVITE sip:gw@127\.0\.0\.1 SIP/2\.0\r?\n((?:.+\r?\n)+)", trace)
    assert invite is not None, trace
    assert f"Via: SIP/2.0/TLS 127.0.0.1:{tls_port};" in invite.group(1), invite.group(1)
    contact = f"Contact: <sip:gateway@127.0.0.1:{tls_port};transport=tls>"
    assert contact in invite.group(1), invite.group(1)
    assert re.search(r"SIP/2\.0 200 OK\r?\n(.*\r?\n){1,8}CSeq: \d+ BYE", trace), trace
    [summary] = call_summaries(gw)
    outcome = {"baresip": "remote_hangup", "gateway": "api_hangup"}[hangup_by]
    assert summary["outcome"] == outcome, summary
    assert summary["rtp_in"] > 50, summary
    heard_the_greeting(phone, expected)

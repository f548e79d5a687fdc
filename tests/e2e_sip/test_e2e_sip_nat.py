"""NAT and `transport=` against the whole gateway, with sipp (issue 15, item 5).

- A caller whose Contact is a private address it cannot be reached at (a phone behind NAT, no
  Record-Route): the gateway's BYE (DELETE /calls/{id}) still reaches it, at the address its
  INVITE came from, with the Contact as Request-URI (RFC 3261 §12.2.1.1).
- The same for an outbound call whose 2xx carries a private Contact: ACK and BYE arrive.
- A Contact with `;transport=tcp`, from a caller on UDP: the BYE comes over TCP.
- Kamailio with nathelper (deploy/kamailio/kamailio.cfg, WITH_NAT) in front: its
  fix_nated_contact and the gateway's own fix-up agree, and the call ends cleanly.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from gateway.app import Gateway
from gateway.secret import Secret
from tests.support.gateway import assert_nothing_leaked, running_gateway
from tests.support.ops_peers import Kamailio
from tests.support.sipp import Sipp, TracedMessage
from tests.support.waiting import wait_for

TOKEN = "test-api-token-nat-5"
PRIVATE = "10.11.12.13"


async def _api(gw: Gateway, method: str, path: str, json: Any = None) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method,
            f"http://127.0.0.1:{gw.http_port}{path}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            json=json,
        ) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


async def _hang_up_the_call(gw: Gateway) -> None:
    """Wait for the one call to be up, then end it with DELETE /calls/{id} (the gateway's BYE)."""
    await wait_for(lambda: len(gw.manager.calls) == 1, 15, "the call is up")
    [call_id] = list(gw.manager.calls)
    status, body = await _api(gw, "DELETE", f"/calls/{call_id}")
    assert status == 200, body


def _received(sipp: Sipp, method: str) -> list[TracedMessage]:
    return [
        m for m in sipp.traced() if m.direction == "received" and m.first_line.startswith(method)
    ]


async def test_inbound_private_contact_gets_our_bye(tmp_path: Path) -> None:
    contact = f"<sip:sipp@{PRIVATE}:5099>"
    async with running_gateway(api_token=Secret(TOKEN)) as gw:
        sipp = Sipp(
            tmp_path,
            f"127.0.0.1:{gw.sip_port}",
            scenario="nat_uac_contact.xml",
            extra=["-m", "1", "-key", "contact", contact],
            timeout=30,
        ).start()
        try:
            await _hang_up_the_call(gw)
            result = await sipp.wait_async(30)
        finally:
            sipp.kill()
        await assert_nothing_leaked(gw)
    assert result.returncode == 0 and result.successful_calls == 1, result.explain()
    [bye] = _received(sipp, "BYE")
    # sent to where the INVITE came from, addressed to the Contact (§12.2.1.1)
    assert bye.first_line == f"BYE sip:sipp@{PRIVATE}:5099 SIP/2.0", bye.text


async def test_outbound_private_contact_in_the_2xx_gets_ack_and_bye(tmp_path: Path) -> None:
    uas = Sipp(
        tmp_path,
        "",
        scenario="nat_uas_contact.xml",
        extra=["-m", "1", "-key", "contact", f"<sip:far@{PRIVATE}:5099>"],
        timeout=30,
    ).start()
    trunk = {"main": {"uri": f"sip:127.0.0.1:{uas.local_port}"}}
    try:
        async with running_gateway(api_token=Secret(TOKEN), trunks=trunk) as gw:
            status, body = await _api(gw, "POST", "/calls", {"to": "1000", "trunk": "main"})
            assert status == 201, body
            await _hang_up_the_call(gw)
            result = await uas.wait_async(30)
            await assert_nothing_leaked(gw)
    finally:
        uas.kill()
    assert result.returncode == 0 and result.successful_calls == 1, result.explain()
    [ack] = _received(uas, "ACK")
    [bye] = _received(uas, "BYE")
    assert ack.first_line == bye.first_line.replace("BYE", "ACK")
    assert bye.first_line == f"BYE sip:far@{PRIVATE}:5099 SIP/2.0", bye.text


async def test_contact_with_transport_tcp_gets_the_bye_over_tcp(tmp_path: Path) -> None:
    # the BYE's taker: sipp on TCP; the caller: sipp on UDP whose Contact names the TCP one
    taker = Sipp(
        tmp_path / "tcp", "", scenario="bye_over_tcp.xml", transport="t1", extra=["-m", "1"]
    ).start()
    contact = f"<sip:sipp@127.0.0.1:{taker.local_port};transport=tcp>"
    try:
        await asyncio.sleep(0.3)
        async with running_gateway(api_token=Secret(TOKEN)) as gw:
            caller = Sipp(
                tmp_path,
                f"127.0.0.1:{gw.sip_port}",
                scenario="nat_uac_contact.xml",
                extra=["-m", "1", "-key", "contact", contact],
                timeout=30,
            ).start()
            try:
                await _hang_up_the_call(gw)
                result = await taker.wait_async(20)
            finally:
                caller.kill()
            await assert_nothing_leaked(gw)
    finally:
        taker.kill()
    assert result.returncode == 0 and result.successful_calls == 1, result.explain()
    [bye] = _received(taker, "BYE")
    assert "SIP/2.0/TCP" in bye.text, bye.text  # our Via names the transport it went over
    assert not _received(caller, "BYE")


async def test_through_kamailio_with_nathelper(tmp_path: Path) -> None:
    contact = f"<sip:sipp@{PRIVATE}:5099>"
    async with running_gateway(api_token=Secret(TOKEN)) as gw:
        assert gw.sip_port is not None
        with Kamailio(
            tmp_path / "kamailio", [("127.0.0.1", gw.sip_port)], defines=["WITH_NAT"]
        ) as kamailio:
            host, port = kamailio.address
            sipp = Sipp(
                tmp_path,
                f"{host}:{port}",
                scenario="nat_uac_contact.xml",
                extra=["-m", "1", "-key", "contact", contact],
                timeout=30,
            ).start()
            try:
                await _hang_up_the_call(gw)
                result = await sipp.wait_async(30)
            finally:
                sipp.kill()
            log = kamailio.log()
        await assert_nothing_leaked(gw)
    assert result.returncode == 0 and result.successful_calls == 1, result.explain() + log[-2000:]
    [bye] = _received(sipp, "BYE")
    # record-routed through Kamailio, whose nathelper rewrote the Contact to sipp's real address
    assert f"BYE sip:sipp@127.0.0.1:{sipp.local_port}" in bye.first_line, bye.text
    assert "Via: SIP/2.0/UDP 127.0.0.1:" in bye.text and bye.text.count("Via:") == 2

"""The call API through the whole gateway: bearer auth, JSON errors, GET/DELETE /calls, and an
outbound call placed with POST /calls through a trunk (sipp's built-in UAS as the far end)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import aiohttp

from gateway.secret import Secret
from tests.support.gateway import running_gateway
from tests.support.harness import free_udp_tcp_port
from tests.support.sipp import Sipp

TOKEN = "test-api-token-7f3e"


async def _req(
    gw: Any,
    method: str,
    path: str,
    *,
    token: str | None = TOKEN,
    json: Any = None,
    data: bytes | None = None,
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method, f"http://127.0.0.1:{gw.http_port}{path}", headers=headers, json=json, data=data
        ) as resp,
    ):
        body = await resp.json(content_type=None)
        return resp.status, body


async def test_call_api_needs_the_token_and_rejects_bad_input() -> None:
    async with running_gateway(api_token=Secret(TOKEN)) as gw:
        status, body = await _req(gw, "GET", "/calls", token=None)
        assert status == 401 and body["error"]["reason"] == "unauthorized"
        status, body = await _req(gw, "GET", "/calls", token="wrong")
        assert status == 401
        status, body = await _req(gw, "GET", "/calls")
        assert status == 200 and body == {"calls": []}
        status, body = await _req(gw, "POST", "/calls", data=b"{not json")
        assert status == 400 and "JSON" in body["error"]["message"]
        status, body = await _req(gw, "POST", "/calls", json={"to": "<script>"})
        assert status == 400 and "'to'" in body["error"]["message"]
        status, body = await _req(gw, "POST", "/calls", json={"to": "1000", "bogus": 1})
        assert status == 400 and "bogus" in body["error"]["message"]
        status, body = await _req(gw, "POST", "/calls", json={"to": "1000"})
        assert status == 400 and "no trunk configured" in body["error"]["message"]
        # a sip: URI with no trunk: refused, naming the setting that would allow it
        status, body = await _req(gw, "POST", "/calls", json={"to": "sip:bob@127.0.0.1:5999"})
        assert status == 403 and "allow_direct_dial" in body["error"]["message"], body
        assert gw.manager.calls == {} and gw.manager._reserved == 0
        status, body = await _req(gw, "DELETE", "/calls/nope")
        assert status == 404
        status, body = await _req(gw, "POST", "/admin/drain", token=None)
        assert status == 401
        assert not gw.manager.draining


async def test_a_target_the_sip_parser_refuses_is_a_400_not_a_500() -> None:
    trunks = {"t": {"uri": "sip:127.0.0.1:5999"}}
    async with running_gateway(api_token=Secret(TOKEN), trunks=trunks) as gw:
        status, body = await _req(gw, "POST", "/calls", json={"to": "sip:a@b:99999"})
        assert status == 400 and "'to'" in body["error"]["message"], body
        assert gw.manager.calls == {} and gw.manager._reserved == 0


async def test_outbound_call_through_a_trunk_then_list_and_hang_up(tmp_path: Path) -> None:
    uas_port = free_udp_tcp_port()
    trunk = {"main": {"uri": f"sip:127.0.0.1:{uas_port}", "from_user": "+15550001111"}}
    uas = Sipp(tmp_path, "", builtin="uas", extra=["-m", "1"], timeout=30)
    # sipp's uas listens on the port we pass with -p
    uas.args[uas.args.index("-p") + 1] = str(uas_port)
    uas.start()
    try:
        await asyncio.sleep(0.5)
        async with running_gateway(api_token=Secret(TOKEN), trunks=trunk) as gw:
            status, body = await _req(
                gw, "POST", "/calls", json={"to": "+15557654321", "trunk": "main"}
            )
            assert status == 201, body
            call_id = body["id"]
            loop = asyncio.get_running_loop()
            end = loop.time() + 10
            listed: list[dict[str, Any]] = []
            while loop.time() < end and not listed:
                _, calls = await _req(gw, "GET", "/calls")
                listed = [c for c in calls["calls"] if c["id"] == call_id]
                await asyncio.sleep(0.1)
            assert listed, "the outbound call never showed up in GET /calls"
            assert listed[0]["direction"] == "outbound" and listed[0]["leg"] == "sip"
            assert listed[0]["codec"] == "pcmu/8000"
            status, _ = await _req(gw, "GET", f"/calls/{call_id}")
            assert status == 200
            # sipp's built-in uas never hangs up (it waits for a BYE): only the DELETE ends it
            call = gw.manager.get(call_id)
            assert call is not None and call.outcome is None
            assert "BYE sip:" not in uas.messages
            status, body = await _req(gw, "DELETE", f"/calls/{call_id}")
            assert (status, body) == (200, {"status": "ended"})
            # the DELETE answers once the call has ended: gone, counted, its port back
            assert call.outcome == "api_hangup"
            assert gw.manager.get(call_id) is None and gw.manager.calls == {}
            assert gw.sip_calls is not None and gw.sip_calls.ports.in_use == 0
            status, body = await _req(gw, "DELETE", f"/calls/{call_id}")
            assert status == 404 and body["error"]["message"] == "no such call"
        result = await uas.wait_async(20)
        assert "INVITE" in uas.messages
        assert "+15557654321" in uas.messages
        # the gateway's BYE reached the far end, which answered it (the uas scenario's last step)
        received = re.findall(
            r"message received.*\n\s*(\w+) sip:[^\n]*\n(?:.+\n)*?Call-ID: *(\S+)", uas.messages
        )
        [invite_call_id] = {call_id for method, call_id in received if method == "INVITE"}
        assert ("BYE", invite_call_id) in received, uas.messages[-3000:]
        assert result.successful_calls == 1, result.explain()
    finally:
        uas.kill()

"""Caller identity and custom headers against the whole gateway, with sipp (issue 15, item 8).

- Outbound: a trunk's `from_host`, `from_display`, `user_phone`, `asserted_identity`,
  `preferred_identity`, `privacy` and static headers, and a call's `from` and `headers` from
  `POST /calls`, are what the far end (a sipp UAS) sees in the INVITE.
- A header outside the allow-list, or a bad `from`, is a 400 JSON error naming it.
- Inbound: P-Asserted-Identity, Diversion, X-* (two X-Foo lines, in order) reach routing (a
  route matching `X-Tenant: acme` applies) and the scenario (`call.info`); Authorization never.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.app import Gateway
from gateway.secret import Secret
from tests.support.gateway import assert_nothing_leaked, provider_sessions, running_gateway
from tests.support.scenarios import CallLog
from tests.support.sipp import Sipp, TracedMessage
from tests.support.waiting import wait_for

TOKEN = "test-api-token-identity-8"


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


def _header(message: TracedMessage, name: str) -> list[str]:
    return re.findall(rf"(?im)^{re.escape(name)}\s*:\s*(.*?)\s*$", message.text)


async def test_outbound_invite_carries_the_trunk_and_call_identity(tmp_path: Path) -> None:
    uas = Sipp(tmp_path, "", scenario="nat_uas_contact.xml", extra=["-m", "1"], timeout=30)
    uas.args += ["-key", "contact", f"<sip:far@127.0.0.1:{uas.local_port}>"]
    uas.start()
    trunk = {
        "carrier": {
            "uri": f"sip:127.0.0.1:{uas.local_port}",
            "from_user": "+15550000000",
            "from_display": "Trunk Default",
            "from_host": "trunk.example.com",
            "user_phone": True,
            "asserted_identity": "sip:+15550009999@trunk.example.com",
            "preferred_identity": "sip:+15550008888@trunk.example.com",
            "privacy": "id",
            "headers": {"X-Trunk": "t1"},
        }
    }
    call = {
        "to": "+15557654321",
        "trunk": "carrier",
        "from": {"user": "+15550001111", "display": 'Acme "Sales"'},
        "headers": {
            "P-Asserted-Identity": "<sip:+15550001111@trunk.example.com>",
            "Diversion": "<sip:+15550002222@example.com>;reason=unconditional",
            "X-Campaign": "spring",
        },
    }
    try:
        async with running_gateway(api_token=Secret(TOKEN), trunks=trunk) as gw:
            status, body = await _api(gw, "POST", "/calls", call)
            assert status == 201, body
            await wait_for(lambda: len(gw.manager.calls) == 1, 15, "the call is up")
            [live] = gw.manager.calls.values()
            assert live.info.caller == "+15550001111"
            status, _ = await _api(gw, "DELETE", f"/calls/{body['id']}")
            assert status == 200
            result = await uas.wait_async(30)
            await assert_nothing_leaked(gw)
    finally:
        uas.kill()
    assert result.returncode == 0 and result.successful_calls == 1, result.explain()
    [invite] = [m for m in uas.traced() if m.first_line.startswith("INVITE")]
    assert invite.first_line == "INVITE sip:+15557654321@127.0.0.1;user=phone SIP/2.0"
    [from_] = _header(invite, "From")
    assert from_.startswith(
        '"Acme \\"Sales\\"" <sip:+15550001111@trunk.example.com;user=phone>;tag='
    ), from_
    # the call's PAI replaces the trunk's; the trunk's other identity headers stay
    assert _header(invite, "P-Asserted-Identity") == ["<sip:+15550001111@trunk.example.com>"]
    assert _header(invite, "P-Preferred-Identity") == ["<sip:+15550008888@trunk.example.com>"]
    assert _header(invite, "Privacy") == ["id"]
    assert _header(invite, "Diversion") == ["<sip:+15550002222@example.com>;reason=unconditional"]
    assert _header(invite, "X-Campaign") == ["spring"]
    assert _header(invite, "X-Trunk") == ["t1"]


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"headers": {"Via": "SIP/2.0/UDP evil"}}, "'Via'"),
        ({"headers": {"Route": "<sip:evil;lr>"}}, "'Route'"),
        ({"headers": {"Authorization": "Digest x"}}, "'Authorization'"),
        ({"headers": {"X-Ok": "a\r\nVia: evil"}}, "'X-Ok'"),
        ({"headers": ["X-A"]}, "'headers'"),
        ({"from": {"user": "a b"}}, "'from.user'"),
        ({"from": {"user": "1", "display": "line\nbreak"}}, "'from.display'"),
        ({"from": {"user": "1", "name": "x"}}, "name"),
        ({"from": 5}, "'from'"),
    ],
)
async def test_forbidden_headers_and_bad_from_are_400(extra: dict[str, Any], named: str) -> None:
    trunks = {"t": {"uri": "sip:127.0.0.1:5999"}}
    async with running_gateway(api_token=Secret(TOKEN), trunks=trunks) as gw:
        status, body = await _api(gw, "POST", "/calls", {"to": "1000", **extra})
        assert status == 400, body
        assert named in body["error"]["message"], body
        assert gw.manager.calls == {} and gw.manager._reserved == 0


async def test_inbound_headers_reach_routing_and_the_scenario(tmp_path: Path) -> None:
    log = CallLog()
    routes = [
        {"header": {"name": "x-tenant", "value": "other"}, "instructions": "wrong route"},
        {"header": {"name": "X-Tenant", "value": "acme"}, "instructions": "Acme {x_tenant}"},
    ]
    async with running_gateway(log.setup, api_token=Secret(TOKEN), routes=routes) as gw:
        sipp = Sipp(
            tmp_path,
            f"127.0.0.1:{gw.sip_port}",
            scenario="identity_uac.xml",
            extra=["-m", "1"],
            timeout=30,
        ).start()
        try:
            await wait_for(lambda: len(gw.manager.calls) == 1, 15, "the call is up")
            [engine] = provider_sessions(gw)
            instructions = engine.session["instructions"]
            [call_id] = list(gw.manager.calls)
            status, _ = await _api(gw, "DELETE", f"/calls/{call_id}")
            assert status == 200
            result = await sipp.wait_async(30)
        finally:
            sipp.kill()
        await assert_nothing_leaked(gw)
    assert result.returncode == 0, result.explain()
    assert instructions == "Acme acme"  # the header route applied
    [call] = log.calls
    info = call.info
    assert info.header_values("x-foo") == ("one", "two")
    pai = '"Alice" <sip:+15550003333@carrier.example>'
    assert info.header_values("P-Asserted-Identity") == (pai,)
    diversion = "<sip:+15550004444@carrier.example>;reason=unconditional"
    assert info.header_values("Diversion") == (diversion,)
    assert info.headers["X-Foo"] == "one" and info.headers["X-Tenant"] == "acme"
    names = [n.lower() for n, _ in info.header_list]
    assert "authorization" not in names and "Authorization" not in info.headers
    assert "secret-user" not in repr(info)

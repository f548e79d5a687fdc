"""Loopback trust behind a reverse proxy, through the whole in-process gateway (real HTTP).

Without an API token, loopback clients may use the call API, `/metrics` and WebRTC offers. A
reverse proxy on the same host makes every client look like loopback:
- with no `trusted_proxies`, a loopback request that carries forwarding headers is not trusted
  (the proxy relays someone else), on every endpoint;
- with the proxy listed, the forwarded address is the client: trusted only when it is loopback,
  never when a remote client merely claims it; and a WebRTC call's source (what the routing
  table matches) is the forwarded address.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import numpy as np

from gateway.secret import Secret
from tests.support.gateway import running_gateway
from tests.support.waiting import eventually
from tests.support.webrtc import Client

TOKEN = "proxy-test-token-41c9"
BAD_SDP = b"v=0\r\nnot an offer\r\n"


async def _req(
    gw: Any, method: str, path: str, headers: dict[str, str], data: bytes | None = None
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method, f"http://127.0.0.1:{gw.http_port}{path}", headers=headers, data=data
        ) as resp,
    ):
        if resp.content_type == "application/json":
            return resp.status, await resp.json()
        return resp.status, await resp.text()


async def _endpoints(gw: Any, headers: dict[str, str]) -> dict[str, int]:
    """The status of each loopback-trusted endpoint for a request with `headers`."""
    calls, _ = await _req(gw, "GET", "/calls", headers)
    metrics, _ = await _req(gw, "GET", "/metrics", headers)
    # credentials are checked before the body: 401 if refused, 400 (the bad SDP) if admitted
    offer, _ = await _req(
        gw, "POST", "/webrtc/offer", {**headers, "Content-Type": "application/sdp"}, BAD_SDP
    )
    return {"calls": calls, "metrics": metrics, "offer": offer}


ADMITTED = {"calls": 200, "metrics": 200, "offer": 400}
REFUSED = {"calls": 401, "metrics": 401, "offer": 401}


async def test_a_same_host_proxy_nobody_listed_gets_no_loopback_trust() -> None:
    async with running_gateway() as gw:
        assert await _endpoints(gw, {}) == ADMITTED
        for forwarded in (
            {"X-Forwarded-For": "203.0.113.5"},
            {"X-Forwarded-For": "127.0.0.1"},  # even when it claims loopback
            {"Forwarded": "for=198.51.100.2;proto=https"},
            {"X-Real-IP": "203.0.113.5"},
        ):
            assert await _endpoints(gw, forwarded) == REFUSED, forwarded
        status, body = await _req(gw, "GET", "/metrics", {"X-Forwarded-For": "203.0.113.5"})
        assert status == 401 and body["error"]["reason"] == "unauthorized"


async def test_a_trusted_proxy_forwards_the_client_address() -> None:
    async with running_gateway(trusted_proxies=["127.0.0.1/32", "::1/128"]) as gw:
        # a browser on this machine through the proxy
        assert await _endpoints(gw, {"X-Forwarded-For": "127.0.0.1"}) == ADMITTED
        assert await _endpoints(gw, {"Forwarded": 'for="[::1]:52100"'}) == ADMITTED
        # a remote client, also when it claims to be local in its own header
        for forwarded in (
            {"X-Forwarded-For": "203.0.113.5"},
            {"X-Forwarded-For": "127.0.0.1, 203.0.113.5"},
            {"Forwarded": "for=127.0.0.1", "X-Forwarded-For": "203.0.113.5"},
            {"Forwarded": "for=unknown"},
            {},  # the proxy said nothing: who it relays cannot be told
        ):
            assert await _endpoints(gw, forwarded) == REFUSED, forwarded
        # the token still works for everyone
        status, _ = await _req(
            gw,
            "GET",
            "/calls",
            {"X-Forwarded-For": "203.0.113.5", "Authorization": "Bearer x"},
        )
        assert status == 401


async def test_a_webrtc_call_through_a_trusted_proxy_comes_from_the_forwarded_address() -> None:
    async with running_gateway(api_token=Secret(TOKEN), trusted_proxies=["127.0.0.1/32"]) as gw:
        client = Client(np.zeros(8000, np.int16))
        try:
            offer = await client.offer_sdp()
            status, body = await _req(
                gw,
                "POST",
                "/webrtc/offer",
                {
                    "Authorization": f"Bearer {TOKEN}",
                    "Content-Type": "application/sdp",
                    "X-Forwarded-For": "198.51.100.7",
                },
                offer.encode(),
            )
            assert status == 201, body
            await eventually(lambda: len(gw.manager.calls) == 1, 5, "the call")
            [call] = gw.manager.calls.values()
            assert call.info.leg == "webrtc" and call.info.source == "198.51.100.7"
        finally:
            await client.close()
            await gw.manager.end_all("test")

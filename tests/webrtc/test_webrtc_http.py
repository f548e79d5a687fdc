"""The WebRTC HTTP endpoints on loopback: who may offer, bad offers, tokens, CORS, the page."""

from __future__ import annotations

import time

import aiohttp
import numpy as np
from aiortc import RTCSessionDescription

from gateway import metrics
from gateway.errors import CallRejected
from gateway.legs.webrtc.leg import WebRtcLeg
from tests.support.webrtc import Client, gateway_server

API = "api-token-for-tests-7f3a"


def _refused(reason: str) -> float:
    return float(metrics.HTTP_ERRORS.labels(reason=reason)._value.get())


async def _offer_sdp() -> tuple[Client, str]:
    client = Client(np.zeros(4800, np.int16))
    return client, await client.offer_sdp()


async def test_unauthenticated_offers_get_401_and_cost_no_peer_connection() -> None:
    async with gateway_server(api_token=API) as gw, aiohttp.ClientSession() as http:
        before = _refused("unauthorized")
        url = gw.base_url + "/webrtc/offer"
        sdp_headers = {"Content-Type": "application/sdp"}
        attempts = [
            http.post(url, data=b"not even sdp", headers=sdp_headers),  # auth comes first
            http.post(url, data=b"v=0", headers={**sdp_headers, "Authorization": "Bearer nope"}),
            http.post(url + "?token=" + API, data=b"v=0", headers=sdp_headers),  # not in URLs
            http.post(url + "?token=gwt1.e30.AAAA", data=b"v=0", headers=sdp_headers),
        ]
        for attempt in attempts:
            resp = await attempt
            assert resp.status == 401
            body = await resp.json()
            assert body["error"]["reason"] == "unauthorized"
            assert API not in await resp.text()
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert gw.service.legs_created == 0
        assert _refused("unauthorized") == before + 4
        # DELETE needs credentials too
        resp = await http.delete(gw.base_url + "/webrtc/calls/anything")
        assert resp.status == 401


async def test_api_token_and_minted_tokens_admit_offers() -> None:
    async with gateway_server(api_token=API) as gw, aiohttp.ClientSession() as http:
        resp = await http.post(
            gw.base_url + "/webrtc/token",
            json={"ttl": 120},
            headers={"Authorization": f"Bearer {API}"},
        )
        assert resp.status == 201
        minted = await resp.json()
        assert minted["ttl"] == 120
        assert abs(minted["expires_at"] - (time.time() + 120)) < 5
        token = minted["token"]

        # the minted token as ?token= (the page's form)
        client, sdp = await _offer_sdp()
        try:
            resp = await http.post(
                gw.base_url + "/webrtc/offer?token=" + token,
                data=sdp,
                headers={"Content-Type": "application/sdp"},
            )
            assert resp.status == 201, await resp.text()
            await client.pc.setRemoteDescription(RTCSessionDescription(await resp.text(), "answer"))
            assert gw.infos[-1].credential == "minted_token"
            # DELETE with the API token
            resp = await http.delete(
                gw.base_url + resp.headers["Location"],
                headers={"Authorization": f"Bearer {API}"},
            )
            assert resp.status == 200
        finally:
            await client.close()

        # the API token as bearer
        client, sdp = await _offer_sdp()
        try:
            resp = await http.post(
                gw.base_url + "/webrtc/offer",
                json={"sdp": sdp, "type": "offer"},
                headers={"Authorization": f"Bearer {API}"},
            )
            assert resp.status == 201
            assert gw.infos[-1].credential == "api_token"
        finally:
            await client.close()

        # after its lifetime the minted token is refused, before any peer connection
        created = gw.service.legs_created
        gw.service.clock = lambda: time.time() + 121
        resp = await http.post(
            gw.base_url + "/webrtc/offer",
            data=b"v=0",
            headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"},
        )
        assert resp.status == 401
        assert "expired" in (await resp.json())["error"]["message"]
        assert gw.service.legs_created == created


async def test_token_endpoint_rules() -> None:
    async with gateway_server(api_token=API) as gw, aiohttp.ClientSession() as http:
        url = gw.base_url + "/webrtc/token"
        auth = {"Authorization": f"Bearer {API}"}
        resp = await http.post(url)
        assert resp.status == 401
        resp = await http.post(url, headers=auth)
        first = await resp.json()
        assert resp.status == 201 and first["ttl"] == 300
        # a minted token cannot mint another
        resp = await http.post(url, headers={"Authorization": f"Bearer {first['token']}"})
        assert resp.status == 401
        resp = await http.post(url, json={"ttl": 10**7}, headers=auth)
        assert (await resp.json())["ttl"] == 3600
        for bad in ({"ttl": "60"}, {"ttl": True}):
            resp = await http.post(url, json=bad, headers=auth)
            assert resp.status == 400
        resp = await http.post(url, data=b"{", headers=auth)
        assert resp.status == 400
    async with gateway_server() as gw, aiohttp.ClientSession() as http:
        resp = await http.post(gw.base_url + "/webrtc/token")
        assert resp.status == 409
        assert "API token" in (await resp.json())["error"]["message"]


AUDIO_OFFER_TAIL = (
    "a=ice-ufrag:abcd\r\na=ice-pwd:0123456789012345678901\r\n"
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\n"
)


async def test_bad_offers_get_400_with_a_reason() -> None:
    video_offer = (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:111 opus/48000/2\r\n"
        + AUDIO_OFFER_TAIL
        + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:96 VP8/90000\r\n"
        + AUDIO_OFFER_TAIL
    )
    g722_offer = (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 9\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:9 G722/8000\r\n"
        + AUDIO_OFFER_TAIL
    )
    no_ice = (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:111 opus/48000/2\r\n"
    )
    cases: list[tuple[str, bytes, int, str]] = [
        ("application/sdp", b"hello", 400, "not SDP"),
        ("application/sdp", b"\xff\xfe", 400, "UTF-8"),
        ("application/json", b"{", 400, "JSON"),
        ("application/json", b'{"type": "offer"}', 400, "sdp"),
        ("application/json", b'{"sdp": "v=0", "type": "answer"}', 400, "offer"),
        ("text/plain", b"v=0", 415, "application/sdp"),
        ("application/sdp", video_offer.encode(), 400, "video"),
        ("application/sdp", g722_offer.encode(), 400, "codec"),
        ("application/sdp", no_ice.encode(), 400, "ICE"),
        ("application/sdp", b"v=0\r\n" + b"a" * 70000, 413, "too large"),
    ]
    async with gateway_server() as gw, aiohttp.ClientSession() as http:
        before = _refused("bad_request")
        for content_type, body, status, words in cases:
            resp = await http.post(
                gw.base_url + "/webrtc/offer", data=body, headers={"Content-Type": content_type}
            )
            assert resp.status == status, (body[:40], await resp.text())
            assert words in (await resp.json())["error"]["message"], body[:40]
        assert gw.service.legs_created == 0
        assert _refused("bad_request") == before + 8


async def test_cors() -> None:
    allowed = "https://app.example"
    async with (
        gateway_server(cors_origins=(allowed,)) as gw,
        aiohttp.ClientSession() as http,
    ):
        url = gw.base_url + "/webrtc/offer"
        resp = await http.options(
            url,
            headers={"Origin": allowed, "Access-Control-Request-Method": "POST"},
        )
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == allowed
        assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]
        assert "POST" in resp.headers["Access-Control-Allow-Methods"]
        assert "application/sdp" in resp.headers["Accept-Post"]

        resp = await http.options(url, headers={"Origin": "https://evil.example"})
        assert resp.status == 403
        assert "Access-Control-Allow-Origin" not in resp.headers

        # a disallowed origin cannot place a call even from loopback
        resp = await http.post(
            url,
            data=b"v=0",
            headers={"Origin": "https://evil.example", "Content-Type": "application/sdp"},
        )
        assert resp.status == 403
        assert gw.service.legs_created == 0

        # an allowed origin gets CORS headers on errors too
        resp = await http.post(
            url, data=b"junk", headers={"Origin": allowed, "Content-Type": "application/sdp"}
        )
        assert resp.status == 400
        assert resp.headers["Access-Control-Allow-Origin"] == allowed

        # same origin (the page itself) needs no configuration
        resp = await http.post(
            url, data=b"junk", headers={"Origin": gw.base_url, "Content-Type": "application/sdp"}
        )
        assert resp.status == 400


async def test_page_and_assets_are_served_with_a_strict_policy() -> None:
    async with gateway_server() as gw, aiohttp.ClientSession() as http:
        resp = await http.get(gw.base_url + "/")
        assert resp.status == 200
        html = await resp.text()
        assert "webrtc/static/app.js" in html
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
        assert resp.headers["Referrer-Policy"] == "no-referrer"
        for asset, kind in (("app.js", "javascript"), ("style.css", "css")):
            resp = await http.get(gw.base_url + "/webrtc/static/" + asset)
            assert resp.status == 200 and kind in resp.headers["Content-Type"]
        resp = await http.get(gw.base_url + "/webrtc/static/../routes.py")
        assert resp.status in (403, 404)


async def test_refused_calls_free_their_peer_connection() -> None:
    async with gateway_server() as gw, aiohttp.ClientSession() as http:
        # refused by the early check: no peer connection at all
        def at_capacity() -> None:
            raise CallRejected(503, "the gateway is at capacity", retry_after=7)

        gw.service.admit = at_capacity
        resp = await http.post(
            gw.base_url + "/webrtc/offer", data=b"v=0", headers={"Content-Type": "application/sdp"}
        )
        assert resp.status == 503 and resp.headers["Retry-After"] == "7"
        assert gw.service.legs_created == 0
        gw.service.admit = None

        # refused by the call manager after the answer was built: the leg is closed
        legs: list[WebRtcLeg] = []
        make_leg = gw.service.new_leg

        def tracking_new_leg() -> WebRtcLeg:
            legs.append(make_leg())
            return legs[-1]

        async def draining(leg: WebRtcLeg, info: object) -> str:
            raise CallRejected(503, "the gateway is draining", retry_after=30)

        gw.service.new_leg = tracking_new_leg  # type: ignore[method-assign]
        gw.service.create_call = draining
        client, sdp = await _offer_sdp()
        try:
            resp = await http.post(
                gw.base_url + "/webrtc/offer", data=sdp, headers={"Content-Type": "application/sdp"}
            )
            assert resp.status == 503
            assert (await resp.json())["error"]["message"] == "the gateway is draining"
            (leg,) = legs
            assert leg.connection_state == "closed" and not leg._tasks
            assert not gw.service.calls
        finally:
            await client.close()


async def test_beacon_hangs_up_with_the_calls_secret_and_hang_up_is_idempotent() -> None:
    async with gateway_server(api_token=API) as gw, aiohttp.ClientSession() as http:
        auth = {"Authorization": f"Bearer {API}"}
        client, sdp = await _offer_sdp()
        try:
            resp = await http.post(
                gw.base_url + "/webrtc/offer", json={"sdp": sdp, "type": "offer"}, headers=auth
            )
            assert resp.status == 201
            answer = await resp.json()
            call_id, secret = answer["call_id"], answer["hangup_secret"]
            assert len(secret) >= 32 and secret != API
            beacon = f"{gw.base_url}/webrtc/calls/{call_id}/beacon"
            # no headers (sendBeacon cannot set them): the body is the credential
            resp = await http.post(beacon, data=b"not-the-secret")
            assert resp.status == 403
            resp = await http.post(beacon, data=API.encode())  # nor is the API token
            assert resp.status == 403
            assert call_id in gw.service.calls
            resp = await http.post(
                beacon, data=secret.encode(), headers={"Content-Type": "text/plain;charset=UTF-8"}
            )
            assert resp.status == 200
            assert call_id not in gw.service.calls
            # a late hang-up of the ended call: 204, not 404
            resp = await http.delete(f"{gw.base_url}/webrtc/calls/{call_id}", headers=auth)
            assert resp.status == 204
            resp = await http.post(beacon, data=secret.encode())
            assert resp.status == 204
            # a call that never was: still 404, and DELETE still needs credentials
            resp = await http.delete(f"{gw.base_url}/webrtc/calls/nope", headers=auth)
            assert resp.status == 404
            resp = await http.delete(f"{gw.base_url}/webrtc/calls/{call_id}")
            assert resp.status == 401
            resp = await http.get(gw.base_url + "/favicon.ico")
            assert resp.status == 204
        finally:
            await client.close()

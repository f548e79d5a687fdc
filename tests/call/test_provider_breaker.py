"""The provider circuit breaker (issue 13, item 10): its table in simulated time, Hypothesis over
outcome orderings, and the whole gateway against a real unreachable provider: /readyz and OPTIONS
turn 503 after N connect failures, and ready again once a provider listens at the URL."""

from __future__ import annotations

import asyncio
import socket
import time

import aiohttp
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from gateway.call.breaker import BreakerState, ProviderBreaker
from gateway.realtime.local.server import LocalProvider
from tests.support.gateway import header, running_gateway
from tests.support.harness import free_port
from tests.support.sip_messages import sip_exchange, sip_request, status_code

SDP = (
    "v=0\r\no=probe 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def test_opens_after_n_failures_in_a_row_and_a_success_resets_the_count() -> None:
    b = ProviderBreaker(threshold=3, cooldown=10.0)
    assert b.try_acquire(0.0) and not b.failed(0.0) and not b.failed(0.1)
    assert not b.succeeded(0.2) and b.failures == 0  # not three in a row
    assert not b.failed(1.0) and not b.failed(1.1)
    assert b.failed(1.2) and not b.ready and b.state is BreakerState.OPEN
    assert b.retry_at == 11.2
    # concurrent attempts begun before it opened fail too: no news, the cool-down stands
    assert not b.failed(1.3) and b.retry_at == 11.2
    assert b.refusing(5.0) and not b.try_acquire(5.0)  # calls fail fast during the cool-down
    assert not b.refusing(11.2) and b.state is BreakerState.OPEN  # a peek changes nothing


def test_after_the_cool_down_one_trial_decides() -> None:
    b = ProviderBreaker(threshold=1, cooldown=10.0)
    assert b.failed(0.0) and not b.ready
    assert b.try_acquire(10.0) and b.state is BreakerState.HALF_OPEN
    assert not b.try_acquire(10.1)  # one trial at a time
    assert not b.failed(11.0) and b.state is BreakerState.OPEN and b.retry_at == 21.0
    assert b.try_acquire(21.0)
    assert not b.abandoned(21.5) and b.retry_at == 21.5  # the caller left: next one tries
    assert b.try_acquire(21.5)
    assert b.succeeded(22.0) and b.ready and b.failures == 0
    # a late success of an attempt begun before the breaker opened closes it too
    assert b.failed(30.0) and b.succeeded(30.1) and b.ready


def test_threshold_zero_never_opens() -> None:
    b = ProviderBreaker(threshold=0)
    assert not any(b.failed(float(i)) for i in range(100)) and b.ready


@given(
    st.integers(1, 4),
    st.lists(
        st.tuples(st.sampled_from(["acquire", "success", "failure", "abandoned"]), st.floats(0, 8)),
        max_size=60,
    ),
)
def test_any_ordering_keeps_the_invariants(threshold: int, steps: list[tuple[str, float]]) -> None:
    b = ProviderBreaker(threshold=threshold, cooldown=5.0)
    now = 0.0
    in_a_row = 0
    for action, dt in steps:
        now += dt
        was = b.state
        if action == "acquire":
            granted = b.try_acquire(now)
            assert granted == (
                was is BreakerState.CLOSED or (was is BreakerState.OPEN and now >= b.retry_at)
            )
        elif action == "success":
            b.succeeded(now)
            assert b.ready and b.failures == 0
            in_a_row = 0
        elif action == "failure":
            b.failed(now)
            in_a_row += 1
            if was is BreakerState.CLOSED:
                assert b.ready == (in_a_row < threshold)
            else:
                assert not b.ready
        else:
            b.abandoned(now)
            assert b.ready == (was is BreakerState.CLOSED)
        assert b.ready == (b.state is BreakerState.CLOSED)
        if not b.ready:
            in_a_row = max(in_a_row, threshold)


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def invite(port: int) -> str:
    """One INVITE from a fresh socket; the final response text."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        request = sip_request("INVITE", f"sip:bot@127.0.0.1:{port}", sock.getsockname(), body=SDP)
        return sip_exchange(sock, request, ("127.0.0.1", port), timeout=10)


def options(port: int) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        request = sip_request("OPTIONS", f"sip:127.0.0.1:{port}", sock.getsockname())
        return sip_exchange(sock, request, ("127.0.0.1", port))


async def test_readyz_and_options_follow_a_real_unreachable_provider() -> None:
    port = free_port()  # nothing listens here yet: every connect is refused
    url = f"ws://127.0.0.1:{port}/v1/realtime"
    async with running_gateway(
        provider="url",
        provider_url=url,
        provider_breaker_failures=3,
        provider_breaker_cooldown=3.0,
    ) as gw:
        assert gw.sip_port is not None
        sip = gw.sip_port

        async def readyz() -> tuple[int, dict[str, str]]:
            async with aiohttp.ClientSession() as http:
                resp = await http.get(f"http://127.0.0.1:{gw.http_port}/readyz")
                return resp.status, await resp.json()

        assert (await readyz())[0] == 200
        other = sample("gateway_sip_rejected_total", {"reason": "other"})
        unavailable = sample("gateway_sip_rejected_total", {"reason": "provider_unavailable"})
        for i in range(3):
            answer = await asyncio.to_thread(invite, sip)
            assert status_code(answer) == 503 and header(answer, "Retry-After") == "3", answer
            assert (await readyz())[0] == (200 if i < 2 else 503)
        assert await readyz() == (503, {"status": "not_ready", "reason": "provider_unavailable"})
        answer = await asyncio.to_thread(options, sip)
        assert status_code(answer) == 503 and header(answer, "Retry-After") == "3", answer
        # while open, a call fails fast: no connect attempt (the connect timeout is 5 s)
        started = time.monotonic()
        assert status_code(await asyncio.to_thread(invite, sip)) == 503
        assert time.monotonic() - started < 0.5
        # counted as provider_unavailable (4 INVITEs and the OPTIONS), never as `other`
        assert sample("gateway_sip_rejected_total", {"reason": "other"}) == other
        assert (
            sample("gateway_sip_rejected_total", {"reason": "provider_unavailable"})
            == unavailable + 5
        )
        assert sample("gateway_provider_available", {}) == 0
        # a WebRTC offer is refused before any peer connection is made for it
        assert gw.webrtc is not None
        legs = gw.webrtc.legs_created
        async with aiohttp.ClientSession() as http:
            resp = await http.post(
                f"http://127.0.0.1:{gw.http_port}/webrtc/offer",
                data=b"v=0\r\n",
                headers={"Content-Type": "application/sdp"},
            )
            error = (await resp.json())["error"]
        assert resp.status == 503 and error["reason"] == "provider_unavailable", error
        assert gw.webrtc.legs_created == legs

        # the provider comes up at that URL: the gateway's own probe finds it within a cool-down
        provider = LocalProvider(use_espeak=False)
        await provider.start("127.0.0.1", port)
        try:
            deadline = time.monotonic() + 8
            while (await readyz())[0] != 200:
                assert time.monotonic() < deadline, "not ready again after the provider came up"
                await asyncio.sleep(0.1)
            assert await readyz() == (200, {"status": "ready", "reason": "ok"})
            assert status_code(await asyncio.to_thread(options, sip)) == 200
            assert len(provider.sessions) >= 1  # the probe's session
            assert sample("gateway_provider_available", {}) == 1
        finally:
            await provider.stop()

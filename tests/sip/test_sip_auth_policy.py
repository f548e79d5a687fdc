"""Digest auth (RFC 2617 / RFC 8760) and the source policy (allow-list, rate limit, scanners)."""

from __future__ import annotations

import pytest

from gateway.secret import Secret
from gateway.sip.auth import (
    AuthResult,
    Credentials,
    DigestServer,
    authorization,
    digest_response,
    parse_digest,
    pick_challenge,
)
from gateway.sip.message import Headers, SipRequest
from gateway.sip.policy import SourcePolicy, is_scanner


def invite_with(header: str | None, value: str | None) -> SipRequest:
    h = Headers()
    if header and value:
        h.add(header, value)
    return SipRequest("INVITE", "sip:bot@gw", h)


def answer(
    server: DigestServer, now: float, password: str, alg: str | None = None, user: str = "trunk"
) -> SipRequest:
    values = [v for _, v in server.challenge(now)]
    challenge = (
        pick_challenge(values)
        if alg is None
        else next(parse_digest(v) for v in values if f"algorithm={alg}" in v)
    )
    assert challenge is not None
    value = authorization(challenge, "INVITE", "sip:bot@gw", Credentials(user, Secret(password)))
    return invite_with(server.credentials_header, value)


@pytest.mark.parametrize("alg", ["SHA-256", "MD5"])
def test_round_trip_both_algorithms(alg: str) -> None:
    server = DigestServer("gw", {"trunk": Secret("pw")})
    assert server.verify(answer(server, 10.0, "pw", alg), 11.0) is AuthResult.OK
    assert server.verify(answer(server, 10.0, "bad", alg), 11.0) is AuthResult.FAILED
    assert server.verify(answer(server, 10.0, "pw", alg, user="x"), 11.0) is AuthResult.FAILED


def test_client_prefers_sha256() -> None:
    server = DigestServer("gw", {"trunk": Secret("pw")})
    req = answer(server, 0.0, "pw")
    assert "algorithm=SHA-256" in (req.headers.get("Authorization") or "")


def test_missing_stale_and_forged_nonces() -> None:
    server = DigestServer("gw", {"trunk": Secret("pw")}, nonce_ttl=30)
    assert server.verify(invite_with(None, None), 0.0) is AuthResult.MISSING
    assert server.verify(answer(server, 0.0, "pw"), 31.0) is AuthResult.STALE
    stale = dict(server.challenge(0.0, stale=True))
    assert "stale=true" in stale["WWW-Authenticate"]
    other = DigestServer("gw", {"trunk": Secret("pw")})  # another key: a forged nonce
    assert server.verify(answer(other, 0.0, "pw"), 1.0) is AuthResult.FAILED
    foreign_realm = answer(DigestServer("other", {"trunk": Secret("pw")}), 0.0, "pw")
    assert server.verify(foreign_realm, 1.0) is AuthResult.MISSING


def test_proxy_mode_uses_407_headers() -> None:
    server = DigestServer("gw", {"trunk": Secret("pw")}, proxy=True)
    assert server.status == 407
    assert {name for name, _ in server.challenge(0.0)} == {"Proxy-Authenticate"}
    assert server.verify(answer(server, 0.0, "pw"), 1.0) is AuthResult.OK


def test_rfc2617_example_vector() -> None:
    # RFC 2617 §3.5 example (HTTP, but the digest is the same computation)
    resp = digest_response(
        "MD5",
        "Mufasa",
        "testrealm@host.com",
        Secret("Circle Of Life"),
        "GET",
        "/dir/index.html",
        "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        "00000001",
        "0a4f113b",
        "auth",
    )
    assert resp == "6629fae49393a05397450978507c4ef1"


def test_secrets_stay_hidden() -> None:
    creds = Credentials("trunk", Secret("hunter2"))
    assert "hunter2" not in repr(creds) and "hunter2" not in str(creds)
    server = DigestServer("gw", {"trunk": Secret("hunter2")})
    assert all("hunter2" not in v for _, v in server.challenge(0.0))


def test_allow_list_cidrs_v4_v6_and_mapped() -> None:
    policy = SourcePolicy(["192.0.2.0/24", "2001:db8::/32"])
    assert policy.is_allowed("192.0.2.77") and policy.is_allowed("2001:db8::5")
    assert policy.is_allowed("::ffff:192.0.2.9")
    assert not policy.is_allowed("198.51.100.1") and not policy.is_allowed("not-an-ip")


def test_token_bucket_burst_and_refill() -> None:
    policy = SourcePolicy(["10.0.0.0/8"], rate=10, burst=5)
    assert [policy.admit("10.0.0.1", 0.0) for _ in range(6)] == [True] * 5 + [False]
    assert policy.admit("10.0.0.1", 0.1)  # 0.1 s at 10/s = one token
    assert not policy.admit("10.0.0.1", 0.1)


def test_spoofed_flood_is_bounded_and_does_not_starve_allowed_sources() -> None:
    policy = SourcePolicy(
        ["10.0.0.1/32"], rate=10, burst=10, max_sources=100, unlisted_total_rate=50
    )
    admitted = sum(policy.admit(f"203.0.{i // 250}.{i % 250}", 0.5) for i in range(10_000))
    assert admitted <= 100  # the aggregate bucket for unlisted sources: 2 x 50
    assert policy.tracked_sources <= 100 + 1  # LRU tables never grow past their bound
    assert all(policy.admit("10.0.0.1", 0.5) for _ in range(10))


@pytest.mark.parametrize(
    ("agent", "scanner"),
    [
        ("friendly-scanner", True),
        ("sipvicious 0.3", True),
        ("sipcli/v1.8", True),
        ("VaxSIPUserAgent/3.1", True),
        ("Asterisk PBX 20", False),
        ("", False),
        (None, False),
    ],
)
def test_scanner_detection(agent: str | None, scanner: bool) -> None:
    assert is_scanner(agent) is scanner

"""Tokens and who may call: no event loop, time passed in."""

from __future__ import annotations

import base64
import json

import pytest

from gateway.errors import Unauthorized
from gateway.secret import Secret
from gateway.webrtc.auth import (
    DEFAULT_TOKEN_TTL,
    MAX_TOKEN_TTL,
    Authorizer,
    bearer_of,
    is_loopback,
)

NOW = 1_700_000_000.0
API = "the-api-token-0123456789"


def test_minted_token_is_valid_until_it_expires() -> None:
    auth = Authorizer(Secret(API))
    minted = auth.mint(NOW)
    assert minted.ttl == DEFAULT_TOKEN_TTL == 300
    assert minted.expires_at == int(NOW) + 300
    assert minted.token.startswith("gwt1.")
    assert API not in minted.token
    auth.verify_token(minted.token, NOW)
    auth.verify_token(minted.token, NOW + 299.9)
    with pytest.raises(Unauthorized, match="expired"):
        auth.verify_token(minted.token, NOW + 300)


def test_payload_format_is_as_documented() -> None:
    minted = Authorizer(Secret(API)).mint(NOW, ttl=60)
    body = minted.token.split(".")[1]
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    assert payload["v"] == 1 and payload["scope"] == "webrtc"
    assert payload["exp"] - payload["iat"] == 60
    assert len(payload["jti"]) == 16


def test_lifetime_is_clamped() -> None:
    auth = Authorizer(Secret(API))
    assert auth.mint(NOW, ttl=10**6).ttl == MAX_TOKEN_TTL == 3600
    assert auth.mint(NOW, ttl=0).ttl == 1
    with pytest.raises(ValueError):
        Authorizer(Secret(API), default_ttl=7200)


def test_tampered_or_foreign_tokens_are_refused() -> None:
    auth = Authorizer(Secret(API))
    token = auth.mint(NOW).token
    prefix, body, sig = token.split(".")
    longer = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    longer["exp"] += 86400
    forged = base64.urlsafe_b64encode(json.dumps(longer).encode()).rstrip(b"=").decode()
    with pytest.raises(Unauthorized, match="signature"):
        auth.verify_token(f"{prefix}.{forged}.{sig}", NOW)
    # another API token (or a rotated one) does not accept it
    with pytest.raises(Unauthorized, match="signature"):
        Authorizer(Secret(API + "x")).verify_token(token, NOW)
    for bad in ("", "gwt1", "gwt1..", "gwt2." + body + "." + sig, token + ".x", "é.é.é"):
        with pytest.raises(Unauthorized):
            auth.verify_token(bad, NOW)


def test_authorize_with_api_token() -> None:
    auth = Authorizer(Secret(API))
    assert auth.token_required
    ok = {"query_token": None, "remote": "192.0.2.7", "now": NOW}
    assert auth.authorize(bearer=API, **ok) == "api_token"
    assert auth.authorize(bearer=auth.mint(NOW).token, **ok) == "minted_token"
    assert (
        auth.authorize(bearer=None, query_token=auth.mint(NOW).token, remote=None, now=NOW)
        == "minted_token"
    )
    with pytest.raises(Unauthorized):
        auth.authorize(bearer="wrong", **ok)
    with pytest.raises(Unauthorized):
        auth.authorize(bearer=None, **ok)
    # the API token itself is never accepted in a URL, and loopback is no excuse
    with pytest.raises(Unauthorized):
        auth.authorize(bearer=None, query_token=API, remote="127.0.0.1", now=NOW)


def test_without_api_token_only_loopback_is_admitted() -> None:
    auth = Authorizer(Secret(""))
    assert not auth.token_required
    for remote in ("127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"):
        assert auth.authorize(bearer=None, query_token=None, remote=remote, now=NOW) == "loopback"
    for remote in ("192.168.1.2", "10.0.0.1", "::ffff:10.0.0.1", "fe80::1", None, "junk"):
        with pytest.raises(Unauthorized, match="this machine only"):
            auth.authorize(bearer="anything", query_token=None, remote=remote, now=NOW)
    with pytest.raises(Unauthorized) as err:
        auth.mint(NOW)
    assert err.value.status == 409


def test_minting_needs_the_api_token_itself() -> None:
    auth = Authorizer(Secret(API))
    auth.check_api_token(API)
    with pytest.raises(Unauthorized):
        auth.check_api_token(auth.mint(NOW).token)  # no refresh chains
    with pytest.raises(Unauthorized):
        auth.check_api_token(None)


def test_bearer_header_parsing_and_loopback() -> None:
    assert bearer_of("Bearer abc") == "abc"
    assert bearer_of("bearer   abc ") == "abc"
    assert bearer_of("Basic abc") is None
    assert bearer_of("Bearer ") is None
    assert bearer_of(None) is None
    assert is_loopback("127.0.0.1") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("")

"""Who may place a WebRTC call: the API token, short-lived signed tokens, or loopback clients.

Sans-I/O: nothing here reads a clock or a socket; `now` (UNIX seconds) and the peer address are
passed in.

Minted token format (`gwt1`), minted by `POST /webrtc/token` with the API token::

    gwt1.<payload>.<signature>
    payload   = base64url(JSON {"v": 1, "scope": "webrtc", "iat": int, "exp": int, "jti": hex})
    signature = base64url(HMAC-SHA256(key, "gwt1." + payload))
    key       = HMAC-SHA256(api_token, "gateway/webrtc-token/v1")

base64url is unpadded (RFC 4648 §5). The key is derived from the API token, so rotating the API
token revokes every minted token. Lifetime: 300 s by default, at most 3600 s.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Literal

from gateway.errors import Unauthorized
from gateway.http.client import is_loopback
from gateway.secret import Secret

__all__ = ["Authorizer", "MintedToken", "bearer_of", "is_loopback"]

TOKEN_PREFIX = "gwt1"
DEFAULT_TOKEN_TTL = 300
MAX_TOKEN_TTL = 3600
_KEY_LABEL = b"gateway/webrtc-token/v1"
_MAX_TOKEN_CHARS = 512

CredentialKind = Literal["api_token", "minted_token", "loopback"]


@dataclass(frozen=True, slots=True)
class MintedToken:
    """A token as handed to a client: the string and when it stops working (UNIX seconds)."""

    token: str
    expires_at: int
    ttl: int


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Authorizer:
    """Checks credentials of WebRTC requests and mints short-lived tokens.

    With an API token configured, a request needs `Authorization: Bearer <api token>` or a
    minted token (as Bearer, or as `?token=` for the page). Without one, only loopback
    clients are accepted and nothing can be minted.
    """

    def __init__(self, api_token: Secret, default_ttl: int = DEFAULT_TOKEN_TTL) -> None:
        if not 1 <= default_ttl <= MAX_TOKEN_TTL:
            raise ValueError(f"default_ttl must be 1..{MAX_TOKEN_TTL} seconds")
        self._api_token = api_token
        self._default_ttl = default_ttl
        self._key = (
            hmac.new(api_token.reveal().encode(), _KEY_LABEL, hashlib.sha256).digest()
            if api_token
            else b""
        )

    @property
    def token_required(self) -> bool:
        """Whether requests must carry a credential (an API token is configured)."""
        return bool(self._api_token)

    def mint(self, now: float, ttl: int | None = None) -> MintedToken:
        """A new token valid for `ttl` seconds (default 300, clamped to 1..3600)."""
        if not self._key:
            raise Unauthorized("tokens can only be minted when an API token is configured", 409)
        life = self._default_ttl if ttl is None else max(1, min(int(ttl), MAX_TOKEN_TTL))
        iat = int(now)
        payload = {
            "v": 1,
            "scope": "webrtc",
            "iat": iat,
            "exp": iat + life,
            "jti": secrets.token_hex(8),
        }
        body = _b64encode(json.dumps(payload, separators=(",", ":")).encode())
        return MintedToken(f"{TOKEN_PREFIX}.{body}.{self._sign(body)}", iat + life, life)

    def _sign(self, body: str) -> str:
        mac = hmac.new(self._key, f"{TOKEN_PREFIX}.{body}".encode("ascii"), hashlib.sha256)
        return _b64encode(mac.digest())

    def verify_token(self, token: str, now: float) -> None:
        """Raise Unauthorized unless `token` is a minted token, correctly signed and unexpired."""
        if not self._key:
            raise Unauthorized("tokens are not accepted: no API token is configured")
        parts = token.split(".")
        if len(token) > _MAX_TOKEN_CHARS or len(parts) != 3 or parts[0] != TOKEN_PREFIX:
            raise Unauthorized("the token is not a gateway token")
        body, signature = parts[1], parts[2]
        try:
            expected = self._sign(body)
        except UnicodeEncodeError:
            raise Unauthorized("the token is not a gateway token") from None
        if not hmac.compare_digest(expected, signature):
            raise Unauthorized("the token's signature is wrong")
        try:
            payload = json.loads(_b64decode(body))
        except (binascii.Error, ValueError):
            raise Unauthorized("the token is malformed") from None
        if not isinstance(payload, dict) or payload.get("scope") != "webrtc":
            raise Unauthorized("the token is not for WebRTC calls")
        exp = payload.get("exp")
        if not isinstance(exp, int) or isinstance(exp, bool):
            raise Unauthorized("the token is malformed")
        if now >= exp:
            raise Unauthorized("the token has expired")

    def check_api_token(self, bearer: str | None) -> None:
        """Raise Unauthorized unless `bearer` is the API token itself (minting needs it)."""
        if not self._api_token:
            raise Unauthorized("tokens can only be minted when an API token is configured", 409)
        if bearer is None or not hmac.compare_digest(
            bearer.encode(), self._api_token.reveal().encode()
        ):
            raise Unauthorized("minting a token needs the API token")

    def authorize(
        self, *, bearer: str | None, query_token: str | None, remote: str | None, now: float
    ) -> CredentialKind:
        """Which credential admits this request; raise Unauthorized when none does.

        `bearer`: the Authorization Bearer value; `query_token`: `?token=` (minted tokens only,
        so the API token never lands in URLs); `remote`: the client's address as
        `gateway.http.client.request_client` tells it (None: unknown, never loopback).
        """
        if not self._api_token:
            if is_loopback(remote):
                return "loopback"
            raise Unauthorized(
                "calls are accepted from this machine only: configure an API token "
                "to accept them from elsewhere"
            )
        if bearer is not None:
            if hmac.compare_digest(bearer.encode(), self._api_token.reveal().encode()):
                return "api_token"
            if bearer.startswith(TOKEN_PREFIX + "."):
                self.verify_token(bearer, now)
                return "minted_token"
            raise Unauthorized("the bearer token is wrong")
        if query_token is not None:
            self.verify_token(query_token, now)
            return "minted_token"
        raise Unauthorized("a token is needed: send Authorization: Bearer <token>")


def bearer_of(header: str | None) -> str | None:
    """The credential of an `Authorization: Bearer <credential>` header, else None."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()

"""Digest authentication (RFC 2617, RFC 8760 SHA-256, RFC 3261 §22): server and client side.

The server is stateless: a nonce is `<ms timestamp hex>.<HMAC(key, timestamp)>`, so any worker
can check it and it expires after `nonce_ttl` seconds (then `stale=true`, §3.2.1 of RFC 2617).
nonce-count replay is not tracked (a stolen response is only good until the nonce expires).
Passwords are `gateway.secret.Secret`; responses and passwords are never put in errors or reprs.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.secret import Secret
from gateway.sip.message import SipRequest, SipResponse

ALGORITHMS = {"SHA-256": hashlib.sha256, "MD5": hashlib.md5}
_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*,?')


class AuthResult(enum.Enum):
    OK = "ok"
    MISSING = "missing"  # no credentials: challenge
    STALE = "stale"  # good credentials on an expired nonce: challenge with stale=true
    FAILED = "failed"  # wrong user, password, realm or forged nonce


def parse_digest(value: str) -> dict[str, str]:
    """`Digest k=v, k="v"` into a dict (lower-case keys); {} if not a Digest value."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        return {}
    out: dict[str, str] = {}
    for m in _PARAM.finditer(rest):
        raw = m.group(2)
        if raw.startswith('"'):
            raw = raw[1:-1].replace('\\"', '"')
        out[m.group(1).lower()] = raw
    return out


def _h(algorithm: str, text: str) -> str:
    return ALGORITHMS[algorithm](text.encode()).hexdigest()


def digest_response(
    algorithm: str,
    username: str,
    realm: str,
    password: Secret,
    method: str,
    uri: str,
    nonce: str,
    nc: str = "",
    cnonce: str = "",
    qop: str = "",
) -> str:
    """The request-digest (RFC 2617 §3.2.2.1, RFC 8760 §2)."""
    ha1 = _h(algorithm, f"{username}:{realm}:{password.reveal()}")
    ha2 = _h(algorithm, f"{method}:{uri}")
    if qop:
        return _h(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _h(algorithm, f"{ha1}:{nonce}:{ha2}")


class DigestServer:
    """Challenges and verifies inbound requests. `proxy=True` uses 407/Proxy-* headers."""

    def __init__(
        self,
        realm: str,
        users: dict[str, Secret],
        *,
        key: bytes | None = None,
        nonce_ttl: float = 300.0,
        algorithms: Sequence[str] = ("SHA-256", "MD5"),
        proxy: bool = False,
    ) -> None:
        self.realm = realm
        self.users = users
        self._key = key or os.urandom(32)
        self.nonce_ttl = nonce_ttl
        self.algorithms = tuple(algorithms)
        self.proxy = proxy

    @property
    def status(self) -> int:
        return 407 if self.proxy else 401

    @property
    def challenge_header(self) -> str:
        return "Proxy-Authenticate" if self.proxy else "WWW-Authenticate"

    @property
    def credentials_header(self) -> str:
        return "Proxy-Authorization" if self.proxy else "Authorization"

    def _nonce(self, now: float) -> str:
        stamp = format(int(now * 1000), "x")
        mac = hmac.new(self._key, stamp.encode(), hashlib.sha256).hexdigest()[:32]
        return f"{stamp}.{mac}"

    def _nonce_state(self, nonce: str, now: float) -> AuthResult:
        stamp, _, mac = nonce.partition(".")
        good = hmac.new(self._key, stamp.encode(), hashlib.sha256).hexdigest()[:32]
        if not mac or not hmac.compare_digest(mac, good):
            return AuthResult.FAILED
        try:
            issued = int(stamp, 16) / 1000
        except ValueError:
            return AuthResult.FAILED
        return AuthResult.OK if 0 <= now - issued <= self.nonce_ttl else AuthResult.STALE

    def challenge(self, now: float, stale: bool = False) -> list[tuple[str, str]]:
        """Challenge headers, one per algorithm, strongest first (RFC 8760 §2.4)."""
        nonce = self._nonce(now)
        out = []
        for alg in self.algorithms:
            value = f'Digest realm="{self.realm}", nonce="{nonce}", algorithm={alg}, qop="auth"' + (
                ", stale=true" if stale else ""
            )
            out.append((self.challenge_header, value))
        return out

    def verify(self, request: SipRequest, now: float) -> AuthResult:
        """Check the request's credentials for our realm."""
        result = AuthResult.MISSING
        for value in request.headers.get_all(self.credentials_header):
            params = parse_digest(value)
            if params.get("realm") != self.realm:
                continue
            result = self._check(params, request.method, now)
            if result is AuthResult.OK:
                return result
        return result

    def _check(self, params: dict[str, str], method: str, now: float) -> AuthResult:
        algorithm = params.get("algorithm", "MD5").upper()
        username = params.get("username", "")
        password = self.users.get(username)
        if algorithm not in self.algorithms or password is None:
            return AuthResult.FAILED
        qop = params.get("qop", "")
        if qop not in ("", "auth"):
            return AuthResult.FAILED
        expected = digest_response(
            algorithm,
            username,
            self.realm,
            password,
            method,
            params.get("uri", ""),
            params.get("nonce", ""),
            params.get("nc", ""),
            params.get("cnonce", ""),
            qop,
        )
        if not hmac.compare_digest(expected, params.get("response", "")):
            return AuthResult.FAILED
        return self._nonce_state(params.get("nonce", ""), now)


@dataclass(frozen=True)
class Credentials:
    """Outbound credentials for a trunk that challenges us."""

    username: str
    password: Secret

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=***)"


def pick_challenge(values: Sequence[str]) -> dict[str, str] | None:
    """The strongest challenge we support among WWW-/Proxy-Authenticate values."""
    best: dict[str, str] | None = None
    for value in values:
        params = parse_digest(value)
        alg = params.get("algorithm", "MD5").upper()
        if alg not in ALGORITHMS:
            continue
        if best is None or (alg == "SHA-256" and best.get("algorithm", "MD5").upper() != alg):
            best = params
    return best


def answerable_challenge(response: SipResponse, sent: SipRequest) -> dict[str, str] | None:
    """The challenge of a 401/407 to `sent` that we answer, or None: one retry per challenge
    (RFC 3261 §22.2), so not when `sent` already answered one of its realm, unless that nonce
    went stale (RFC 2617 §3.2.1: `stale=true` and a new nonce)."""
    header = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
    challenge = pick_challenge(response.headers.get_all(header))
    if challenge is None:
        return None
    realm = challenge.get("realm", "")
    used = [
        params
        for name in ("Authorization", "Proxy-Authorization")
        for value in sent.headers.get_all(name)
        if (params := parse_digest(value)).get("realm", "") == realm
    ]
    if not used:
        return challenge
    stale = challenge.get("stale", "").lower() == "true"
    nonce = challenge.get("nonce", "")
    return challenge if stale and all(p.get("nonce") != nonce for p in used) else None


def authorization(
    challenge: dict[str, str],
    method: str,
    uri: str,
    credentials: Credentials,
    *,
    cnonce: str | None = None,
    nc: int = 1,
) -> str:
    """The Authorization value answering `challenge` (qop=auth when offered)."""
    alg = challenge.get("algorithm", "MD5").upper()
    realm = challenge.get("realm", "")
    nonce = challenge.get("nonce", "")
    qops = [q.strip() for q in challenge.get("qop", "").split(",") if q.strip()]
    qop = "auth" if "auth" in qops else ""
    cn = cnonce or os.urandom(8).hex()
    ncs = f"{nc:08x}"
    resp = digest_response(
        alg,
        credentials.username,
        realm,
        credentials.password,
        method,
        uri,
        nonce,
        ncs if qop else "",
        cn if qop else "",
        qop,
    )
    value = (
        f'Digest username="{credentials.username}", realm="{realm}", nonce="{nonce}", '
        f'uri="{uri}", response="{resp}", algorithm={alg}'
    )
    if qop:
        value += f', qop={qop}, nc={ncs}, cnonce="{cn}"'
    if "opaque" in challenge:
        value += f', opaque="{challenge["opaque"]}"'
    return value

"""SDES-SRTP (RFC 4568) key material and the SRTP/SRTCP context of one RTP session.

No I/O. `CryptoAttribute` is one `a=crypto` line (parse()/serialize()); `SrtpContext` protects
what we send with our key and unprotects what we receive with the far end's, through libsrtp
(pylibsrtp), which also does replay protection (RFC 3711 §3.3.2, a 128-packet window per SSRC).

Keys are secrets: `CryptoAttribute`'s repr and every error message leave the key out, so a log
line, a metric or an error can never carry one. New keys come from `secrets`.

Receiving never raises: `unprotect()`/`unprotect_rtcp()` return None for a packet that fails
authentication or is a replay, with the bounded reason in `SrtpContext.failure`.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from pylibsrtp import Session

# pylibsrtp is imported when a context is made, not with this module: it imports `socket` (for
# htonl), which a core must not load (tests/foundation/test_pure_cores.py).

__all__ = [
    "SRTP_DROP_REASONS",
    "SUITES",
    "CryptoAttribute",
    "SrtpContext",
    "SrtpSuite",
]


@dataclass(frozen=True, slots=True)
class SrtpSuite:
    """A crypto-suite (RFC 4568 §6.2, RFC 7714 §12): libsrtp's profile, the length of the
    master key plus salt in the inline key, and the SRTP authentication tag's length."""

    name: str
    profile: int
    key_length: int
    tag_length: int
    srtcp_tag_length: int


#: the suites we answer and offer, in our order of preference (offers list them in this order)
SUITES: Final[dict[str, SrtpSuite]] = {
    s.name: s
    for s in (
        # profile: libsrtp's srtp_profile_t (pylibsrtp.Policy.SRTP_PROFILE_*, checked by a test)
        SrtpSuite("AES_CM_128_HMAC_SHA1_80", 1, 30, 10, 10),
        # RFC 4568 §6.2.2: SRTCP keeps its 80-bit tag with the _32 suite
        SrtpSuite("AES_CM_128_HMAC_SHA1_32", 2, 30, 4, 10),
        SrtpSuite("AEAD_AES_128_GCM", 7, 28, 16, 16),  # RFC 7714 §12: 16-octet key, 12 salt
    )
}

#: `stats.dropped` reasons of SRTP (bounded): authentication failed (wrong key, tampered, plain
#: RTP in an SRTP session), or libsrtp's replay check refused it (RFC 3711 §3.3.2)
SRTP_DROP_REASONS: Final = ("srtp_auth", "srtp_replay")

#: session parameters (RFC 4568 §6.3) we can honour by ignoring: a window size hint, FEC order
#: (we do no FEC). Any other (UNENCRYPTED_*, UNAUTHENTICATED_SRTP, KDR, FEC_KEY) makes a line
#: one we do not answer.
_IGNORABLE_PARAMS: Final = ("WSH=", "FEC_ORDER=")
_TAG: Final = re.compile(r"^[0-9]{1,9}$")
_LIFETIME: Final = re.compile(r"^(?:2\^[0-9]{1,2}|[0-9]{1,20})$")
_MKI: Final = re.compile(r"^([0-9]{1,20}):([0-9]{1,3})$")


@dataclass(frozen=True, slots=True)
class CryptoAttribute:
    """One `a=crypto` line (RFC 4568 §9.1) with a single inline key:
    `tag suite inline:KEY||SALT[|lifetime][|MKI:length] [session-params]`.

    `key` is the master key followed by the master salt, raw; it never appears in repr()."""

    tag: int
    suite: str
    key: bytes = field(repr=False)
    lifetime: str | None = None
    mki: tuple[int, int] | None = None  # (value, length in bytes)
    session_params: tuple[str, ...] = ()

    @classmethod
    def parse(cls, value: str) -> CryptoAttribute:
        """Parse the value of an `a=crypto:` line; ValueError (naming no key) if malformed."""
        parts = value.split()
        if len(parts) < 3:
            raise ValueError("crypto: expected tag, suite and key parameters")
        tag_text, suite, key_params, *params = parts
        if not _TAG.match(tag_text):
            raise ValueError("crypto: bad tag")
        if ";" in key_params:
            raise ValueError("crypto: more than one key (RFC 4568 §6.1) is not supported")
        method, colon, info = key_params.partition(":")
        if method != "inline" or not colon:
            raise ValueError("crypto: only the inline key method exists (RFC 4568 §6.1)")
        key_text, *extra = info.split("|")
        try:
            key = base64.b64decode(key_text, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("crypto: key not base64") from None
        lifetime: str | None = None
        mki: tuple[int, int] | None = None
        for item in extra:
            m = _MKI.match(item)
            if m and mki is None:
                mki = (int(m.group(1)), int(m.group(2)))
            elif _LIFETIME.match(item) and lifetime is None and mki is None:
                lifetime = item
            else:
                raise ValueError("crypto: bad lifetime or MKI")
        if mki is not None and not 1 <= mki[1] <= 128:
            raise ValueError("crypto: MKI length not 1-128")
        return cls(int(tag_text), suite, key, lifetime, mki, tuple(params))

    def serialize(self) -> str:
        """The value of the `a=crypto:` line."""
        info = base64.b64encode(self.key).decode()
        if self.lifetime is not None:
            info += f"|{self.lifetime}"
        if self.mki is not None:
            info += f"|{self.mki[0]}:{self.mki[1]}"
        return " ".join((str(self.tag), self.suite, f"inline:{info}", *self.session_params))

    __str__ = serialize

    @classmethod
    def generate(cls, tag: int, suite: str) -> CryptoAttribute:
        """A new random key for `suite` (one of SUITES), from `secrets`."""
        return cls(tag, suite, secrets.token_bytes(SUITES[suite].key_length))

    @property
    def usable(self) -> bool:
        """A line we can answer: a suite of ours, a key of its length, no session parameter we
        cannot honour (RFC 4568 §7.1.1: the answerer picks one it supports)."""
        spec = SUITES.get(self.suite)
        return (
            spec is not None
            and len(self.key) == spec.key_length
            and all(p.startswith(_IGNORABLE_PARAMS) for p in self.session_params)
        )

    def with_tag(self, tag: int) -> CryptoAttribute:
        return CryptoAttribute(tag, self.suite, self.key, self.lifetime, None, ())


def _session(crypto: CryptoAttribute, *, outbound: bool) -> Session:
    """A libsrtp session keyed with `crypto` for any SSRC we send (or receive)."""
    from pylibsrtp import Policy, Session

    if not crypto.usable:
        raise ValueError(f"crypto suite {crypto.suite} not usable")
    direction = Policy.SSRC_ANY_OUTBOUND if outbound else Policy.SSRC_ANY_INBOUND
    return Session(Policy(crypto.key, direction, srtp_profile=SUITES[crypto.suite].profile))


class SrtpContext:
    """SRTP and SRTCP (RFC 3711) for one RTP session: `local` keys what we send, `remote` what
    we receive. `rekey()` takes new keys from a re-INVITE (RFC 4568 §7.1.4); a packet that fails
    under a new remote key is tried under the previous one (packets in flight) until the next
    re-key."""

    def __init__(self, local: CryptoAttribute, remote: CryptoAttribute) -> None:
        from pylibsrtp import Error

        self._errors: tuple[type[Exception], ...] = (Error, ValueError)
        self.local = local
        self.remote = remote
        self._out = _session(local, outbound=True)
        self._in = _session(remote, outbound=False)
        self._previous_in: Session | None = None
        self._strip = _mki_strip(remote)
        self._srtcp_strip = _mki_strip(remote, rtcp=True)
        #: why the last unprotect returned None (one of SRTP_DROP_REASONS)
        self.failure = "srtp_auth"

    def rekey(self, local: CryptoAttribute, remote: CryptoAttribute) -> None:
        """Apply the keys of a new offer/answer; an unchanged key keeps its context (and its
        replay window and rollover counter: RFC 3711 §3.3.1, no keystream reuse)."""
        if (local.suite, local.key) != (self.local.suite, self.local.key):
            self._out = _session(local, outbound=True)
        if (remote.suite, remote.key) != (self.remote.suite, self.remote.key):
            self._previous_in = self._in
            self._in = _session(remote, outbound=False)
            self._strip = _mki_strip(remote)
            self._srtcp_strip = _mki_strip(remote, rtcp=True)
        self.local = local
        self.remote = remote

    def protect(self, packet: bytes) -> bytes:
        """SRTP of one RTP packet (header in the clear, payload encrypted, tag appended)."""
        return self._out.protect(packet)

    def protect_rtcp(self, packet: bytes) -> bytes:
        """SRTCP of one compound RTCP packet (E flag and index, tag appended)."""
        return self._out.protect_rtcp(packet)

    def unprotect(self, packet: bytes) -> bytes | None:
        """The RTP packet inside an SRTP one, or None (see `failure`)."""
        return self._unprotect(packet, rtcp=False)

    def unprotect_rtcp(self, packet: bytes) -> bytes | None:
        """The compound RTCP packet inside an SRTCP one, or None (see `failure`)."""
        return self._unprotect(packet, rtcp=True)

    def _unprotect(self, packet: bytes, *, rtcp: bool) -> bytes | None:
        strip = self._srtcp_strip if rtcp else self._strip
        if strip is not None:  # RFC 3711 §3.1: the MKI sits before the tag, outside the auth
            mki_length, tag_length = strip
            if len(packet) < 12 + mki_length + tag_length:
                self.failure = "srtp_auth"
                return None
            packet = packet[: -(mki_length + tag_length)] + packet[len(packet) - tag_length :]
        try:
            return self._in.unprotect_rtcp(packet) if rtcp else self._in.unprotect(packet)
        except self._errors as exc:
            reason = "srtp_replay" if "replay" in str(exc) else "srtp_auth"
        previous = self._previous_in
        if previous is not None and reason == "srtp_auth":
            try:
                return previous.unprotect_rtcp(packet) if rtcp else previous.unprotect(packet)
            except self._errors:
                pass
        self.failure = reason
        return None


def _mki_strip(remote: CryptoAttribute, *, rtcp: bool = False) -> tuple[int, int] | None:
    """(MKI length, tag length) when the far end puts an MKI in its packets, else None."""
    if remote.mki is None:
        return None
    spec = SUITES[remote.suite]
    return remote.mki[1], spec.srtcp_tag_length if rtcp else spec.tag_length

"""A SIP trunk's settings, typed: one `[trunks.NAME]` TOML table, checked once at load.

A trunk is a carrier, a PBX or an SBC the gateway exchanges calls with. Its outbound side
(`uri` and the keys after it) is where `POST /calls` sends INVITEs, how it authenticates, which
identity it presents, whether it registers and keeps NAT bindings open; its inbound side
(`inbound_sources`) is which addresses may send INVITEs and their shared call budget.

Every key is documented in docs/configuration.md ("Trunks") and docs/trunks.md gives worked
configurations. `Trunk.from_table` raises `ConfigError` naming `trunks.NAME.KEY` for the first
bad value, so a typo is refused at start-up, not on the first call.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

from gateway.errors import ConfigError, SipParseError
from gateway.secret import Secret, read_secret_file
from gateway.sip.message import SipUri
from gateway.sip.sdp import CODECS, SRTP_MODES, MediaPolicy, SrtpMode

#: extra headers a trunk or a `POST /calls` request may put on an outbound INVITE (RFC 3325
#: identity, RFC 5806 diversion, RFC 3323 privacy, and private X- headers); anything else would
#: let an API client rewrite the dialog (From, Via, Route...), so it is refused
ALLOWED_EXTRA_HEADERS = ("P-Asserted-Identity", "P-Preferred-Identity", "Diversion", "Privacy")
KEEPALIVES = ("none", "options", "crlf")
_TOKEN = re.compile(r"^[A-Za-z0-9!%'*+\-.^_`|~]+$")  # RFC 3261 §25.1 token


def extra_header_allowed(name: str) -> bool:
    """May `name` be set on an outbound INVITE by configuration or by the call API."""
    if not _TOKEN.match(name):
        return False
    lower = name.lower()
    return lower.startswith("x-") or any(lower == h.lower() for h in ALLOWED_EXTRA_HEADERS)


def header_value_ok(value: str) -> bool:
    """A header value with no CR, LF or NUL (no header injection)."""
    return not any(c in value for c in "\r\n\0")


@dataclass(frozen=True)
class Trunk:
    """One `[trunks.NAME]` table. Defaults are the safe ones: TLS verified, no registration."""

    name: str
    # --- outbound: where INVITEs go (a sip: or sips: URI; a host name is resolved by RFC 3263)
    uri: str = ""
    # identity: From user and display name, From host (default: our public address)
    from_user: str = "gateway"
    from_display: str = ""
    from_host: str = ""
    #: `;user=phone` on the From and Request-URI (RFC 3261 §19.1.1) for E.164 numbers
    user_phone: bool = False
    #: RFC 3325 identity and RFC 3323 privacy headers on every INVITE through this trunk
    asserted_identity: str = ""
    preferred_identity: str = ""
    privacy: str = ""
    #: static extra headers (allow-listed names: see ALLOWED_EXTRA_HEADERS and X-*)
    headers: Mapping[str, str] = field(default_factory=dict)
    # --- digest credentials, when the trunk challenges (INVITE, in-dialog requests, REGISTER)
    username: str = ""
    password: Secret = Secret("")
    # --- TLS (a sips: uri or ;transport=tls)
    tls_verify: bool = True
    tls_ca_file: str = ""  # a CA bundle; default: the system store
    tls_server_name: str = ""  # SNI and the name verified; default: the uri's host
    tls_client_cert: str = ""  # an optional client certificate chain (PEM)
    tls_client_key: str = ""
    # --- outbound registration (RFC 3261 §10): PBX extensions and register-based carriers
    register: bool = False
    registrar: str = ""  # the registrar's URI; default: the uri's host, port and transport
    register_user: str = ""  # the address-of-record's user; default: username, else from_user
    register_expires: int = 3600
    # --- NAT: keep-alives towards the trunk (OPTIONS, or CRLF on TCP/TLS per RFC 5626 §3.5.1)
    keepalive: str = "none"
    keepalive_interval: float = 30.0
    # --- session timers (RFC 4028) on calls through this trunk
    session_expires: int = 1800
    min_se: int = 90
    # --- inbound: signalling addresses allowed to send INVITEs, and their shared call budget
    inbound_sources: tuple[str, ...] = ()
    calls_per_second: float | None = None
    calls_burst: float | None = None
    # --- SRTP (issue 16): off|optional|mandatory for calls through this trunk; "" = sip_srtp
    srtp: str = ""
    # --- issue 16, wideband codecs: this trunk's codecs in order of preference (None: the
    # global `sip_codecs`)
    codecs: tuple[str, ...] | None = None

    @property
    def outbound(self) -> bool:
        """Calls can go out through this trunk (inbound-only trunks have no uri)."""
        return bool(self.uri)

    def parsed_uri(self) -> SipUri:
        """The outbound uri parsed (checked at load, so this does not raise for a loaded trunk)."""
        return SipUri.parse(self.uri)

    def identity_headers(self, extra: Sequence[tuple[str, str]] = ()) -> list[tuple[str, str]]:
        """The identity headers of an INVITE through this trunk: its static `headers`, then
        P-Asserted-Identity (RFC 3325), P-Preferred-Identity and Privacy (RFC 3323), then a
        call's `extra` ones (allow-listed by the caller), which replace any of the same name.
        A bare URI becomes a name-addr (`<sip:...>`)."""
        out: list[tuple[str, str]] = list(self.headers.items())
        for name, value in (
            ("P-Asserted-Identity", self.asserted_identity),
            ("P-Preferred-Identity", self.preferred_identity),
        ):
            if value:
                bare = "<" not in value and value.lower().startswith(("sip:", "sips:", "tel:"))
                out.append((name, f"<{value}>" if bare else value))
        if self.privacy:
            out.append(("Privacy", self.privacy))
        replaced = {name.lower() for name, _ in extra}
        return [(n, v) for n, v in out if n.lower() not in replaced] + list(extra)

    def media_policy(self, default: MediaPolicy) -> MediaPolicy:
        """The media policy of calls through this trunk: `default` (the global settings') with
        this trunk's own media keys applied."""
        policy = default
        if self.srtp:
            policy = dataclasses.replace(policy, srtp=cast(SrtpMode, self.srtp))
        if self.codecs is not None:
            policy = replace(policy, codecs=self.codecs)
        return policy

    def auth_user(self) -> str:
        """The address-of-record user a registration binds."""
        return self.register_user or self.username or self.from_user

    @classmethod
    def from_table(cls, name: str, table: Any) -> Trunk:
        """Check and type one TOML table. `password_file` reads the password from a file (as
        every `<secret>_file` setting does)."""
        where = f"trunks.{name}"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: expected a TOML table")
        known = {f.name for f in dataclasses.fields(cls)} - {"name"}
        for key in table:
            if key not in known and key != "password_file":
                raise ConfigError(f"{where}.{key}: unknown key")
        values: dict[str, Any] = {}

        def text(key: str) -> None:
            if key in table:
                value = table[key]
                if not isinstance(value, str) or not header_value_ok(value):
                    raise ConfigError(f"{where}.{key}: expected a string on one line")
                values[key] = value

        def flag(key: str) -> None:
            if key in table:
                if not isinstance(table[key], bool):
                    raise ConfigError(f"{where}.{key}: expected true or false")
                values[key] = table[key]

        def number(key: str, low: float, high: float, kind: type = float) -> None:
            if key in table:
                value = table[key]
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ConfigError(f"{where}.{key}: expected a number")
                if kind is int and not float(value).is_integer():
                    raise ConfigError(f"{where}.{key}: expected a whole number")
                if not low <= value <= high:
                    raise ConfigError(f"{where}.{key}: expected {low:g} to {high:g}")
                values[key] = kind(value)

        for key in (
            "uri",
            "from_user",
            "from_display",
            "from_host",
            "asserted_identity",
            "preferred_identity",
            "privacy",
            "username",
            "tls_ca_file",
            "tls_server_name",
            "tls_client_cert",
            "tls_client_key",
            "registrar",
            "register_user",
            "keepalive",
            "srtp",
        ):
            text(key)
        for key in ("user_phone", "tls_verify", "register"):
            flag(key)
        number("register_expires", 60, 86400, int)
        number("keepalive_interval", 5, 3600)
        number("session_expires", 90, 86400, int)
        number("min_se", 90, 86400, int)
        number("calls_per_second", 0, 1e6)
        number("calls_burst", 1, 1e6)

        if "password" in table and "password_file" in table:
            raise ConfigError(f"{where}: password and password_file are both set: give one")
        if "password" in table:
            if not isinstance(table["password"], str):
                raise ConfigError(f"{where}.password: expected a string")
            values["password"] = Secret(table["password"])
        if "password_file" in table:
            path = table["password_file"]
            if not isinstance(path, str) or not path:
                raise ConfigError(f"{where}.password_file: expected a path")
            values["password"] = read_secret_file(path, f"{where}.password_file")

        sources = table.get("inbound_sources", [])
        if not isinstance(sources, list) or not all(isinstance(c, str) for c in sources):
            raise ConfigError(f"{where}.inbound_sources: expected a list of CIDR networks")
        for cidr in sources:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ConfigError(
                    f"{where}.inbound_sources: {cidr!r} is not a CIDR network"
                ) from None
        values["inbound_sources"] = tuple(sources)

        headers = table.get("headers", {})
        if not isinstance(headers, dict):
            raise ConfigError(f"{where}.headers: expected a table of header = value")
        for hname, hvalue in headers.items():
            if not extra_header_allowed(hname):
                raise ConfigError(
                    f"{where}.headers: {hname!r} may not be set (allowed: "
                    f"{', '.join(ALLOWED_EXTRA_HEADERS)} and X-*)"
                )
            if not isinstance(hvalue, str) or not header_value_ok(hvalue):
                raise ConfigError(f"{where}.headers.{hname}: expected a string on one line")
        values["headers"] = dict(headers)

        if "codecs" in table:
            codecs = table["codecs"]
            if (
                not isinstance(codecs, list)
                or not codecs
                or not all(isinstance(c, str) and c in CODECS for c in codecs)
                or len(set(codecs)) != len(codecs)
            ):
                raise ConfigError(f"{where}.codecs: expected a list of {', '.join(CODECS)}")
            values["codecs"] = tuple(codecs)

        trunk = cls(name=name, **values)
        trunk._check(where)
        return trunk

    def _check(self, where: str) -> None:
        if self.srtp and self.srtp not in SRTP_MODES:
            raise ConfigError(f"{where}.srtp: {self.srtp!r} is not one of {SRTP_MODES}")
        if self.keepalive not in KEEPALIVES:
            raise ConfigError(f"{where}.keepalive: {self.keepalive!r} is not one of {KEEPALIVES}")
        if self.uri:
            try:
                uri = self.parsed_uri()
            except (SipParseError, ValueError):
                raise ConfigError(f"{where}.uri: {self.uri!r} is not a sip: or sips: URI") from None
            transport = str(uri.params.get("transport", "udp")).lower()
            if transport not in ("udp", "tcp", "tls"):
                raise ConfigError(f"{where}.uri: transport={transport} is not udp, tcp or tls")
            if self.keepalive == "crlf" and transport == "udp" and uri.scheme != "sips":
                raise ConfigError(f"{where}.keepalive: crlf needs a TCP or TLS uri (RFC 5626)")
        if self.registrar:
            try:
                SipUri.parse(self.registrar)
            except (SipParseError, ValueError):
                raise ConfigError(
                    f"{where}.registrar: {self.registrar!r} is not a SIP URI"
                ) from None
        if self.register and not (self.uri or self.registrar):
            raise ConfigError(f"{where}.register needs uri or registrar")
        if self.min_se > self.session_expires:
            raise ConfigError(f"{where}.min_se must not exceed session_expires (RFC 4028 §4)")
        for key in ("tls_ca_file", "tls_client_cert", "tls_client_key"):
            path = getattr(self, key)
            if path and not Path(path).is_file():
                raise ConfigError(f"{where}.{key}: no such file {path!r}")
        if bool(self.tls_client_cert) != bool(self.tls_client_key):
            raise ConfigError(f"{where}: tls_client_cert and tls_client_key go together")
        if self.tls_server_name and not header_value_ok(self.tls_server_name):
            raise ConfigError(f"{where}.tls_server_name: expected a host name")


def load_trunks(tables: Mapping[str, Any]) -> dict[str, Trunk]:
    """Every `[trunks.NAME]` table, typed and checked, in file order."""
    return {name: Trunk.from_table(name, table) for name, table in tables.items()}

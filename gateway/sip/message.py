"""SIP messages (RFC 3261 §7, §20, §25): parse and serialise, with typed header accessors.

No I/O here. `parse()` takes one datagram (or one framed stream message) and returns a
`SipRequest` or `SipResponse`; `SipStreamParser` frames messages out of a TCP/TLS byte stream by
Content-Length (§18.3).

Exceptions::

    SipParseError            the only exception parse()/SipStreamParser raise for any input;
                             .status_hint is the status to answer (400, 413/513, 505 ...) and
                             .request is the partly parsed request when the start line and
                             headers were readable (so a 400 can still be routed by its Via).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from gateway.errors import SipParseError

DEFAULT_MAX_SIZE = 65536

# §7.3.3 compact forms (plus RFC 3515 r, RFC 3891/4028 x, RFC 3892 b, RFC 3265 o/u).
COMPACT_FORMS = {
    "i": "Call-ID",
    "v": "Via",
    "f": "From",
    "t": "To",
    "m": "Contact",
    "l": "Content-Length",
    "c": "Content-Type",
    "k": "Supported",
    "s": "Subject",
    "e": "Content-Encoding",
    "o": "Event",
    "u": "Allow-Events",
    "r": "Refer-To",
    "b": "Referred-By",
    "x": "Session-Expires",
    "a": "Accept-Contact",
    "j": "Reject-Contact",
    "d": "Request-Disposition",
    "y": "Identity",
}

_CANONICAL = {
    name.lower(): name
    for name in (
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Alert-Info",
        "Allow",
        "Allow-Events",
        "Authorization",
        "Call-ID",
        "Call-Info",
        "Contact",
        "Content-Disposition",
        "Content-Encoding",
        "Content-Language",
        "Content-Length",
        "Content-Type",
        "CSeq",
        "Date",
        "Event",
        "Expires",
        "From",
        "Max-Forwards",
        "Min-Expires",
        "Min-SE",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Require",
        "RAck",
        "Reason",
        "Record-Route",
        "Refer-To",
        "Referred-By",
        "Require",
        "Retry-After",
        "Route",
        "RSeq",
        "Server",
        "Session-Expires",
        "Subject",
        "Subscription-State",
        "Supported",
        "Timestamp",
        "To",
        "Unsupported",
        "User-Agent",
        "Via",
        "Warning",
        "WWW-Authenticate",
    )
}

# Headers whose values are comma-separated lists (§7.3.1); others keep commas (auth, Date ...).
_LIST_HEADERS = frozenset(
    {
        "via",
        "contact",
        "route",
        "record-route",
        "allow",
        "supported",
        "require",
        "proxy-require",
        "unsupported",
        "accept",
        "accept-encoding",
        "accept-language",
        "content-encoding",
        "allow-events",
        "alert-info",
        "call-info",
    }
)

_TOKEN = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
_METHOD = _TOKEN


def canonical_name(name: str) -> str:
    """The canonical spelling of a header name; compact forms expanded (§7.3.3)."""
    low = name.lower()
    if len(low) == 1 and low in COMPACT_FORMS:
        return COMPACT_FORMS[low]
    return _CANONICAL.get(low) or "-".join(p[:1].upper() + p[1:] for p in low.split("-"))


def split_list(value: str) -> list[str]:
    """Split a header value at top-level commas (not inside quotes or <...>)."""
    parts: list[str] = []
    depth = 0
    quoted = False
    escaped = False
    start = 0
    for i, ch in enumerate(value):
        if escaped:
            escaped = False
        elif quoted:
            if ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            parts.append(value[start:i].strip())
            start = i + 1
    parts.append(value[start:].strip())
    return [p for p in parts if p]


class Headers:
    """An ordered multi-map of header fields with case-insensitive, compact-aware names."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = [(canonical_name(n), v) for n, v in items]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = canonical_name(name).lower()
        return any(n.lower() == key for n, _ in self._items)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first field value of `name`, or `default`."""
        key = canonical_name(name).lower()
        for n, v in self._items:
            if n.lower() == key:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of `name`: repeated lines, and comma lists split for list headers."""
        key = canonical_name(name).lower()
        values = [v for n, v in self._items if n.lower() == key]
        if key in _LIST_HEADERS:
            return [part for v in values for part in split_list(v)]
        return values

    def add(self, name: str, value: str) -> None:
        self._items.append((canonical_name(name), value))

    def set(self, name: str, value: str) -> None:
        """Replace every field of `name` with one, at the first one's place (or the end)."""
        key = canonical_name(name).lower()
        out: list[tuple[str, str]] = []
        placed = False
        for n, v in self._items:
            if n.lower() == key:
                if not placed:
                    out.append((canonical_name(name), value))
                    placed = True
            else:
                out.append((n, v))
        if not placed:
            out.append((canonical_name(name), value))
        self._items = out

    def remove(self, name: str) -> None:
        key = canonical_name(name).lower()
        self._items = [(n, v) for n, v in self._items if n.lower() != key]

    def copy(self) -> Headers:
        h = Headers()
        h._items = list(self._items)
        return h

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)


# --- URIs and header values


def _parse_params(text: str, what: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for raw in text.split(";"):
        part = raw.strip()
        if not part:
            continue
        name, eq, value = part.partition("=")
        name = name.strip().lower()
        if not name or not _TOKEN.match(name):
            raise SipParseError(f"bad {what} parameter")
        params[name] = value.strip().strip('"') if eq else None
    return params


def _format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


@dataclass(frozen=True, slots=True)
class SipUri:
    """A sip:/sips: URI (§19.1): user, host (IPv6 without brackets), port, params, headers."""

    scheme: str
    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> SipUri:
        text = text.strip()
        scheme, colon, rest = text.partition(":")
        scheme = scheme.lower()
        if not colon or scheme not in ("sip", "sips"):
            raise SipParseError("not a SIP URI")
        # §19.1.1/§25.1: the user part may hold "?", ";" and "/"; "@" (unescaped) only ends it
        userinfo, at, hostpart = rest.partition("@")
        if not at:
            userinfo, hostpart = "", rest
        hostpart, _, hdrs = hostpart.partition("?")
        user: str | None = None
        password: str | None = None
        if at:
            user, _, pw = userinfo.partition(":")
            password = pw or None
            if not user:
                raise SipParseError("empty user in URI")
        hostport, _, paramtext = hostpart.partition(";")
        host, port = _split_hostport(hostport)
        headers: dict[str, str] = {}
        if hdrs:
            for item in hdrs.split("&"):
                k, _, v = item.partition("=")
                headers[k] = v
        return cls(scheme, host, user, password, port, _parse_params(paramtext, "URI"), headers)

    def __str__(self) -> str:
        out = f"{self.scheme}:"
        if self.user is not None:
            out += self.user + (f":{self.password}" if self.password else "") + "@"
        out += f"[{self.host}]" if ":" in self.host else self.host
        if self.port is not None:
            out += f":{self.port}"
        out += _format_params(self.params)
        if self.headers:
            out += "?" + "&".join(f"{k}={v}" for k, v in self.headers.items())
        return out

    @property
    def transport(self) -> str:
        t = self.params.get("transport")
        return (t or ("tls" if self.scheme == "sips" else "udp")).lower()


_HOST_RE = re.compile(r"^[A-Za-z0-9.\-_]+$")


def _split_hostport(text: str) -> tuple[str, int | None]:
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError("bad IPv6 reference")
        host, rest = text[1:end], text[end + 1 :]
        if not host or not all(c in "0123456789abcdefABCDEF:." for c in host):
            raise SipParseError("bad IPv6 reference")
        if rest and not rest.startswith(":"):
            raise SipParseError("bad host:port")
        port_text = rest[1:] if rest else ""
    else:
        host, _, port_text = text.partition(":")
        if not host or not _HOST_RE.match(host):
            raise SipParseError("bad host")
    port: int | None = None
    if port_text:
        if not port_text.isascii() or not port_text.isdecimal() or not 0 < int(port_text) < 65536:
            raise SipParseError("bad port")
        port = int(port_text)
    return host.lower(), port


# telephone-subscriber (RFC 3966 §3): global-number-digits ("+" and digits) or local-number-digits
# (hex digits, "*", "#"), both with visual separators ("-", ".", "(", ")")
_TEL_NUMBER = re.compile(
    r"^(\+[0-9\-.()]*[0-9][0-9\-.()]*|[0-9A-Fa-f*#\-.()]*[0-9A-Fa-f*#][0-9A-Fa-f*#\-.()]*)\Z"
)
_VISUAL_SEPARATORS = str.maketrans("", "", "-.()")
# absoluteURI (§25.1, RFC 3986 §3): scheme ":" then URI characters (no space, quote or <>)
_ABSOLUTE_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+\-.]*):([\x21-\x7e]+)\Z")


@dataclass(frozen=True, slots=True)
class AbsoluteUri:
    """A URI of another scheme than sip/sips (§19.1.6, §25.1 absoluteURI), kept as its text:
    tel: (RFC 3966) from carriers, urn:, mailto: ... For tel: the number and its parameters
    are parsed too; `user` is the number without visual separators (what a SipUri's user is)."""

    scheme: str
    text: str
    number: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> AbsoluteUri:
        text = text.strip()
        match = _ABSOLUTE_URI.match(text)
        if match is None or any(c in text for c in '<>"'):
            raise SipParseError("bad URI")
        scheme, rest = match.group(1).lower(), match.group(2)
        if scheme in ("sip", "sips"):
            raise SipParseError("a SIP URI")  # parse_uri() parses those
        if scheme != "tel":
            return cls(scheme, text)
        number, _, paramtext = rest.partition(";")
        if not _TEL_NUMBER.match(number):
            raise SipParseError("bad tel: number")
        return cls(scheme, text, number, _parse_params(paramtext, "tel URI"))

    @property
    def user(self) -> str | None:
        """A tel: URI's number without visual separators (RFC 3966 §5.1.1); else None."""
        return self.number.translate(_VISUAL_SEPARATORS) if self.number is not None else None

    def __str__(self) -> str:
        return self.text


Uri = SipUri | AbsoluteUri


def parse_uri(text: str) -> Uri:
    """A SIP/SIPS URI as a SipUri, any other absolute URI as an AbsoluteUri (§25.1)."""
    if text.strip()[:4].lower() in ("sip:", "sips"):
        return SipUri.parse(text)
    return AbsoluteUri.parse(text)


UriT = TypeVar("UriT", SipUri, Uri)


@dataclass(frozen=True, slots=True)
class NameAddr(Generic[UriT]):
    """`"Display" <uri>;params` or `uri;params` (§20.10, §20.20, §20.39).

    `parse()` takes SIP/SIPS URIs only (Contact, Route, Record-Route: §8.1.1.8, §16.12);
    `parse_any()` any absolute URI (From, To, P-Asserted-Identity, Diversion: §20.20, §20.39
    allow one, and carriers send tel: there)."""

    uri: UriT
    display: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    raw_uri: str = ""

    @staticmethod
    def parse(text: str) -> NameAddr[SipUri]:
        display, uri_text, params = _split_address(text)
        return NameAddr(SipUri.parse(uri_text), display, params, uri_text)

    @staticmethod
    def parse_any(text: str) -> NameAddr[Uri]:
        display, uri_text, params = _split_address(text)
        return NameAddr(parse_uri(uri_text), display, params, uri_text)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def with_tag(self, tag: str) -> NameAddr[UriT]:
        return NameAddr(self.uri, self.display, {**self.params, "tag": tag}, self.raw_uri)

    def __str__(self) -> str:
        disp = ""
        if self.display:
            disp = '"' + _QUOTE_PAIRS.sub(r"\\\g<0>", self.display) + '" '
        return f"{disp}<{self.uri}>{_format_params(self.params)}"


def _split_address(text: str) -> tuple[str | None, str, dict[str, str | None]]:
    """(display name, URI text, header params) of a name-addr or addr-spec (§20.10)."""
    text = text.strip()
    display: str | None = None
    if "<" in text:
        lt = _find_unquoted(text, "<")
        gt = text.find(">", lt)
        if lt < 0 or gt < 0:
            raise SipParseError("unbalanced <> in address")
        display = _display_name(text[:lt])
        uri_text = text[lt + 1 : gt]
        paramtext = text[gt + 1 :].strip()
        if paramtext and not paramtext.startswith(";"):
            raise SipParseError("junk after address")
    else:
        # addr-spec: URI params become header params (§20.10)
        uri_text, _, paramtext = text.partition(";")
    return display, uri_text, _parse_params(paramtext, "address")


# characters a quoted-string carries only as a quoted-pair (§25.1: not qdtext)
_QUOTE_PAIRS = re.compile(r'["\\\x00-\x08\x0b\x0c\x0e-\x1f\x7f]')


def _display_name(text: str) -> str | None:
    """The display name before `<`: a quoted-string unquoted (quoted-pairs resolved, §25.1), or
    the tokens as they are. Anything after the closing quote is ignored."""
    text = text.strip()
    if not text.startswith('"'):
        return text or None
    out: list[str] = []
    i = 1
    while i < len(text) and text[i] != '"':
        if text[i] == "\\" and i + 1 < len(text):
            i += 1
        out.append(text[i])
        i += 1
    return "".join(out) or None


def _find_unquoted(text: str, ch: str) -> int:
    """The index of `ch` outside quoted strings (whose quoted-pairs may escape a quote), or -1."""
    quoted = escaped = False
    for i, c in enumerate(text):
        if escaped:
            escaped = False
        elif quoted:
            if c == "\\":
                escaped = True
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == ch:
            return i
    return -1


# sent-protocol (§25.1): protocol-name SLASH protocol-version SLASH transport, SLASH = SWS "/" SWS
_SENT_PROTOCOL = re.compile(r"\s*([^\s/]+)\s*/\s*([^\s/]+)\s*/\s*([^\s/;]+)(.*)\Z", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Via:
    """One Via value (§20.42, RFC 3581): transport, sent-by host/port, params."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Via:
        match = _SENT_PROTOCOL.match(text)
        if match is None:
            raise SipParseError("bad Via protocol")
        name, version, transport, rest = match.groups()
        if name.upper() != "SIP" or version != "2.0" or (rest and not rest[0].isspace()):
            raise SipParseError("bad Via protocol")
        sent_by, _, paramtext = rest.strip().partition(";")
        host, port = _split_hostport(sent_by)
        return cls(transport.upper(), host, port, _parse_params(paramtext, "Via"))

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def rport(self) -> int | None:
        value = self.params.get("rport")
        return int(value) if value and value.isdecimal() and value.isascii() else None

    @property
    def sent_by(self) -> tuple[str, int]:
        default = 5061 if self.transport == "TLS" else 5060
        return self.host, self.port or default

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port else ""
        return f"SIP/2.0/{self.transport} {host}{port}{_format_params(self.params)}"


@dataclass(frozen=True, slots=True)
class CSeq:
    seq: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        num, _, method = text.strip().partition(" ")
        method = method.strip()
        if not num.isascii() or not num.isdecimal() or len(num) > 10 or int(num) >= 2**31:
            raise SipParseError("bad CSeq number")
        if not _METHOD.match(method):
            raise SipParseError("bad CSeq method")
        return cls(int(num), method)

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


# --- messages


class _Message:
    """Shared accessors. Fields validated at parse time, so these do not raise on parsed input."""

    headers: Headers
    body: bytes

    @property
    def call_id(self) -> str:
        return self.headers.get("Call-ID") or ""

    @property
    def cseq(self) -> CSeq:
        return CSeq.parse(self.headers.get("CSeq") or "")

    @property
    def from_(self) -> NameAddr[Uri]:
        return NameAddr.parse_any(self.headers.get("From") or "")

    @property
    def to(self) -> NameAddr[Uri]:
        return NameAddr.parse_any(self.headers.get("To") or "")

    @property
    def vias(self) -> list[Via]:
        return [Via.parse(v) for v in self.headers.get_all("Via")]

    @property
    def top_via(self) -> Via:
        return Via.parse(self.headers.get_all("Via")[0])

    @property
    def contacts(self) -> list[NameAddr[SipUri]]:
        return [NameAddr.parse(v) for v in self.headers.get_all("Contact") if v != "*"]

    @property
    def record_routes(self) -> list[NameAddr[SipUri]]:
        return [NameAddr.parse(v) for v in self.headers.get_all("Record-Route")]

    @property
    def routes(self) -> list[NameAddr[SipUri]]:
        return [NameAddr.parse(v) for v in self.headers.get_all("Route")]

    @property
    def max_forwards(self) -> int | None:
        value = self.headers.get("Max-Forwards")
        return int(value) if value is not None and value.isdecimal() else None

    @property
    def content_type(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()

    def _serialize(self, start: str) -> bytes:
        lines = [start]
        for name, value in self.headers:
            if name != "Content-Length":
                lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body

    def __bytes__(self) -> bytes:
        return self.serialize()

    def serialize(self) -> bytes:
        raise NotImplementedError


@dataclass(slots=True)
class SipRequest(_Message):
    """A request (§7.1). `uri` is the Request-URI text (validated as a SIP URI when sip/sips)."""

    method: str
    uri: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    def serialize(self) -> bytes:
        return self._serialize(f"{self.method} {self.uri} SIP/2.0")

    @property
    def request_uri(self) -> SipUri:
        return SipUri.parse(self.uri)


@dataclass(slots=True)
class SipResponse(_Message):
    """A response (§7.2)."""

    status: int
    reason: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    def serialize(self) -> bytes:
        return self._serialize(f"SIP/2.0 {self.status} {self.reason}")


SipMessage = SipRequest | SipResponse


_BARE_NUL = re.compile(r"(?<!\\)\x00")  # a NUL that is not a quoted-pair


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        return data[:end], data[end + 4 :]
    end = data.find(b"\n\n")  # bare LF, tolerated (§7.5 allows recipients to be lenient)
    if end >= 0:
        return data[:end], data[end + 2 :]
    raise SipParseError("no end of headers")


def _decode_head(head: bytes) -> str:
    """The header section as text. §7.3.1/§25.1 say UTF-8, but carriers and old PBXs send
    display names in Latin-1: a line that is not UTF-8 is read as Latin-1 (every byte is a
    character there), so the name reaches the call as text and the message is answered."""
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError:
        lines = head.split(b"\n")
        return "\n".join(_decode_line(line) for line in lines)


def _decode_line(line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return line.decode("latin-1")


def _unfold(head: str) -> list[str]:
    lines: list[str] = []
    for raw in re.split(r"\r?\n", head):
        if raw[:1] in (" ", "\t"):
            if not lines:
                raise SipParseError("continuation line before any header")
            lines[-1] = lines[-1].rstrip() + " " + raw.strip()  # §7.3.1 folding
        else:
            lines.append(raw)
    return lines


def _parse_start(line: str) -> SipRequest | SipResponse:
    if line.startswith("SIP/"):
        parts = line.split(" ", 2)
        if parts[0] != "SIP/2.0":
            raise SipParseError("SIP version not supported", 505)
        if (
            len(parts) < 2
            or len(parts[1]) != 3
            or not (parts[1].isascii() and parts[1].isdecimal())
        ):
            raise SipParseError("bad status line")
        status = int(parts[1])
        if not 100 <= status <= 699:
            raise SipParseError("bad status code")
        return SipResponse(status, parts[2] if len(parts) > 2 else "")
    parts = line.split(" ")
    if len(parts) != 3:
        raise SipParseError("bad request line")
    method, uri, version = parts
    if not _METHOD.match(method):
        raise SipParseError("bad method")
    if version.upper() != "SIP/2.0":
        raise SipParseError("SIP version not supported", 505)
    if not uri or not _SCHEME.match(uri):
        raise SipParseError("bad Request-URI")
    if uri.split(":", 1)[0].lower() in ("sip", "sips"):
        try:
            SipUri.parse(uri)
        except SipParseError:
            raise SipParseError("bad Request-URI") from None
    return SipRequest(method, uri)


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*:")  # absoluteURI = scheme ":" ... (§25.1)
_MANDATORY = ("Via", "From", "To", "Call-ID", "CSeq")


def _validate(msg: SipMessage) -> None:
    for name in _MANDATORY:
        if msg.headers.get(name) is None:
            raise SipParseError(f"missing {name}")
    try:
        vias = msg.vias
    except SipParseError as exc:
        raise SipParseError("bad Via: " + exc.reason) from None
    if not vias:
        raise SipParseError("missing Via")
    for name in ("From", "To"):
        values = msg.headers.get_all(name)
        if len(values) != 1:
            raise SipParseError(f"duplicate {name}")
        try:
            NameAddr.parse_any(values[0])  # any absolute URI (§20.20, §20.39): tel: too
        except SipParseError as exc:
            raise SipParseError(f"bad {name}: {exc.reason}") from None
    names = [name for name, _ in msg.headers]  # canonical spellings
    for name in ("Call-ID", "CSeq"):
        if names.count(name) != 1:
            raise SipParseError(f"duplicate {name}")
    if not msg.call_id.strip() or " " in msg.call_id.strip():
        raise SipParseError("bad Call-ID")
    cseq = CSeq.parse(msg.headers.get("CSeq") or "")
    if isinstance(msg, SipRequest) and cseq.method != msg.method:
        raise SipParseError("CSeq method does not match")
    mf = msg.headers.get("Max-Forwards")
    if mf is not None and (
        not mf.isascii() or not mf.isdecimal() or len(mf.lstrip("0")) > 3 or int(mf) > 255
    ):
        raise SipParseError("bad Max-Forwards")
    for name in ("Contact", "Record-Route", "Route"):  # SIP/SIPS only (§8.1.1.8, §16.12)
        for value in msg.headers.get_all(name):
            if name == "Contact" and value == "*":
                continue
            try:
                NameAddr.parse(value)
            except SipParseError as exc:
                if isinstance(_parse_any_or_none(value), NameAddr):
                    raise SipParseError(f"bad {name}: not a SIP or SIPS URI") from None
                raise SipParseError(f"bad {name}: {exc.reason}") from None


def _parse_any_or_none(text: str) -> NameAddr[Uri] | None:
    """`NameAddr.parse_any(text)`, or None where it does not parse."""
    try:
        return NameAddr.parse_any(text)
    except SipParseError:
        return None


def _content_length(headers: Headers) -> int | None:
    values = headers.get_all("Content-Length")
    if not values:
        return None
    if len(set(v.strip() for v in values)) != 1:
        raise SipParseError("conflicting Content-Length")
    text = values[0].strip()
    if not text.isascii() or not text.isdecimal() or len(text) > 9:
        raise SipParseError("bad Content-Length")
    return int(text)


def parse(
    data: bytes, *, max_size: int = DEFAULT_MAX_SIZE, stream: bool = False
) -> SipRequest | SipResponse:
    """Parse one message. Datagram rules by default (§18.3): a body shorter than Content-Length
    is an error, a longer one is truncated, no Content-Length means the rest of the datagram.
    With `stream=True` Content-Length must be present and exact (the stream parser framed it)."""
    if len(data) > max_size:
        raise SipParseError("Message Too Large", 513)
    data = data.lstrip(b"\r\n")  # §7.5 leading CRLFs are ignored
    head_bytes, body = _split_head(data)
    head = _decode_head(head_bytes)
    header_error: str | None = None
    if "\x00" in head and _BARE_NUL.search(head):
        header_error = "NUL in headers"
        head = _BARE_NUL.sub("", head)
    lines = _unfold(head)
    start_error: SipParseError | None = None
    try:
        msg = _parse_start(lines[0].strip())
    except SipParseError as exc:
        parts = lines[0].split()
        if len(parts) < 3 or not _METHOD.match(parts[0]) or not parts[-1].startswith("SIP/"):
            raise
        # a request line that is wrong but recognisable (505 for the version, §8.2.2; 400 for
        # extra spaces or a bad Request-URI, RFC 4475 §3.1.2.7-9): answered if the headers are
        # readable enough to route a response
        msg, start_error = SipRequest(parts[0], parts[1]), exc
    items: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or not name or not _TOKEN.match(name):
            # skipped, so that the request can still be answered by its Via, Call-ID, CSeq
            header_error = header_error or "bad header line"
            continue
        items.append((name, value.strip()))
    msg.headers = Headers(items)
    partial = msg if isinstance(msg, SipRequest) else None
    if start_error is not None:
        raise SipParseError(start_error.reason, start_error.status_hint, partial)
    if header_error is not None:
        raise SipParseError(header_error, 400, partial)
    try:
        length = _content_length(msg.headers)
        if length is None:
            if stream:
                raise SipParseError("missing Content-Length")
        elif len(body) < length:
            raise SipParseError("body shorter than Content-Length")
        elif len(body) > length:
            if stream:
                raise SipParseError("body longer than Content-Length")
            body = body[:length]  # §18.3: extra bytes after the body are discarded
        _validate(msg)
    except SipParseError as exc:
        raise SipParseError(exc.reason, exc.status_hint, partial) from None
    msg.body = body
    return msg


class SipStreamParser:
    """Frames SIP messages out of a stream transport (TCP/TLS) by Content-Length (§18.3).

    `feed(data)` returns the complete messages so far. A SipParseError means the stream is
    unusable (no Content-Length, oversize, garbage): close the connection. CRLF keep-alives
    (RFC 5626 §3.5.1) are skipped.
    """

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self.max_size = max_size
        self._buffer = bytearray()
        self.keepalives = 0

    def feed(self, data: bytes) -> list[SipMessage]:
        self._buffer += data
        out: list[SipMessage] = []
        while True:
            stripped = self._buffer.lstrip(b"\r\n")
            if len(stripped) != len(self._buffer):
                self.keepalives += 1
                self._buffer = bytearray(stripped)
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > self.max_size:
                    raise SipParseError("Message Too Large", 513)
                return out
            head = bytes(self._buffer[:end])
            length = self._frame_length(head)
            total = end + 4 + length
            if total > self.max_size:
                raise SipParseError("Message Too Large", 513)
            if len(self._buffer) < total:
                return out
            frame = bytes(self._buffer[:total])
            del self._buffer[:total]
            out.append(parse(frame, max_size=self.max_size, stream=True))

    @staticmethod
    def _frame_length(head: bytes) -> int:
        found: int | None = None
        for line in head.split(b"\r\n")[1:]:
            name, colon, value = line.partition(b":")
            if colon and name.strip().lower() in (b"content-length", b"l"):
                text = value.strip()
                if not text.isdigit() or len(text) > 9:  # bytes: ASCII digits only
                    raise SipParseError("bad Content-Length")
                found = int(text)
        if found is None:
            raise SipParseError("missing Content-Length")
        return found


# --- bodies

_MAX_BODY_DEPTH = 3  # multipart within multipart (RFC 5621 §3.1): bounded


def session_body(message: SipRequest | SipResponse) -> bytes | None:
    """The SDP of a message: its body when that is application/sdp; the application/sdp part
    of a multipart body (RFC 5621, e.g. SIP-I's SDP + ISUP: the boundary from Content-Type,
    other parts skipped); None when there is none.

    Raises SipParseError: a multipart body that does not parse (400), or a part we do not use
    marked `handling=required` (415; RFC 5621 §9.1, RFC 3261 §20.11)."""
    if not message.body:
        return None
    return _sdp_of_body(message.headers.get("Content-Type") or "", message.body, 0)


def _sdp_of_body(content_type: str, body: bytes, depth: int) -> bytes | None:
    ctype, _, paramtext = content_type.partition(";")
    ctype = ctype.strip().lower()
    if ctype == "application/sdp":
        return body
    if not ctype.startswith("multipart/") or depth >= _MAX_BODY_DEPTH:
        return None
    try:
        boundary = _parse_params(paramtext, "Content-Type").get("boundary")
    except SipParseError:
        boundary = None
    if not boundary:
        raise SipParseError("multipart body without a boundary")
    found: bytes | None = None
    for headers, content in _multipart_parts(body, boundary.encode("latin-1")):
        part_type = headers.get("Content-Type") or "text/plain"  # RFC 2046 §5.1: the default
        sdp = _sdp_of_body(part_type, content, depth + 1)
        if sdp is not None:
            found = found if found is not None else sdp
            continue
        disposition = headers.get("Content-Disposition") or ""
        handling = _parse_params(disposition.partition(";")[2], "Content-Disposition")
        if (handling.get("handling") or "").lower() == "required":
            name = part_type.partition(";")[0].strip()
            raise SipParseError(f"required body part {name} not supported", 415)
    return found


def _multipart_parts(body: bytes, boundary: bytes) -> list[tuple[Headers, bytes]]:
    """The parts of a multipart body (RFC 2046 §5.1.1): (headers, content) each; the preamble
    and epilogue are skipped."""
    delimiter = re.compile(rb"(?:\A|\r?\n)--" + re.escape(boundary) + rb"(--)?[ \t]*(?:\r?\n|\Z)")
    matches = list(delimiter.finditer(body))
    if not matches or matches[0].group(1):
        raise SipParseError("multipart body without its boundary")
    parts: list[tuple[Headers, bytes]] = []
    for i, this in enumerate(matches):
        if this.group(1):
            break  # the close delimiter: the epilogue follows
        if i + 1 == len(matches):
            raise SipParseError("multipart body not closed")
        raw = body[this.end() : matches[i + 1].start()]
        head, sep, content = raw.partition(b"\r\n\r\n")
        if not sep:
            if raw.startswith(b"\r\n"):  # no part headers
                head, content = b"", raw[2:]
            else:
                head, content = raw, b""
        items = []
        for line in _unfold(head.decode("latin-1")):
            name, colon, value = line.partition(":")
            if colon and _TOKEN.match(name.strip()):
                items.append((name.strip(), value.strip()))
        parts.append((Headers(items), content))
    return parts


def make_response(
    request: SipRequest,
    status: int,
    reason: str,
    *,
    to_tag: str | None = None,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
) -> SipResponse:
    """A response to `request` (§8.2.6): Via, From, To (+tag), Call-ID and CSeq copied."""
    out = Headers()
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        for name2, value in request.headers:
            if name2 == name:
                if name == "To" and to_tag and "tag=" not in value.lower():
                    value = f"{value};tag={to_tag}"
                out.add(name, value)
    for name, value in headers:
        out.add(name, value)
    return SipResponse(status, reason, out, body)


REASONS = {
    100: "Trying",
    180: "Ringing",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    422: "Session Interval Too Small",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "Version Not Supported",
    513: "Message Too Large",
    603: "Decline",
}

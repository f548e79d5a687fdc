"""SDP (RFC 4566) and the offer/answer model (RFC 3264) for one audio stream.

No I/O. `SessionDescription.parse()`/`serialize()` handle the lines we need and keep the rest;
`describe()` reads an offer or answer into `RemoteMedia` under a `MediaPolicy` (our codecs in
order of preference, the packet time); `negotiate()` answers an offer with one codec plus
telephone-event (RFC 4733); `make_offer()` builds our offer (late offer, re-INVITE, outbound).
The codecs we can name are in `CODECS`; a policy lists the ones a call may use.
An offer's comfort noise (RFC 3389, CN at the chosen codec's clock) is answered, so we receive
it; our offers list CN/8000 only with `MediaPolicy.comfort_noise`. a=rtcp-mux (RFC 5761) is
answered when offered, and every offer of ours has it (port+1 stays the RTCP fallback).

Plain RTP (RTP/AVP, and RTP/AVPF, which is AVP plus feedback rules) and SDES-SRTP (RTP/SAVP
and RTP/SAVPF keyed by `a=crypto`, RFC 4568) are answered, as the policy's `srtp` mode says:
`off` answers plain RTP only, `optional` prefers an SRTP line with a crypto suite of ours and
else answers in the clear, `mandatory` answers SRTP only. DTLS-SRTP (UDP/TLS/RTP/SAVP(F)) is
never answered. A line not answered gets port 0 when another one is (RFC 3264 §6), else 488.
The chosen crypto line is in `RemoteMedia.crypto`; our key for it (one `a=crypto` in the answer,
with the offer's tag, RFC 4568 §7.1.1) in `RemoteMedia.local_crypto`.

Exceptions::

    SdpError                     malformed SDP (answer 400)
     └── NotAcceptable           no common codec / no audio stream (answer 488, RFC 3264 §6)
          ├── EncryptedMediaOnly only SRTP audio we cannot answer offered (488; Warning 302)
          └── SrtpRequired       srtp = mandatory and no SDES-SRTP line we can answer (488; 302)
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, replace
from typing import Literal

from gateway.errors import EncryptedMediaOnly, NotAcceptable, SdpError, SrtpRequired
from gateway.media.format import PTIME_MAX_MS, PTIME_MIN_MS
from gateway.rtp.srtp import SUITES, CryptoAttribute

Direction = Literal["sendrecv", "sendonly", "recvonly", "inactive"]
DIRECTIONS: tuple[Direction, ...] = ("sendrecv", "sendonly", "recvonly", "inactive")
Codec = str  # a key of CODECS
SrtpMode = Literal["off", "optional", "mandatory"]
Address = tuple[str, int]

# RFC 3264 §6.1: the answer's direction given the offer's.
_ANSWER_DIRECTION: dict[Direction, Direction] = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}


@dataclass(frozen=True, slots=True)
class SdpCodec:
    """How a codec is named in SDP: rtpmap encoding and clock rate (RFC 4566 §6), its static
    payload type (RFC 3551 table 4) or the dynamic one we offer, channels and our fmtp."""

    name: Codec
    encoding: str
    clock_rate: int
    payload_type: int
    channels: int = 1
    fmtp: str | None = None

    @property
    def static(self) -> bool:
        return self.payload_type < 96

    @property
    def rtpmap(self) -> str:
        suffix = f"/{self.channels}" if self.channels != 1 else ""
        return f"{self.payload_type} {self.encoding}/{self.clock_rate}{suffix}"


#: every codec we can name, by our name. G.722's SDP rate is 8000 though it samples at 16 kHz
#: (RFC 3551 §4.5.2). Opus is always `opus/48000/2` (RFC 7587 §7); our fmtp: we play and capture
#: at most 24 kHz (the model's rate), and `useinbandfec=1`: a lost packet is rebuilt from the
#: FEC in the next one when it has arrived (gateway/media/wideband.py), else concealed (PLC).
CODECS: dict[Codec, SdpCodec] = {
    "g722": SdpCodec("g722", "G722", 8000, 9),
    "opus": SdpCodec(
        "opus",
        "opus",
        48000,
        111,
        2,
        "maxplaybackrate=24000;sprop-maxcapturerate=24000;useinbandfec=1",
    ),
    "pcmu": SdpCodec("pcmu", "PCMU", 8000, 0),
    "pcma": SdpCodec("pcma", "PCMA", 8000, 8),
}
#: the audio clocks telephone-event is offered at (RFC 4733 §7.1.1: the event's clock should be
#: the audio's), with the dynamic payload type of each; 8000's is the `dtmf_pt` passed in.
#: G.722 brings 16000 too: peers that clock its events at the audio rate are common.
DTMF_CLOCKS: dict[Codec, tuple[int, ...]] = {
    "pcmu": (8000,),
    "pcma": (8000,),
    "g722": (8000, 16000),
    "opus": (48000,),
}
DTMF_PAYLOAD_TYPES: dict[int, int] = {8000: 101, 16000: 102, 48000: 103}
_STATIC = {c.payload_type: c.name for c in CODECS.values() if c.static}
#: comfort noise's static payload type (RFC 3551 table 4, RFC 3389 §5)
CN_PAYLOAD_TYPE = 13


@dataclass(frozen=True, slots=True)
class MediaPolicy:
    """What a call's media may be: our codecs in order of preference, the packet time we send
    in when the peer names none, and SRTP: `off` refuses it, `optional` answers SRTP offers with
    SRTP and plain ones in the clear, `mandatory` refuses plain RTP and offers SRTP."""

    codecs: tuple[Codec, ...] = ("g722", "opus", "pcmu", "pcma")
    ptime: int = 20
    srtp: SrtpMode = "optional"
    # CN and rtcp-mux: offer CN/8000 and send comfort noise (RFC 3389); received CN is always
    # rendered when the offer lists it
    comfort_noise: bool = False

    def __post_init__(self) -> None:
        unknown = [c for c in self.codecs if c not in CODECS]
        if unknown or not self.codecs:
            raise ValueError(f"codecs {list(self.codecs)}: each one of {', '.join(CODECS)}")

    def preferring(self, codec: Codec) -> MediaPolicy:
        """The same policy with `codec` first (a re-INVITE keeps the codec in use)."""
        if codec not in self.codecs:
            return self
        return replace(self, codecs=(codec, *(c for c in self.codecs if c != codec)))


DEFAULT_MEDIA = MediaPolicy()


#: the m= protos we answer: RTP (RFC 3551) and RTP with feedback (RFC 4585, compatible with AVP)
PLAIN_RTP: frozenset[str] = frozenset({"RTP/AVP", "RTP/AVPF"})
#: the m= protos of SDES-SRTP (RFC 3711 profiles keyed by a=crypto, RFC 4568; RFC 5124 feedback)
SDES_RTP: frozenset[str] = frozenset({"RTP/SAVP", "RTP/SAVPF"})
SRTP_MODES: tuple[SrtpMode, ...] = ("off", "optional", "mandatory")


def is_encrypted(proto: str) -> bool:
    """An SRTP profile: RTP/SAVP (RFC 3711, SDES a=crypto RFC 4568), RTP/SAVPF (RFC 5124),
    UDP/TLS/RTP/SAVP(F) (DTLS-SRTP, RFC 5764), TCP/... variants."""
    return "SAVP" in proto.upper()


@dataclass(slots=True)
class MediaDescription:
    """One m= section with its own c= and a= lines (RFC 4566 §5.14)."""

    media: str
    port: int
    proto: str
    formats: list[str]
    connection: str | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    bandwidth: list[str] = field(default_factory=list)

    def attribute(self, name: str) -> str | None:
        for key, value in self.attributes:
            if key == name:
                return value if value is not None else ""
        return None

    def rtpmaps(self) -> dict[int, tuple[str, int]]:
        """Payload type → (encoding name lower-cased, clock rate) from a=rtpmap."""
        out: dict[int, tuple[str, int]] = {}
        for key, value in self.attributes:
            if key == "rtpmap" and value:
                m = re.match(r"^(\d+)\s+([^/\s]+)/(\d+)", value)
                if m:
                    out[int(m.group(1))] = (m.group(2).lower(), int(m.group(3)))
        return out

    @property
    def direction(self) -> Direction | None:
        for key, _ in self.attributes:
            if key in DIRECTIONS:
                return key
        return None


@dataclass(slots=True)
class SessionDescription:
    """A session description: o=, s=, c=, t=, session attributes and media sections."""

    origin_user: str = "-"
    session_id: int = 0
    session_version: int = 0
    origin_address: str = "0.0.0.0"
    session_name: str = "-"
    connection: str | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    other: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, data: bytes | str) -> SessionDescription:
        try:
            text = data.decode("utf-8") if isinstance(data, bytes) else data
        except UnicodeDecodeError:
            raise SdpError("SDP not UTF-8") from None
        sd = cls()
        current: MediaDescription | None = None
        seen_v = False
        for raw in re.split(r"\r?\n", text):
            line = raw.rstrip()
            if not line:
                continue
            if len(line) < 2 or line[1] != "=":
                raise SdpError(f"bad SDP line {line[:20]!r}")
            kind, value = line[0], line[2:]
            if kind == "v":
                if value.strip() != "0":
                    raise SdpError("SDP version not 0")
                seen_v = True
            elif kind == "o":
                parts = value.split()
                if len(parts) != 6 or not parts[1].isdecimal() or not parts[2].isdecimal():
                    raise SdpError("bad o= line")
                sd.origin_user, sd.origin_address = parts[0], parts[5]
                sd.session_id, sd.session_version = int(parts[1]), int(parts[2])
            elif kind == "s" and current is None:
                sd.session_name = value or "-"
            elif kind == "c":
                addr = _parse_connection(value)
                if current is None:
                    sd.connection = addr
                else:
                    current.connection = addr
            elif kind == "m":
                parts = value.split()
                if len(parts) < 3:
                    raise SdpError("bad m= line")
                port_text = parts[1].split("/")[0]
                if not port_text.isdecimal() or int(port_text) > 65535:
                    raise SdpError("bad m= port")
                current = MediaDescription(parts[0], int(port_text), parts[2], parts[3:])
                sd.media.append(current)
            elif kind == "a":
                name, colon, val = value.partition(":")
                attr = (name.strip(), val.strip() if colon else None)
                (current.attributes if current else sd.attributes).append(attr)
            elif kind == "b" and current is not None:
                current.bandwidth.append(value)
            elif current is None:
                sd.other.append(line)
        if not seen_v:
            raise SdpError("SDP without v=0")
        return sd

    def serialize(self) -> bytes:
        addr = self.connection or self.origin_address
        lines = [
            "v=0",
            f"o={self.origin_user} {self.session_id} {self.session_version} "
            f"IN {_addrtype(self.origin_address)} {self.origin_address}",
            f"s={self.session_name}",
        ]
        if self.connection is not None:
            lines.append(f"c=IN {_addrtype(addr)} {addr}")
        lines.append("t=0 0")
        lines += [f"a={k}" if v is None else f"a={k}:{v}" for k, v in self.attributes]
        for m in self.media:
            lines.append(f"m={m.media} {m.port} {m.proto} {' '.join(m.formats)}")
            if m.connection is not None:
                lines.append(f"c=IN {_addrtype(m.connection)} {m.connection}")
            lines += [f"b={b}" for b in m.bandwidth]
            lines += [f"a={k}" if v is None else f"a={k}:{v}" for k, v in m.attributes]
        return ("\r\n".join(lines) + "\r\n").encode()

    __bytes__ = serialize

    def audio(self) -> MediaDescription | None:
        """The first RTP audio stream we can carry (RTP/AVP(F), or SDES-SRTP RTP/SAVP(F)) with
        a non-zero port, or None. Which line of an offer is answered is `describe()`'s choice."""
        for m in self.media:
            if m.media == "audio" and m.port != 0 and m.proto.upper() in PLAIN_RTP | SDES_RTP:
                return m
        return None

    @property
    def direction(self) -> Direction:
        for key, _ in self.attributes:
            if key in DIRECTIONS:
                return key
        return "sendrecv"


def _parse_connection(value: str) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError("bad c= line")
    return parts[2].split("/")[0]


def _addrtype(addr: str) -> str:
    return "IP6" if ":" in addr else "IP4"


@dataclass(frozen=True, slots=True)
class RemoteMedia:
    """The far end's audio stream as an offer or answer describes it, with the codec chosen."""

    codec: Codec
    payload_type: int
    dtmf_payload_type: int | None
    ptime: int
    remote_rtp: Address
    remote_rtcp: Address
    direction: Direction  # the remote side's direction
    # --- SRTP (issue 16): the far end's chosen a=crypto line (its key: what it sends), and ours
    # for it (our answer's line, or the line of our offer its tag names); None: plain RTP
    crypto: CryptoAttribute | None = None
    local_crypto: CryptoAttribute | None = None
    # wideband codecs (issue 16): the telephone-event's clock (RFC 4733), the codec's fmtp
    dtmf_clock_rate: int = 8000
    fmtp: str | None = None
    # CN and rtcp-mux
    cn_payload_type: int | None = None  # RFC 3389 CN at the codec's clock, if listed
    rtcp_mux: bool = False  # RFC 5761: RTCP on the RTP port (remote_rtcp is remote_rtp)

    @property
    def on_hold(self) -> bool:
        """The remote put us on hold: it will not send (sendonly from us) or nothing flows."""
        return self.direction in ("sendonly", "inactive") or self.remote_rtp[0] in (
            "0.0.0.0",
            "::",
        )


@dataclass(frozen=True, slots=True)
class Negotiated:
    """The outcome of offer/answer for our one audio stream: our answer and the remote media."""

    answer: SessionDescription
    media: RemoteMedia

    @property
    def codec(self) -> Codec:
        return self.media.codec

    @property
    def payload_type(self) -> int:
        return self.media.payload_type

    @property
    def dtmf_payload_type(self) -> int | None:
        return self.media.dtmf_payload_type

    @property
    def ptime(self) -> int:
        return self.media.ptime

    @property
    def remote_rtp(self) -> Address:
        return self.media.remote_rtp

    @property
    def remote_rtcp(self) -> Address:
        return self.media.remote_rtcp

    @property
    def direction(self) -> Direction:
        return self.media.direction

    @property
    def on_hold(self) -> bool:
        return self.media.on_hold

    @property
    def answer_sdp(self) -> bytes:
        return self.answer.serialize()


def describe(
    sd: SessionDescription,
    policy: MediaPolicy = DEFAULT_MEDIA,
    *,
    local: SessionDescription | None = None,
) -> RemoteMedia:
    """Pick the audio line and our codec from `sd` (an offer, or the answer to our offer
    `local`) and read the remote media description.

    Raises NotAcceptable when `sd` has no audio stream we may answer under `policy` or no codec
    of it: EncryptedMediaOnly when its only audio is SRTP we cannot answer, SrtpRequired when
    `policy.srtp` is mandatory and it has no SDES-SRTP line we can."""
    audio, crypto = choose_audio(sd, policy, local)
    rtpmaps = audio.rtpmaps()
    by_encoding = {(c.encoding.lower(), c.clock_rate): c.name for c in CODECS.values()}
    offered: dict[Codec, int] = {}
    dtmf_pts: dict[int, int] = {}  # clock -> the first telephone-event at it
    for fmt in audio.formats:
        if not fmt.isdecimal():
            continue
        pt = int(fmt)
        if pt in rtpmaps:
            name, rate = rtpmaps[pt]
            codec = by_encoding.get((name, rate))
        else:
            name, codec = "", _STATIC.get(pt)
        if codec is not None and codec not in offered:
            offered[codec] = pt
        elif name == "telephone-event" and rate not in dtmf_pts:
            dtmf_pts[rate] = pt
    # our preference decides among the codecs offered (RFC 3264 §6.1 lets the answerer choose)
    ordered = [c for c in policy.codecs if c in offered]
    if not ordered:
        raise NotAcceptable("no common codec")
    codec = ordered[0]
    # RFC 4733 §2.1: events share the audio's timestamps, so the event clock should be the
    # codec's RTP clock; failing that, 8000, failing that, the first one offered
    clock = CODECS[codec].clock_rate
    if clock not in dtmf_pts:
        clock = 8000 if 8000 in dtmf_pts else next(iter(dtmf_pts), clock)
    dtmf_pt = dtmf_pts.get(clock)
    ptime = _packet_time(sd, audio, policy.ptime)
    host = audio.connection or sd.connection
    if host is None:
        raise SdpError("no c= address")
    rtcp = audio.attribute("rtcp")
    rtcp_addr = (host, audio.port + 1)
    if rtcp:
        parts = rtcp.split()
        if parts and parts[0].isdecimal():
            rtcp_addr = (parts[3] if len(parts) >= 4 else host, int(parts[0]))
    direction = audio.direction or sd.direction
    ours = _our_crypto(local, crypto) if local is not None and crypto is not None else None
    rtcp_mux = audio.attribute("rtcp-mux") is not None
    if rtcp_mux:  # RFC 5761 §5.1.3: a=rtcp (the fallback port) no longer applies
        rtcp_addr = (host, audio.port)
    return RemoteMedia(
        codec,
        offered[codec],
        dtmf_pt,
        ptime,
        (host, audio.port),
        rtcp_addr,
        direction,
        crypto=crypto,
        local_crypto=ours,
        dtmf_clock_rate=clock,
        fmtp=_fmtp_of(audio, offered[codec]),
        cn_payload_type=comfort_noise_pt(audio, CODECS[codec].clock_rate),
        rtcp_mux=rtcp_mux,
    )


def crypto_lines(m: MediaDescription) -> list[CryptoAttribute]:
    """The well-formed `a=crypto` lines of a media section, in order (malformed ones skipped:
    RFC 4568 §7.1.1 lets the answerer ignore what it does not understand)."""
    out = []
    for key, value in m.attributes:
        if key == "crypto" and value:
            try:
                out.append(CryptoAttribute.parse(value))
            except ValueError:
                continue
    return out


def choose_audio(
    sd: SessionDescription, policy: MediaPolicy, local: SessionDescription | None = None
) -> tuple[MediaDescription, CryptoAttribute | None]:
    """The audio line of `sd` we answer (or, for an answer to our offer `local`, accept) under
    `policy.srtp`, and its chosen crypto line (None: plain RTP). A best-effort offer (an SRTP
    and a plain line for one stream) gets SRTP unless `off`; the other line is left for port 0."""
    active = [m for m in sd.media if m.media == "audio" and m.port != 0]
    if policy.srtp != "off":
        for m in active:
            if m.proto.upper() in SDES_RTP:
                for crypto in crypto_lines(m):
                    if crypto.usable and (local is None or _our_crypto(local, crypto)):
                        return m, crypto
    plain = next((m for m in active if m.proto.upper() in PLAIN_RTP), None)
    ours = ", ".join(SUITES)
    if policy.srtp == "mandatory" and (plain is not None or active):
        raise SrtpRequired(f"SRTP required: offer RTP/SAVP with a=crypto ({ours})")
    if plain is not None:
        return plain, None
    if active and all(is_encrypted(m.proto) for m in active):
        proto = active[0].proto
        if policy.srtp == "off":
            raise EncryptedMediaOnly(f"SRTP ({proto}) not supported, offer RTP/AVP")
        if proto.upper() in SDES_RTP:
            raise EncryptedMediaOnly(f"SRTP ({proto}) not supported without a suite of {ours}")
        raise EncryptedMediaOnly(
            f"SRTP ({proto}) not supported (DTLS-SRTP), offer RTP/SAVP with a=crypto or RTP/AVP"
        )
    raise NotAcceptable("no RTP/AVP audio stream")


def _our_crypto(local: SessionDescription, theirs: CryptoAttribute) -> CryptoAttribute | None:
    """Our offer's crypto line that an answer's line accepts: same tag and suite (§7.1.2)."""
    for m in local.media:
        if m.media == "audio" and m.port != 0 and m.proto.upper() in SDES_RTP:
            for crypto in crypto_lines(m):
                if (crypto.tag, crypto.suite) == (theirs.tag, theirs.suite):
                    return crypto
    return None


def _fmtp_of(audio: MediaDescription, pt: int) -> str | None:
    """The a=fmtp parameters of payload type `pt` (RFC 4566 §6), None when there are none."""
    prefix = f"{pt} "
    for key, value in audio.attributes:
        if key == "fmtp" and value and value.startswith(prefix):
            return value[len(prefix) :].strip()
    return None


def comfort_noise_pt(audio: MediaDescription, clock_rate: int) -> int | None:
    """The payload type of CN (RFC 3389 §5: static 13 at 8000, or a dynamic `CN/<rate>`) that
    `audio` lists at `clock_rate`, the chosen codec's clock; None when there is none."""
    rtpmaps = audio.rtpmaps()
    for fmt in audio.formats:
        if not fmt.isdecimal():
            continue
        pt = int(fmt)
        encoding, rate = rtpmaps.get(pt, ("cn", 8000) if pt == 13 else ("", 0))
        if encoding == "cn" and rate == clock_rate:
            return pt
    return None


def _packet_time(sd: SessionDescription, audio: MediaDescription, default: int) -> int:
    """The packet time we send in (RFC 4566 §6: ours to choose): the peer's a=ptime when it is
    one we can pace, else `default`; never above its a=maxptime (RFC 4566 §6)."""
    ptime = default
    text = audio.attribute("ptime") or sd_attr(sd, "ptime")
    value = _whole_ms(text)
    if value is not None and PTIME_MIN_MS <= value <= PTIME_MAX_MS:
        ptime = value
    most = _whole_ms(audio.attribute("maxptime") or sd_attr(sd, "maxptime"))
    if most is not None and most < ptime:
        ptime = max(PTIME_MIN_MS, most)
    return ptime


def _whole_ms(text: str | None) -> int | None:
    """A ptime value in whole milliseconds ("20", "20.0"), None when there is none."""
    if not text:
        return None
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return int(value) if 0 < value < 10_000 else None


def sd_attr(sd: SessionDescription, name: str) -> str | None:
    for key, value in sd.attributes:
        if key == name:
            return value or ""
    return None


def check_offer(offer: SessionDescription, policy: MediaPolicy = DEFAULT_MEDIA) -> None:
    """Raise NotAcceptable (488) or SdpError (400) if `offer` cannot be answered."""
    describe(offer, policy)


def negotiate(
    offer: SessionDescription,
    local_addr: str,
    local_port: int,
    policy: MediaPolicy = DEFAULT_MEDIA,
    *,
    session_id: int = 1,
    session_version: int = 1,
    local_direction: Direction = "sendrecv",
    local_crypto: CryptoAttribute | None = None,
) -> Negotiated:
    """Answer `offer` (RFC 3264 §6) with one codec, telephone-event if offered, and its ptime.

    The answer keeps the offer's m-line count (rejected extra streams get port 0). An SRTP line
    is answered with one `a=crypto` of the offer's chosen tag and suite: `local_crypto` (our key
    so far, kept in a re-INVITE's answer: RFC 4568 §7.1.4) if its suite matches, else a new key.
    """
    remote = describe(offer, policy)
    if remote.crypto is not None:
        theirs = remote.crypto
        if local_crypto is not None and local_crypto.suite == theirs.suite:
            ours = local_crypto.with_tag(theirs.tag)
        else:
            ours = CryptoAttribute.generate(theirs.tag, theirs.suite)
        remote = replace(remote, local_crypto=ours)
    codec, pt, dtmf_pt = remote.codec, remote.payload_type, remote.dtmf_payload_type
    ptime, direction = remote.ptime, remote.direction
    answer_dir = _ANSWER_DIRECTION[direction]
    if local_direction != "sendrecv":
        answer_dir = _combine(answer_dir, local_direction)
    chosen, _crypto = choose_audio(offer, policy)
    media: list[MediaDescription] = []
    for m in offer.media:
        if m is chosen:
            formats = [str(pt)] + ([str(dtmf_pt)] if dtmf_pt is not None else [])
            spec = CODECS[codec]
            attrs: list[tuple[str, str | None]] = [
                ("rtpmap", replace(spec, payload_type=pt).rtpmap)
            ]
            if spec.fmtp:
                attrs.append(("fmtp", f"{pt} {spec.fmtp}"))
            if dtmf_pt is not None:
                attrs += [
                    ("rtpmap", f"{dtmf_pt} telephone-event/{remote.dtmf_clock_rate}"),
                    ("fmtp", f"{dtmf_pt} 0-16"),
                ]
            attrs += _cn_and_mux(remote, formats)
            attrs += [("ptime", str(ptime)), (answer_dir, None)]
            if remote.local_crypto is not None:
                attrs.append(("crypto", remote.local_crypto.serialize()))
            media.append(MediaDescription("audio", local_port, m.proto, formats, None, attrs))
        else:
            media.append(MediaDescription(m.media, 0, m.proto, m.formats[:1] or ["0"]))
    answer = SessionDescription(
        origin_user="gateway",
        session_id=session_id,
        session_version=session_version,
        origin_address=local_addr,
        connection=local_addr,
        media=media,
    )
    return Negotiated(answer, remote)


def offers_rtcp_mux(sd: SessionDescription) -> bool:
    """Whether `sd`'s audio stream has a=rtcp-mux (RFC 5761 §5.1.1): an offer we answer so."""
    audio = sd.audio()
    return audio is not None and audio.attribute("rtcp-mux") is not None


def _cn_and_mux(remote: RemoteMedia, formats: list[str]) -> list[tuple[str, str | None]]:
    """An answer's CN (RFC 3389: the offer's, at the codec's clock) and a=rtcp-mux (RFC 5761
    §5.1.1: when offered); CN's payload type is added to `formats`."""
    attrs: list[tuple[str, str | None]] = []
    cn_pt = remote.cn_payload_type
    if cn_pt is not None:
        formats.append(str(cn_pt))
        attrs.append(("rtpmap", f"{cn_pt} CN/{CODECS[remote.codec].clock_rate}"))
    if remote.rtcp_mux:
        attrs.append(("rtcp-mux", None))
    return attrs


def _combine(answer_dir: Direction, local: Direction) -> Direction:
    sends = answer_dir in ("sendrecv", "sendonly") and local in ("sendrecv", "sendonly")
    recvs = answer_dir in ("sendrecv", "recvonly") and local in ("sendrecv", "recvonly")
    table: dict[tuple[bool, bool], Direction] = {
        (True, True): "sendrecv",
        (True, False): "sendonly",
        (False, True): "recvonly",
        (False, False): "inactive",
    }
    return table[(sends, recvs)]


def make_offer(
    local_addr: str,
    local_port: int,
    policy: MediaPolicy = DEFAULT_MEDIA,
    *,
    dtmf_pt: int | None = 101,
    direction: Direction = "sendrecv",
    session_id: int = 1,
    session_version: int = 1,
) -> SessionDescription:
    """Our offer: the policy's codecs in order, telephone-event at each of their clocks (8000
    as `dtmf_pt`), CN (`comfort_noise`), a=rtcp-mux, ptime and direction; with `srtp`
    mandatory, RTP/SAVP with one new key per suite of ours (RFC 4568 §7.1.1, tags 1-N)."""
    specs = [CODECS[c] for c in policy.codecs]
    formats = [str(c.payload_type) for c in specs]
    attrs: list[tuple[str, str | None]] = []
    for spec in specs:
        attrs.append(("rtpmap", spec.rtpmap))
        if spec.fmtp:
            attrs.append(("fmtp", f"{spec.payload_type} {spec.fmtp}"))
    ptime = policy.ptime
    if dtmf_pt is not None:
        clocks = sorted({clock for c in policy.codecs for clock in DTMF_CLOCKS[c]})
        for clock in clocks:
            pt = dtmf_pt if clock == 8000 else DTMF_PAYLOAD_TYPES[clock]
            formats.append(str(pt))
            attrs += [("rtpmap", f"{pt} telephone-event/{clock}"), ("fmtp", f"{pt} 0-16")]
    if policy.comfort_noise:  # RFC 3389 §5: static CN at 8000
        formats.append(str(CN_PAYLOAD_TYPE))
        attrs.append(("rtpmap", f"{CN_PAYLOAD_TYPE} CN/8000"))
    # RFC 5761 §5.1.1: RTCP on the RTP port if the answer agrees, else on port+1 (the default)
    attrs += [("rtcp-mux", None), ("ptime", str(ptime)), (direction, None)]
    proto = "RTP/AVP"
    if policy.srtp == "mandatory":
        proto = "RTP/SAVP"
        attrs += [
            ("crypto", CryptoAttribute.generate(tag, suite).serialize())
            for tag, suite in enumerate(SUITES, start=1)
        ]
    return SessionDescription(
        origin_user="gateway",
        session_id=session_id,
        session_version=session_version,
        origin_address=local_addr,
        connection=local_addr,
        media=[MediaDescription("audio", local_port, proto, formats, None, attrs)],
    )


def with_direction(sd: SessionDescription, direction: Direction) -> SessionDescription:
    """A copy of `sd` whose audio stream has `direction`, version bumped if it changed."""
    media = []
    changed = False
    for m in sd.media:
        if m.media == "audio" and m.port:
            old = m.direction or "sendrecv"
            changed = changed or old != direction
            attrs = [(k, v) for k, v in m.attributes if k not in DIRECTIONS] + [(direction, None)]
            media.append(replace(m, attributes=attrs))
        else:
            media.append(m)
    return replace(sd, media=media, session_version=sd.session_version + (1 if changed else 0))


def bump_version(sd: SessionDescription) -> SessionDescription:
    """A copy with o= version + 1 (RFC 3264 §8: any change in a new offer/answer)."""
    return replace(sd, session_version=sd.session_version + 1)


def is_ip(addr: str) -> bool:
    try:
        ipaddress.ip_address(addr)
    except ValueError:
        return False
    return True

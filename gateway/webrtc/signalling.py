"""Offer/answer for WebRTC calls: what an offer body may look like and what we answer with.

Two body forms are accepted on `POST /webrtc/offer` (the answer comes back in the same form):

* `application/sdp`: the SDP itself, WHIP style (RFC 9725 §4.2);
* `application/json`: `{"sdp": "...", "type": "offer"}`, as `RTCSessionDescription.toJSON()`.

ICE is not trickled (RFC 8838 is not used): the client gathers its candidates before sending
the offer and the gateway gathers its own before answering, so one round trip sets up the call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from aiortc import RTCRtpSender
from aiortc.rtcrtpparameters import RTCRtpCodecCapability
from aiortc.sdp import SessionDescription

from gateway.errors import BadOffer
from gateway.rtp.dtmf import DTMF_EVENTS

MAX_SDP_BYTES = 64 * 1024
#: Answer codec order: Opus first; G.711 for clients that offer only that (RFC 7874 §3).
PREFERRED_CODECS = ("audio/opus", "audio/PCMU", "audio/PCMA")
_DIGITS = frozenset(DTMF_EVENTS)  # the page sends the digits RFC 4733 has events for


@dataclass(frozen=True, slots=True)
class Offer:
    """A parsed offer: its SDP and whether the client spoke JSON (and wants JSON back)."""

    sdp: str
    json: bool
    has_data_channel: bool

    @classmethod
    def parse(cls, content_type: str, body: bytes) -> Offer:
        """The offer in an HTTP body; BadOffer with a readable reason when it is not one."""
        if len(body) > MAX_SDP_BYTES:
            raise BadOffer("the offer is too large", 413)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadOffer("the offer is not UTF-8 text") from None
        if content_type == "application/json":
            try:
                obj = json.loads(text)
            except ValueError:
                raise BadOffer("the body is not valid JSON") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("sdp"), str):
                raise BadOffer('expected a JSON object {"sdp": "...", "type": "offer"}')
            if obj.get("type", "offer") != "offer":
                raise BadOffer('"type" must be "offer"')
            sdp, as_json = obj["sdp"], True
        elif content_type == "application/sdp":
            sdp, as_json = text, False
        else:
            raise BadOffer("send the offer as application/sdp or application/json", 415)
        return cls(sdp, as_json, check_offer(sdp))

    def answer_body(
        self, answer_sdp: str, call_id: str, resource: str, hangup_secret: str = ""
    ) -> tuple[str, bytes]:
        """(content type, body) of the answer in the offer's form. JSON answers carry the
        call's `hangup_secret`: the body of the page's pagehide beacon."""
        if self.json:
            obj = {
                "sdp": answer_sdp,
                "type": "answer",
                "call_id": call_id,
                "resource": resource,
                "hangup_secret": hangup_secret,
            }
            return "application/json", json.dumps(obj).encode()
        return "application/sdp", answer_sdp.encode()


def check_offer(sdp: str) -> bool:
    """Raise BadOffer unless `sdp` is an offer with one audio stream we can answer.

    Returns whether it also has a data channel (an `m=application` SCTP section).
    """
    if not sdp.lstrip().startswith("v=0"):
        raise BadOffer("the offer is not SDP (it must start with v=0)")
    try:
        desc = SessionDescription.parse(sdp)
    except Exception:  # aiortc's parser raises whatever it trips on
        raise BadOffer("the offer's SDP could not be parsed") from None
    active = [m for m in desc.media if m.port != 0]
    audio = [m for m in active if m.kind == "audio"]
    if len(audio) != 1:
        raise BadOffer("the offer must have exactly one audio stream")
    if any(m.kind not in ("audio", "application") for m in active):
        raise BadOffer("only audio and a data channel are supported (no video)")
    for media in active:
        ice, dtls = media.ice, media.dtls
        if not (ice and ice.usernameFragment and ice.password and dtls and dtls.fingerprints):
            raise BadOffer("the offer lacks ICE credentials or a DTLS fingerprint")
    names = {c.mimeType.lower() for c in audio[0].rtp.codecs}
    if not names & {c.lower() for c in PREFERRED_CODECS}:
        raise BadOffer("the offer has no codec in common: send Opus, PCMU or PCMA")
    return any(m.kind == "application" for m in active)


def preferred_codecs() -> list[RTCRtpCodecCapability]:
    """aiortc codec capabilities in `PREFERRED_CODECS` order (G.722 is left out)."""
    caps = RTCRtpSender.getCapabilities("audio").codecs
    return [c for name in PREFERRED_CODECS for c in caps if c.mimeType.lower() == name.lower()]


def valid_digit(digit: object) -> str | None:
    """The DTMF digit if `digit` is one of 0-9 * # A-D, else None."""
    return digit if isinstance(digit, str) and digit in _DIGITS else None

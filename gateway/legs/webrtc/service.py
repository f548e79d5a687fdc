"""WebRTC calls: admission before any peer connection exists, the call built around an answered
leg, hang-up, and the page's `events` channel (transcripts, the agent's state).

    POST /webrtc/offer --> admit() --> leg.accept(offer) --> create_call(leg, info)
        --> CallService.open_session() (admission, Realtime session) --> Call on the leg

The HTTP routes (`gateway.webrtc.routes`) call it and know no call logic; it knows no HTTP. A
refusal is a `CallRejected` (status, Retry-After, reason token), which the routes answer as a
JSON error.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from gateway.call.call import Call
from gateway.call.events import BotMediaEnded, BotMediaStarted
from gateway.call.manager import CallManager
from gateway.call.service import CallService
from gateway.errors import AdmissionError, CallRejected, ProviderUnavailable, RealtimeError
from gateway.legs.webrtc.leg import WebRtcLeg
from gateway.logs import get_logger
from gateway.realtime import events as rt

log = get_logger("webrtc.calls")


@dataclass(frozen=True, slots=True)
class OfferInfo:
    """What the call service learns about a WebRTC offer besides the leg.

    `credential`: how the offer was authorised (`gateway.webrtc.auth.CredentialKind`:
    api_token, minted_token or loopback)."""

    remote: str | None
    credential: str
    user_agent: str
    codec: str | None


class WebRtcCallService:
    """Turns answered WebRTC legs into calls; wired by `gateway.app` into the WebRTC routes."""

    def __init__(self, calls: CallService, manager: CallManager) -> None:
        self.calls = calls
        self.manager = manager

    def admit(self) -> None:
        """Raise CallRejected when no call can start now (capacity, draining, the provider's
        breaker open), before any peer connection exists."""
        try:
            self.manager.check_admission()
        except AdmissionError as exc:
            raise CallRejected(
                503,
                f"not accepting calls: {exc.reason}",
                retry_after=exc.retry_after,
                reason=exc.reason,
            ) from None
        calls = self.calls
        if calls.breaker.refusing(asyncio.get_running_loop().time()):
            # before any peer connection exists: the provider is known to be down
            raise CallRejected(
                503,
                "the AI provider is unavailable",
                retry_after=calls.retry_after,
                reason="provider_unavailable",
            )

    async def create_call(self, leg: WebRtcLeg, info: OfferInfo) -> str:
        """The call around an answered leg (it owns the leg from then on); its id."""
        try:
            prepared = await self.calls.open_session(
                leg="webrtc",
                direction="inbound",
                codec=leg.codec or "opus",
                caller="webrtc",
                called="",
                source=info.remote or "",
            )
        except AdmissionError as exc:
            raise CallRejected(
                503,
                f"not accepting calls: {exc.reason}",
                retry_after=exc.retry_after,
                reason=exc.reason,
            ) from None
        except RealtimeError as exc:
            if not isinstance(exc, ProviderUnavailable):  # the breaker logged why it opened
                log.warning("webrtc_provider_unavailable", remote=info.remote, error=str(exc))
            raise CallRejected(
                503,
                "the AI provider is unavailable",
                retry_after=self.calls.retry_after,
                reason="provider_unavailable",
            ) from None
        call = self.calls.start_call(prepared, leg)
        attach_page_events(call, leg)
        return call.id

    async def hangup(self, call_id: str) -> None:
        """End the call (which closes its leg); KeyError when there is no such call."""
        if not await self.manager.hangup(call_id, "caller_hangup"):
            raise KeyError(call_id)


def attach_page_events(call: Call, leg: WebRtcLeg) -> None:
    """The WebRTC page's `events` channel: transcripts (both sides) and the agent's state."""

    def state(value: str) -> None:
        leg.send_event({"type": "state", "state": value})

    call.realtime.on(rt.SpeechStarted, lambda _e: state("listening"))
    call.realtime.on(rt.SpeechStopped, lambda _e: state("thinking"))
    call.on(BotMediaStarted, lambda _e: state("speaking"))
    call.on(BotMediaEnded, lambda _e: state("listening"))
    call.realtime.on(
        rt.TranscriptDelta,
        lambda e: leg.send_event(
            {"type": "transcript", "role": "assistant", "item_id": e.item_id, "delta": e.delta}
        ),
    )

    def transcript_done(e: rt.TranscriptDone) -> None:
        # the whole text replaces the deltas (some servers send only this); a cancelled
        # response may end with an empty one: keep what the deltas showed
        if e.transcript:
            leg.send_event(
                {
                    "type": "transcript",
                    "role": "assistant",
                    "item_id": e.item_id,
                    "text": e.transcript,
                }
            )

    call.realtime.on(rt.TranscriptDone, transcript_done)
    call.realtime.on(
        rt.InputTranscriptionDelta,
        lambda e: leg.send_event(
            {"type": "transcript", "role": "user", "item_id": e.item_id, "delta": e.delta}
        ),
    )
    call.realtime.on(
        rt.InputTranscriptionCompleted,
        lambda e: leg.send_event(
            {"type": "transcript", "role": "user", "item_id": e.item_id, "text": e.transcript}
        ),
    )

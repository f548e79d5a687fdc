"""Supervisor barge-in: a supervisor injects a message into a live call through the call API.

A supervisor console sends `POST /calls/{id}/say`-style requests to a small service of its own,
which calls `whisper(call, text)` below: the model's current answer is cut off (queued audio
dropped, the item truncated where the caller stopped hearing it) and the model is told to say
the supervisor's words next.
"""

from __future__ import annotations

from gateway.call.call import Call
from gateway.call.default_scenario import setup as default_setup
from gateway.call.events import DtmfReceived

SUPERVISOR_TEXT = "A supervisor has joined: apologise for the wait and offer a callback."


def whisper(call: Call, text: str) -> None:
    """Interrupt the bot and make it say `text` now."""
    cleared = call.clear_media_buffer()
    if cleared.item_id is not None:
        call.realtime.conversation_item_truncate(cleared.item_id, cleared.played_ms)
    if call.realtime.response_active:
        call.realtime.response_cancel()
    call.realtime.conversation_item_create(
        {
            "type": "message",
            "role": "system",
            "content": [{"type": "input_text", "text": f"Say this to the caller now: {text}"}],
        }
    )
    call.realtime.response_create_when_idle()


def setup(call: Call) -> None:
    default_setup(call)

    # Demo trigger: the caller pressing '9' stands in for a supervisor console.
    def on_dtmf(ev: DtmfReceived) -> None:
        if ev.digit == "9":
            whisper(call, SUPERVISOR_TEXT)

    call.on(DtmfReceived, on_dtmf)

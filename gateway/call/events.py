"""Call events a scenario can listen to with `call.on(EventClass, handler)`.

Leg events (`DtmfReceived`, `HoldChanged`, `MediaStarted`, `MediaStopped`, `TransferProgress`,
`LegEnded`) come straight from `gateway.media.port`; the ones here are the call's own.
Realtime server events (`gateway.realtime.events`) are listened to with `call.realtime.on`.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.media.port import (
    DtmfReceived,
    FormatChanged,
    HoldChanged,
    LegEnded,
    LegEvent,
    MediaStarted,
    MediaStopped,
    TransferProgress,
)

__all__ = [
    "BotMediaEnded",
    "BotMediaStarted",
    "CallConnected",
    "CallEnded",
    "CallEvent",
    "DtmfReceived",
    "EarlyMedia",
    "HoldChanged",
    "LegEnded",
    "LegEvent",
    "MediaStarted",
    "MediaStopped",
    "TransferProgress",
    "call_event_class_named",
]


@dataclass(frozen=True, slots=True)
class CallEvent:
    """Base class of the call's own events."""


@dataclass(frozen=True, slots=True)
class CallConnected(CallEvent):
    """The call is answered and its Realtime session is ready; media flows from now on."""


@dataclass(frozen=True, slots=True)
class EarlyMedia(CallEvent):
    """An outbound call's far end sent early media before answering (a 18x with SDP: a
    carrier's ringback or announcement). The call runs from here: the far end's audio is
    recorded and heard by handlers, not by the model; `CallConnected` follows on the answer."""

    status: int  # 180 or 183


@dataclass(frozen=True, slots=True)
class CallEnded(CallEvent):
    """The call ended. `outcome` is a bounded token (completed, caller_hangup, ...)."""

    outcome: str
    duration_s: float


@dataclass(frozen=True, slots=True)
class BotMediaStarted(CallEvent):
    """Provider audio toward the caller started playing (VoxEngine `WebSocketMediaStarted`)."""

    item_id: str | None


@dataclass(frozen=True, slots=True)
class BotMediaEnded(CallEvent):
    """Provider audio toward the caller ended: 1 s of silence after it (`WebSocketMediaEnded`)."""

    item_id: str | None


#: VoxEngine names of call events (`CallEvents.*`, `Yandex.Events.*`), as docs/voxengine.md maps
#: them, beside the class names.
_CALL_EVENT_NAMES: dict[str, type] = {
    "Connected": CallConnected,
    "Disconnected": CallEnded,
    "ToneReceived": DtmfReceived,
    "OnHold": HoldChanged,
    "TransferComplete": TransferProgress,
    "WebSocketMediaStarted": BotMediaStarted,
    "WebSocketMediaEnded": BotMediaEnded,
    **{
        cls.__name__: cls
        for cls in (
            CallEvent,
            CallConnected,
            EarlyMedia,
            CallEnded,
            BotMediaStarted,
            BotMediaEnded,
            LegEvent,
            DtmfReceived,
            FormatChanged,
            HoldChanged,
            LegEnded,
            MediaStarted,
            MediaStopped,
            TransferProgress,
        )
    },
}


def call_event_class_named(name: str) -> type | None:
    """The call event class `name` stands for (a class name or its VoxEngine name); None when
    it names none."""
    return _CALL_EVENT_NAMES.get(name)

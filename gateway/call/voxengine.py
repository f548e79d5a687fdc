"""VoxEngine names for the scenario API, so a VoxEngine Yandex (or OpenAI) Realtime scenario
ports line by line. See docs/voxengine.md for the full mapping.

    from gateway.call.voxengine import CallEvents, Yandex

    def setup(call):
        client = Yandex.create_realtime_api_client(call)          # = call.realtime
        client.add_event_listener(Yandex.RealtimeAPIEvents.InputAudioBufferSpeechStarted,
                                  lambda e: client.clear_media_buffer())

Every name is an event class of the gateway (`gateway.realtime.events`, `gateway.call.events`);
handlers get the typed event, whose wire JSON is in `event.raw`.
"""

from __future__ import annotations

from gateway.call.call import Call, RealtimeActions
from gateway.call.events import (
    BotMediaEnded,
    BotMediaStarted,
    CallConnected,
    CallEnded,
    DtmfReceived,
    HoldChanged,
    TransferProgress,
)
from gateway.realtime import events as rt

__all__ = ["CallEvents", "Events", "OpenAI", "RealtimeAPIEvents", "Yandex"]


class Events:
    """VoxEngine `Yandex.Events` / `OpenAI.Events`: the WebSocket media bridge."""

    #: provider audio toward the call started playing
    WebSocketMediaStarted = BotMediaStarted
    #: provider audio toward the call ended: 1 s of silence after it
    WebSocketMediaEnded = BotMediaEnded


class RealtimeAPIEvents:
    """VoxEngine `Yandex.RealtimeAPIEvents`: one gateway event class per name."""

    ConnectorInformation = rt.ConnectorEvent
    ConversationItemAdded = rt.ItemAdded
    ConversationItemCreated = rt.ItemAdded  # the beta name of conversation.item.added
    ConversationItemDeleted = rt.ItemDeleted
    ConversationItemDone = rt.ItemDone
    ConversationItemInputAudioTranscriptionCompleted = rt.InputTranscriptionCompleted
    ConversationItemInputAudioTranscriptionDelta = rt.InputTranscriptionDelta
    ConversationItemInputAudioTranscriptionFailed = rt.InputTranscriptionFailed
    ConversationItemInputAudioTranscriptionSegment = rt.InputTranscriptionSegment
    ConversationItemRetrieved = rt.ItemRetrieved
    ConversationItemTruncated = rt.ItemTruncated
    Error = rt.ErrorOccurred
    InputAudioBufferCleared = rt.InputCleared
    InputAudioBufferCommitted = rt.InputCommitted
    InputAudioBufferDtmfEventReceived = rt.DtmfReceived
    InputAudioBufferSpeechStarted = rt.SpeechStarted
    InputAudioBufferSpeechStopped = rt.SpeechStopped
    InputAudioBufferTimeoutTriggered = rt.InputTimeoutTriggered
    OutputAudioBufferCleared = rt.OutputAudioBufferCleared
    OutputAudioBufferStarted = rt.OutputAudioBufferStarted
    OutputAudioBufferStopped = rt.OutputAudioBufferStopped
    RateLimitsUpdated = rt.RateLimitsUpdated
    ResponseContentPartAdded = rt.ContentPartAdded
    ResponseContentPartDone = rt.ContentPartDone
    ResponseCreated = rt.ResponseCreated
    ResponseDone = rt.ResponseDone
    ResponseFunctionCallArgumentsDelta = rt.FunctionCallArgumentsDelta
    ResponseFunctionCallArgumentsDone = rt.FunctionCallArgumentsDone
    ResponseOutputAudioDelta = rt.AudioDelta
    ResponseOutputAudioDone = rt.AudioDone
    ResponseOutputAudioTranscriptDelta = rt.TranscriptDelta
    ResponseOutputAudioTranscriptDone = rt.TranscriptDone
    ResponseOutputItemAdded = rt.OutputItemAdded
    ResponseOutputItemDone = rt.OutputItemDone
    ResponseOutputTextDelta = rt.TextDelta
    ResponseOutputTextDone = rt.TextDone
    SessionCreated = rt.SessionCreated
    SessionUpdated = rt.SessionUpdated
    Unknown = rt.UnknownEvent


class CallEvents:
    """The VoxEngine `CallEvents` a Realtime scenario uses."""

    Connected = CallConnected
    Disconnected = CallEnded
    ToneReceived = DtmfReceived
    OnHold = HoldChanged
    TransferComplete = TransferProgress


class _Module:
    """`Yandex` / `OpenAI`: the module namespaces of a VoxEngine scenario."""

    Events = Events
    RealtimeAPIEvents = RealtimeAPIEvents

    @staticmethod
    def create_realtime_api_client(call: Call) -> RealtimeActions:
        """The call's Realtime client. The gateway opens it before the scenario runs (with the
        configured provider, voice and instructions), so this returns `call.realtime`."""
        return call.realtime


Yandex = _Module()
OpenAI = _Module()

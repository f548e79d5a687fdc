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

from collections.abc import Mapping
from typing import Any

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
from gateway.secret import Secret

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
    HTTPResponse = rt.HttpResponse
    InputAudioBufferCleared = rt.InputCleared
    InputAudioBufferCommitted = rt.InputCommitted
    InputAudioBufferDTMFEventReceived = rt.DtmfReceived
    InputAudioBufferDtmfEventReceived = rt.DtmfReceived  # the old spelling, kept as an alias
    InputAudioBufferSpeechStarted = rt.SpeechStarted
    InputAudioBufferSpeechStopped = rt.SpeechStopped
    InputAudioBufferTimeoutTriggered = rt.InputTimeoutTriggered
    MCPListToolsCompleted = rt.McpListToolsCompleted
    MCPListToolsFailed = rt.McpListToolsFailed
    MCPListToolsInProgress = rt.McpListToolsInProgress
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
    ResponseMCPCallArgumentsDelta = rt.McpCallArgumentsDelta
    ResponseMCPCallArgumentsDone = rt.McpCallArgumentsDone
    ResponseMCPCallCompleted = rt.McpCallCompleted
    ResponseMCPCallFailed = rt.McpCallFailed
    ResponseMCPCallInProgress = rt.McpCallInProgress
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
    WebSocketError = rt.WebSocketError


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
    def create_realtime_api_client(
        call: Call, parameters: Mapping[str, Any] | None = None, /, **more: Any
    ) -> RealtimeActions:
        """The call's Realtime client (`call.realtime`), with VoxEngine's `parameters` applied.

        The gateway opens the session before the scenario runs (with the configured provider,
        model, key, voice and instructions). Parameters that differ are applied to it:
        `instructions` and `voice` by a `session.update`; another `model`, `apiKey` (or
        `folderId` on Yandex) by re-opening the session with them, as a renewal does
        (`SessionReconnected`, or `HTTPResponse` and `SessionLost` if the provider refuses
        them). Names in camelCase or snake_case; any other name raises ValueError."""
        params = _client_parameters({**(parameters or {}), **more})
        _apply_client_parameters(call.realtime, params)
        return call.realtime


_PARAMETER_NAMES = {
    "model": "model",
    "apiKey": "api_key",
    "api_key": "api_key",
    "folderId": "folder_id",
    "folder_id": "folder_id",
    "voice": "voice",
    "instructions": "instructions",
}


def _client_parameters(given: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in given.items():
        key = _PARAMETER_NAMES.get(name)
        if key is None:
            raise ValueError(
                f"create_realtime_api_client: unknown parameter {name!r} "
                f"(known: {', '.join(sorted(_PARAMETER_NAMES))})"
            )
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            raise ValueError(f"create_realtime_api_client: {name} must be a non-empty string")
        out[key] = value
    return out


def _apply_client_parameters(client: RealtimeActions, params: Mapping[str, str]) -> None:
    link = client.link
    profile = link.profile
    requested = link.protocol.requested
    effective = link.effective or requested
    model = params.get("model", "")
    folder = params.get("folder_id")
    if profile.name == "yandex" and (folder or (model and not model.startswith("gpt://"))):
        # Yandex names its model by URI: gpt://FOLDER/MODEL
        current_folder, _, current_model = profile.model.removeprefix("gpt://").partition("/")
        model = f"gpt://{folder or current_folder}/{model or current_model}"
    key = params.get("api_key")
    changes: dict[str, Any] = {}
    if "instructions" in params and params["instructions"] != effective.instructions:
        changes["instructions"] = params["instructions"]
    if "voice" in params and params["voice"] != effective.voice:
        changes["voice"] = params["voice"]
    reconnect = (model and model != profile.model) or (
        key is not None and key != profile.credential.reveal()
    )
    if reconnect:
        new_profile = profile.with_model(model or profile.model, Secret(key) if key else None)
        link.reconnect_with(new_profile, requested.replace(**changes))
    elif changes:
        patch: dict[str, Any] = {}
        if "instructions" in changes:
            patch["instructions"] = changes["instructions"]
        if "voice" in changes:
            patch["audio"] = {"output": {"voice": changes["voice"]}}
        client.session_update(patch)


Yandex = _Module()
OpenAI = _Module()

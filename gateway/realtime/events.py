"""The Realtime protocol model: typed server events, client event builders, session config.

Server events are parsed from JSON objects into small frozen dataclasses (`parse_server_event`).
GA names are canonical; the beta names that compatible servers still send are read and mapped to
the same classes (`response.audio.delta` -> `AudioDelta`, `conversation.item.created` ->
`ItemAdded`, ...). An unknown type gives `UnknownEvent`, never an exception. A known type with
missing or mistyped fields raises `ValueError` naming the field; the protocol turns that into a
`MalformedEvent`.

Client events are built as plain dicts in the GA shape only (`session_update`, `response_create`,
...). The hot one, `input_audio_buffer.append`, is built straight to JSON text by
`encode_append()`.

`SessionConfig` is what the gateway asks for and what the server says it got: `to_wire()` gives the
GA `session` object, `SessionConfig.parse()` reads GA or beta `session` objects, and
`diff(requested, effective)` lists what differs.

No I/O here.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.media.format import PCM16_24K, PCMA_8K, PCMU_8K, AudioFormat

__all__ = [
    "CANCEL_REASONS",
    "CUT_REASONS",
    "KNOWN_SERVER_TYPES",
    "AudioDelta",
    "AudioDone",
    "ConnectorEvent",
    "ContentPartAdded",
    "ContentPartDone",
    "DtmfReceived",
    "ErrorOccurred",
    "FunctionCallArgumentsDelta",
    "FunctionCallArgumentsDone",
    "HttpResponse",
    "InputCleared",
    "InputCommitted",
    "InputTimeoutTriggered",
    "InputTranscriptionCompleted",
    "InputTranscriptionDelta",
    "InputTranscriptionFailed",
    "InputTranscriptionSegment",
    "ItemAdded",
    "ItemDeleted",
    "ItemDone",
    "ItemRetrieved",
    "ItemTruncated",
    "MalformedEvent",
    "McpCallArgumentsDelta",
    "McpCallArgumentsDone",
    "McpCallCompleted",
    "McpCallFailed",
    "McpCallInProgress",
    "McpListToolsCompleted",
    "McpListToolsFailed",
    "McpListToolsInProgress",
    "OutputAudioBufferCleared",
    "OutputAudioBufferStarted",
    "OutputAudioBufferStopped",
    "OutputItemAdded",
    "OutputItemDone",
    "RateLimitsUpdated",
    "ResponseCreated",
    "ResponseDone",
    "ServerEvent",
    "SessionConfig",
    "SessionCreated",
    "SessionLost",
    "SessionReconnected",
    "SessionStalled",
    "SessionUpdated",
    "SpeechStarted",
    "SpeechStopped",
    "TextDelta",
    "TextDone",
    "TranscriptDelta",
    "TranscriptDone",
    "TurnDetection",
    "UnknownEvent",
    "WebSocketError",
    "diff",
    "encode_append",
    "event_class_named",
    "format_from_wire",
    "format_to_wire",
    "parse_server_event",
]

JsonObject = Mapping[str, Any]

# --- audio formats ------------------------------------------------------------------------------

_BETA_FORMATS: Mapping[str, AudioFormat] = {
    "pcm16": PCM16_24K,
    "g711_ulaw": PCMU_8K,
    "g711_alaw": PCMA_8K,
}


def format_to_wire(fmt: AudioFormat) -> dict[str, Any]:
    """GA format object: `{"type":"audio/pcm","rate":24000}`, `{"type":"audio/pcmu"}`, ..."""
    if fmt.encoding == "pcm16":
        return {"type": "audio/pcm", "rate": fmt.rate}
    if fmt.rate != 8000:
        raise ValueError(f"G.711 is 8 kHz only, not {fmt.rate}")
    return {"type": f"audio/{fmt.encoding}"}


def format_from_wire(value: object) -> AudioFormat:
    """A GA format object or a beta format string into an AudioFormat; ValueError otherwise."""
    if isinstance(value, str):
        if value in _BETA_FORMATS:
            return _BETA_FORMATS[value]
        raise ValueError(f"unknown audio format {value!r}")
    if not isinstance(value, Mapping):
        raise ValueError(f"audio format must be an object, not {type(value).__name__}")
    kind = value.get("type")
    if kind == "audio/pcm":
        rate = value.get("rate", 24000)
        if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
            raise ValueError(f"bad audio/pcm rate {rate!r}")
        return AudioFormat("pcm16", rate)
    if kind in ("audio/pcmu", "audio/pcma"):
        return PCMU_8K if kind == "audio/pcmu" else PCMA_8K
    raise ValueError(f"unknown audio format type {kind!r}")


# --- session config -----------------------------------------------------------------------------

TurnType = Literal["server_vad", "semantic_vad"]


@dataclass(frozen=True, slots=True)
class TurnDetection:
    """`audio.input.turn_detection`; None fields are left to the server's defaults."""

    type: TurnType = "server_vad"
    threshold: float | None = None
    prefix_padding_ms: int | None = None
    silence_duration_ms: int | None = None
    idle_timeout_ms: int | None = None
    create_response: bool | None = None
    interrupt_response: bool | None = None
    eagerness: str | None = None

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        names = (
            ("eagerness",)
            if self.type == "semantic_vad"
            else ("threshold", "prefix_padding_ms", "silence_duration_ms", "idle_timeout_ms")
        )
        for name in (*names, "create_response", "interrupt_response"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    @classmethod
    def parse(cls, obj: object) -> TurnDetection | None:
        if obj is None:
            return None
        if not isinstance(obj, Mapping):
            raise ValueError("turn_detection must be an object or null")
        kind = obj.get("type", "server_vad")
        if kind not in ("server_vad", "semantic_vad"):
            raise ValueError(f"unknown turn_detection type {kind!r}")
        return cls(
            type=kind,
            threshold=obj.get("threshold"),
            prefix_padding_ms=obj.get("prefix_padding_ms"),
            silence_duration_ms=obj.get("silence_duration_ms"),
            idle_timeout_ms=obj.get("idle_timeout_ms"),
            create_response=obj.get("create_response"),
            interrupt_response=obj.get("interrupt_response"),
            eagerness=obj.get("eagerness"),
        )


_UNSET: Any = object()


@dataclass(frozen=True)
class SessionConfig:
    """A Realtime session's settings. None means "not asked for / not reported".

    `turn_detection` is special: None means null (turn detection off) when `turn_detection_set`
    is True, and "not mentioned" otherwise. Yandex extras: `input_languages`, `output_role`.
    """

    instructions: str | None = None
    voice: str | None = None
    input_format: AudioFormat | None = None
    output_format: AudioFormat | None = None
    turn_detection: TurnDetection | None = None
    turn_detection_set: bool = True
    tools: tuple[Mapping[str, Any], ...] | None = None
    #: "auto" | "none" | "required", or {"type": "function", "name": ...} / {"type": "mcp", ...}
    tool_choice: str | Mapping[str, Any] | None = None
    transcription: Mapping[str, Any] | None = None
    noise_reduction: str | None = None
    output_modalities: tuple[str, ...] | None = ("audio",)
    speed: float | None = None
    model: str | None = None
    input_languages: tuple[str, ...] | None = None
    output_role: str | None = None
    #: GA session fields sent as given when set (None: not sent, the provider's default)
    max_output_tokens: int | str | None = None  # 1..4096 or "inf"
    truncation: str | Mapping[str, Any] | None = None  # "auto" | "disabled" | retention_ratio
    prompt: Mapping[str, Any] | None = None  # {"id": ..., "version": ..., "variables": ...}
    tracing: str | Mapping[str, Any] | None = None  # "auto" | {"workflow_name": ...}
    include: tuple[str, ...] | None = None  # ("item.input_audio_transcription.logprobs",)
    parallel_tool_calls: bool | None = None

    def replace(self, **changes: Any) -> SessionConfig:
        """A copy with `changes` applied."""
        return dataclasses.replace(self, **changes)

    def to_wire(self, *, session_type: bool = True) -> dict[str, Any]:
        """The GA `session` object for session.update (a patch: only the set fields)."""
        out: dict[str, Any] = {}
        if session_type:
            out["type"] = "realtime"
        if self.model is not None:
            out["model"] = self.model
        if self.output_modalities is not None:
            out["output_modalities"] = list(self.output_modalities)
        if self.instructions is not None:
            out["instructions"] = self.instructions
        audio_in: dict[str, Any] = {}
        if self.input_format is not None:
            audio_in["format"] = format_to_wire(self.input_format)
        if self.noise_reduction is not None:
            audio_in["noise_reduction"] = (
                {"type": self.noise_reduction} if self.noise_reduction else None
            )
        if self.transcription is not None:
            audio_in["transcription"] = dict(self.transcription) or None
        if self.turn_detection_set:
            audio_in["turn_detection"] = (
                self.turn_detection.to_wire() if self.turn_detection else None
            )
        if self.input_languages is not None:
            audio_in["languages"] = list(self.input_languages)
        audio_out: dict[str, Any] = {}
        if self.output_format is not None:
            audio_out["format"] = format_to_wire(self.output_format)
        if self.voice is not None:
            audio_out["voice"] = self.voice
        if self.speed is not None:
            audio_out["speed"] = self.speed
        if self.output_role is not None:
            audio_out["role"] = self.output_role
        audio: dict[str, Any] = {}
        if audio_in:
            audio["input"] = audio_in
        if audio_out:
            audio["output"] = audio_out
        if audio:
            out["audio"] = audio
        if self.tools is not None:
            out["tools"] = [dict(t) for t in self.tools]
        if self.tool_choice is not None:
            out["tool_choice"] = (
                self.tool_choice if isinstance(self.tool_choice, str) else dict(self.tool_choice)
            )
        for name in ("max_output_tokens", "truncation", "prompt", "tracing"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value if isinstance(value, str | int) else dict(value)
        if self.include is not None:
            out["include"] = list(self.include)
        if self.parallel_tool_calls is not None:
            out["parallel_tool_calls"] = self.parallel_tool_calls
        return out

    @classmethod
    def parse(cls, session: object) -> SessionConfig:
        """Read a GA or beta `session` object (as in session.created/updated)."""
        if not isinstance(session, Mapping):
            raise ValueError("session must be an object")
        audio = _obj(session.get("audio"))
        a_in = _obj(audio.get("input"))
        a_out = _obj(audio.get("output"))
        in_fmt = a_in.get("format", session.get("input_audio_format"))
        out_fmt = a_out.get("format", session.get("output_audio_format"))
        if "turn_detection" in a_in:
            td_set, td = True, TurnDetection.parse(a_in["turn_detection"])
        elif "turn_detection" in session:
            td_set, td = True, TurnDetection.parse(session["turn_detection"])
        else:
            td_set, td = False, None
        voice = a_out.get("voice", session.get("voice"))
        if isinstance(voice, Mapping):
            voice = voice.get("id")
        nr = a_in.get("noise_reduction", session.get("input_audio_noise_reduction"))
        transcription = a_in.get("transcription", session.get("input_audio_transcription"))
        modalities = session.get("output_modalities", session.get("modalities"))
        tools = session.get("tools")
        tool_choice = session.get("tool_choice")
        languages = a_in.get("languages")
        include = session.get("include")
        parallel = session.get("parallel_tool_calls")
        return cls(
            instructions=_opt_str(session.get("instructions")),
            voice=_opt_str(voice),
            input_format=format_from_wire(in_fmt) if in_fmt is not None else None,
            output_format=format_from_wire(out_fmt) if out_fmt is not None else None,
            turn_detection=td,
            turn_detection_set=td_set,
            tools=tuple(t for t in tools if isinstance(t, Mapping))
            if isinstance(tools, list)
            else None,
            tool_choice=tool_choice if isinstance(tool_choice, str | Mapping) else None,
            transcription=transcription if isinstance(transcription, Mapping) else None,
            noise_reduction=_opt_str(_obj(nr).get("type")) if nr is not None else None,
            output_modalities=tuple(str(m) for m in modalities)
            if isinstance(modalities, list)
            else None,
            speed=_opt_num(a_out.get("speed", session.get("speed"))),
            model=_opt_str(session.get("model")),
            input_languages=tuple(str(x) for x in languages)
            if isinstance(languages, list)
            else None,
            output_role=_opt_str(a_out.get("role")),
            max_output_tokens=_tokens(session.get("max_output_tokens")),
            truncation=_str_or_obj(session.get("truncation")),
            prompt=_obj(session.get("prompt")) or None,
            tracing=_str_or_obj(session.get("tracing")),
            include=tuple(str(x) for x in include) if isinstance(include, list) else None,
            parallel_tool_calls=parallel if isinstance(parallel, bool) else None,
        )


def diff(requested: SessionConfig, effective: SessionConfig) -> list[tuple[str, Any, Any]]:
    """Fields asked for in `requested` that `effective` reports differently: (name, asked, got).

    Fields the server does not report (None in `effective`) are not differences, except the
    audio formats, whose absence matters. Turn detection is compared by type and by the
    parameters that were asked for.
    """
    out: list[tuple[str, Any, Any]] = []
    for f in dataclasses.fields(SessionConfig):
        name = f.name
        if name in ("turn_detection", "turn_detection_set", "tools", "model", "prompt", "tracing"):
            continue
        asked = getattr(requested, name)
        got = getattr(effective, name)
        if asked is None:
            continue
        if got is None and name not in ("input_format", "output_format"):
            continue
        if asked != got:
            out.append((name, asked, got))
    if requested.tools is not None and effective.tools is not None:
        asked_names = sorted(str(t.get("name")) for t in requested.tools)
        got_names = sorted(str(t.get("name")) for t in effective.tools)
        if asked_names != got_names:
            out.append(("tools", asked_names, got_names))
    if requested.turn_detection_set and effective.turn_detection_set:
        a, g = requested.turn_detection, effective.turn_detection
        if (a is None) != (g is None):
            out.append(("turn_detection", a and a.type, g and g.type))
        elif a is not None and g is not None:
            for f in dataclasses.fields(TurnDetection):
                asked = getattr(a, f.name)
                got = getattr(g, f.name)
                if asked is not None and asked != got:
                    out.append((f"turn_detection.{f.name}", asked, got))
    return out


def _obj(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _str_or_obj(value: object) -> str | Mapping[str, Any] | None:
    return value if isinstance(value, str | Mapping) else None


def _tokens(value: object) -> int | str | None:
    if value == "inf" or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    return None


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _opt_num(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


# --- server events ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerEvent:
    """Base of every typed server event; `raw` is the JSON object as received."""

    event_id: str = field(default="", kw_only=True)
    raw: Mapping[str, Any] = field(default_factory=dict, kw_only=True, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class SessionCreated(ServerEvent):
    session: SessionConfig


@dataclass(frozen=True, slots=True)
class SessionUpdated(ServerEvent):
    session: SessionConfig


@dataclass(frozen=True, slots=True)
class ErrorOccurred(ServerEvent):
    """An `error` event. `cause` is the type of the client event that caused it, when known;
    `benign` is set by the protocol for the codes that need no alarm."""

    error_type: str
    code: str | None
    message: str
    param: str | None = None
    client_event_id: str | None = None
    cause: str | None = None
    benign: bool = False


@dataclass(frozen=True, slots=True)
class SpeechStarted(ServerEvent):
    audio_start_ms: int
    item_id: str


@dataclass(frozen=True, slots=True)
class SpeechStopped(ServerEvent):
    audio_end_ms: int
    item_id: str


@dataclass(frozen=True, slots=True)
class InputCommitted(ServerEvent):
    item_id: str
    previous_item_id: str | None = None


@dataclass(frozen=True, slots=True)
class InputCleared(ServerEvent):
    pass


@dataclass(frozen=True, slots=True)
class InputTimeoutTriggered(ServerEvent):
    audio_start_ms: int
    audio_end_ms: int
    item_id: str


@dataclass(frozen=True, slots=True)
class DtmfReceived(ServerEvent):
    """`input_audio_buffer.dtmf_event_received` (OpenAI SIP transport only)."""

    digit: str


@dataclass(frozen=True, slots=True)
class ItemAdded(ServerEvent):
    """`conversation.item.added` (beta: `conversation.item.created`)."""

    item: Mapping[str, Any]
    previous_item_id: str | None = None


@dataclass(frozen=True, slots=True)
class ItemDone(ServerEvent):
    item: Mapping[str, Any]
    previous_item_id: str | None = None


@dataclass(frozen=True, slots=True)
class ItemRetrieved(ServerEvent):
    item: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ItemTruncated(ServerEvent):
    item_id: str
    content_index: int
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class ItemDeleted(ServerEvent):
    item_id: str


@dataclass(frozen=True, slots=True)
class InputTranscriptionDelta(ServerEvent):
    item_id: str
    delta: str


@dataclass(frozen=True, slots=True)
class InputTranscriptionCompleted(ServerEvent):
    item_id: str
    transcript: str


@dataclass(frozen=True, slots=True)
class InputTranscriptionFailed(ServerEvent):
    item_id: str
    message: str


@dataclass(frozen=True, slots=True)
class InputTranscriptionSegment(ServerEvent):
    """`conversation.item.input_audio_transcription.segment` (diarized transcription)."""

    item_id: str
    text: str


@dataclass(frozen=True, slots=True)
class ResponseCreated(ServerEvent):
    response_id: str


#: `status_details.reason` of a response cancelled by barge-in or by the client.
CANCEL_REASONS = frozenset({"turn_detected", "client_cancelled"})
#: `status_details.reason` of an `incomplete` response the model stopped on purpose.
CUT_REASONS = frozenset({"max_output_tokens", "content_filter"})


@dataclass(frozen=True, slots=True)
class ResponseDone(ServerEvent):
    """`response.done`: status completed/cancelled/failed/incomplete; `reason` is
    `status_details.reason` (cancelled: turn_detected/client_cancelled; incomplete:
    max_output_tokens/content_filter), `details` the whole `status_details` (with `error` when
    failed)."""

    response_id: str
    status: str
    reason: str | None = None
    output: tuple[Mapping[str, Any], ...] = ()
    usage: Mapping[str, Any] | None = None
    details: Mapping[str, Any] | None = None

    @property
    def failure(self) -> str | None:
        """How the response went wrong, by `status` and `status_details.reason`:

        * None: `completed`, `cancelled`, or any status whose reason is a cancel
          (`turn_detected`: barge-in; `client_cancelled`): nothing went wrong;
        * `"cut"`: `incomplete` with `max_output_tokens` or `content_filter`: the model stopped
          on purpose and the caller heard what came before; asking again would be cut the same;
        * `"failed"`: `failed`, or `incomplete` for any other reason (or none): worth a retry.
        """
        if self.status not in ("failed", "incomplete") or self.reason in CANCEL_REASONS:
            return None
        if self.status == "incomplete" and self.reason in CUT_REASONS:
            return "cut"
        return "failed"


@dataclass(frozen=True, slots=True)
class OutputItemAdded(ServerEvent):
    response_id: str
    output_index: int
    item: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class OutputItemDone(ServerEvent):
    response_id: str
    output_index: int
    item: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ContentPartAdded(ServerEvent):
    response_id: str
    item_id: str
    content_index: int
    part: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ContentPartDone(ServerEvent):
    response_id: str
    item_id: str
    content_index: int
    part: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class AudioDelta(ServerEvent):
    """`response.output_audio.delta` (beta `response.audio.delta`); `audio` is decoded bytes in
    the session's effective output format."""

    response_id: str
    item_id: str
    audio: bytes


@dataclass(frozen=True, slots=True)
class AudioDone(ServerEvent):
    response_id: str
    item_id: str


@dataclass(frozen=True, slots=True)
class TranscriptDelta(ServerEvent):
    response_id: str
    item_id: str
    delta: str


@dataclass(frozen=True, slots=True)
class TranscriptDone(ServerEvent):
    response_id: str
    item_id: str
    transcript: str


@dataclass(frozen=True, slots=True)
class TextDelta(ServerEvent):
    response_id: str
    item_id: str
    delta: str


@dataclass(frozen=True, slots=True)
class TextDone(ServerEvent):
    response_id: str
    item_id: str
    text: str


@dataclass(frozen=True, slots=True)
class FunctionCallArgumentsDelta(ServerEvent):
    response_id: str
    item_id: str
    call_id: str
    delta: str


@dataclass(frozen=True, slots=True)
class FunctionCallArgumentsDone(ServerEvent):
    response_id: str
    item_id: str
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class RateLimitsUpdated(ServerEvent):
    rate_limits: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True, slots=True)
class UnknownEvent(ServerEvent):
    """A server event of a type this model does not know; kept whole in `raw`."""

    type: str


@dataclass(frozen=True, slots=True)
class OutputAudioBufferStarted(UnknownEvent):
    """`output_audio_buffer.started`: sent only by servers that own playout (OpenAI WebRTC/SIP,
    never over WebSocket, never by Yandex). An `UnknownEvent` too, for handlers of those."""


@dataclass(frozen=True, slots=True)
class OutputAudioBufferStopped(UnknownEvent):
    """`output_audio_buffer.stopped` (see `OutputAudioBufferStarted`)."""


@dataclass(frozen=True, slots=True)
class OutputAudioBufferCleared(UnknownEvent):
    """`output_audio_buffer.cleared` (see `OutputAudioBufferStarted`)."""


@dataclass(frozen=True, slots=True)
class McpListToolsInProgress(ServerEvent):
    """`mcp_list_tools.in_progress`: the server is listing an MCP server's tools (a session
    `tools` entry of type `mcp`); `item_id` is the `mcp_list_tools` item."""

    item_id: str


@dataclass(frozen=True, slots=True)
class McpListToolsCompleted(ServerEvent):
    """`mcp_list_tools.completed`: the MCP server's tools are listed (in the item)."""

    item_id: str


@dataclass(frozen=True, slots=True)
class McpListToolsFailed(ServerEvent):
    """`mcp_list_tools.failed`: listing the MCP server's tools failed."""

    item_id: str


@dataclass(frozen=True, slots=True)
class McpCallArgumentsDelta(ServerEvent):
    """`response.mcp_call_arguments.delta`: a piece of an MCP tool call's JSON arguments."""

    response_id: str
    item_id: str
    output_index: int
    delta: str


@dataclass(frozen=True, slots=True)
class McpCallArgumentsDone(ServerEvent):
    """`response.mcp_call_arguments.done`: an MCP tool call's final JSON arguments."""

    response_id: str
    item_id: str
    output_index: int
    arguments: str


@dataclass(frozen=True, slots=True)
class McpCallInProgress(ServerEvent):
    """`response.mcp_call.in_progress`: the server is calling the MCP tool."""

    item_id: str
    output_index: int


@dataclass(frozen=True, slots=True)
class McpCallCompleted(ServerEvent):
    """`response.mcp_call.completed`: the MCP tool call succeeded (its output is in the item)."""

    item_id: str
    output_index: int


@dataclass(frozen=True, slots=True)
class McpCallFailed(ServerEvent):
    """`response.mcp_call.failed`: the MCP tool call failed (its error is in the item)."""

    item_id: str
    output_index: int


@dataclass(frozen=True, slots=True)
class MalformedEvent(ServerEvent):
    """A frame that is not a valid event (bad JSON, missing fields); `reason` says why."""

    type: str
    reason: str


# Events the client itself emits into the stream (not on the wire).


@dataclass(frozen=True, slots=True)
class ConnectorEvent(ServerEvent):
    """Base of the events about the connection itself (VoxEngine's `ConnectorInformation`)."""


@dataclass(frozen=True, slots=True)
class SessionReconnected(ConnectorEvent):
    """The provider socket was re-opened (`reason`: dropped, renewed or stalled) and the new
    session re-seeded with `reseeded_items` text items of the conversation so far."""

    reason: str
    reseeded_items: int


@dataclass(frozen=True, slots=True)
class SessionStalled(ConnectorEvent):
    """The provider sent nothing for the stall timeout while a response was awaited (`awaited`:
    `response.created` or `response.done`). The session is closed and re-opened next
    (`SessionReconnected(reason="stalled")`, or `SessionLost` when that is refused or fails);
    `stalls` counts this call's stalls so far."""

    awaited: str
    silent_s: float
    stalls: int


@dataclass(frozen=True, slots=True)
class SessionLost(ConnectorEvent):
    """The provider session is gone for good; the events stream ends after this."""

    reason: str


@dataclass(frozen=True, slots=True)
class WebSocketError(ConnectorEvent):
    """The provider's WebSocket closed without being asked to (VoxEngine `WebSocketError`):
    `code` and `reason` of its close frame (code None: no close frame). A re-open follows
    (`SessionReconnected`) or the session is lost (`SessionLost`)."""

    code: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class HttpResponse(ConnectorEvent):
    """The provider answered a WebSocket re-open with an HTTP status instead of the upgrade
    (VoxEngine `HTTPResponse`): 401/403 for a refused key or model, 5xx when it is down."""

    status: int


def _s(obj: JsonObject, key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise ValueError(f"field {key!r} must be a string")
    return value


def _s_opt(obj: JsonObject, key: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"field {key!r} must be a string or null")
    return value


def _i(obj: JsonObject, key: str, default: int | None = None) -> int:
    value = obj.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"field {key!r} must be an integer")
    return value


def _o(obj: JsonObject, key: str) -> Mapping[str, Any]:
    value = obj.get(key)
    if not isinstance(value, Mapping):
        raise ValueError(f"field {key!r} must be an object")
    return value


def _b64(obj: JsonObject, key: str) -> bytes:
    try:
        return base64.b64decode(_s(obj, key), validate=True)
    except binascii.Error:
        raise ValueError(f"field {key!r} is not valid base64") from None


def _error(o: JsonObject, eid: str) -> ErrorOccurred:
    err = _o(o, "error")
    return ErrorOccurred(
        error_type=str(err.get("type") or "error"),
        code=_s_opt(err, "code"),
        message=str(err.get("message") or ""),
        param=_s_opt(err, "param"),
        client_event_id=_s_opt(err, "event_id"),
        event_id=eid,
        raw=o,
    )


def _response_done(o: JsonObject, eid: str) -> ResponseDone:
    resp = _o(o, "response")
    details = resp.get("status_details")
    reason = details.get("reason") if isinstance(details, Mapping) else None
    output = resp.get("output")
    usage = resp.get("usage")
    return ResponseDone(
        response_id=_s(resp, "id"),
        status=str(resp.get("status") or "completed"),
        reason=reason if isinstance(reason, str) else None,
        output=tuple(x for x in output if isinstance(x, Mapping))
        if isinstance(output, list)
        else (),
        usage=usage if isinstance(usage, Mapping) else None,
        details=details if isinstance(details, Mapping) else None,
        event_id=eid,
        raw=o,
    )


def _ids(o: JsonObject) -> tuple[str, str]:
    return _s(o, "response_id"), _s(o, "item_id")


_Parser = Callable[[JsonObject, str], ServerEvent]


def _audio_delta(o: JsonObject, e: str) -> ServerEvent:
    return AudioDelta(*_ids(o), _b64(o, "delta"), event_id=e, raw=o)


def _transcript_delta(o: JsonObject, e: str) -> ServerEvent:
    return TranscriptDelta(*_ids(o), _s(o, "delta"), event_id=e, raw=o)


def _transcript_done(o: JsonObject, e: str) -> ServerEvent:
    return TranscriptDone(*_ids(o), str(o.get("transcript") or ""), event_id=e, raw=o)


def _text_delta(o: JsonObject, e: str) -> ServerEvent:
    return TextDelta(*_ids(o), _s(o, "delta"), event_id=e, raw=o)


def _text_done(o: JsonObject, e: str) -> ServerEvent:
    return TextDone(*_ids(o), str(o.get("text") or ""), event_id=e, raw=o)


def _item_added(o: JsonObject, e: str) -> ServerEvent:
    return ItemAdded(_o(o, "item"), _s_opt(o, "previous_item_id"), event_id=e, raw=o)


_PARSERS: dict[str, _Parser] = {
    "error": _error,
    "session.created": lambda o, e: SessionCreated(
        SessionConfig.parse(_o(o, "session")), event_id=e, raw=o
    ),
    "session.updated": lambda o, e: SessionUpdated(
        SessionConfig.parse(_o(o, "session")), event_id=e, raw=o
    ),
    "input_audio_buffer.speech_started": lambda o, e: SpeechStarted(
        _i(o, "audio_start_ms"), _s(o, "item_id"), event_id=e, raw=o
    ),
    "input_audio_buffer.speech_stopped": lambda o, e: SpeechStopped(
        _i(o, "audio_end_ms"), _s(o, "item_id"), event_id=e, raw=o
    ),
    "input_audio_buffer.committed": lambda o, e: InputCommitted(
        _s(o, "item_id"), _s_opt(o, "previous_item_id"), event_id=e, raw=o
    ),
    "input_audio_buffer.cleared": lambda o, e: InputCleared(event_id=e, raw=o),
    "input_audio_buffer.timeout_triggered": lambda o, e: InputTimeoutTriggered(
        _i(o, "audio_start_ms"), _i(o, "audio_end_ms"), _s(o, "item_id"), event_id=e, raw=o
    ),
    "input_audio_buffer.dtmf_event_received": lambda o, e: DtmfReceived(
        _s(o, "event"), event_id=e, raw=o
    ),
    "conversation.item.added": _item_added,
    "conversation.item.created": _item_added,
    "conversation.item.done": lambda o, e: ItemDone(
        _o(o, "item"), _s_opt(o, "previous_item_id"), event_id=e, raw=o
    ),
    "conversation.item.retrieved": lambda o, e: ItemRetrieved(_o(o, "item"), event_id=e, raw=o),
    "conversation.item.truncated": lambda o, e: ItemTruncated(
        _s(o, "item_id"), _i(o, "content_index", 0), _i(o, "audio_end_ms"), event_id=e, raw=o
    ),
    "conversation.item.deleted": lambda o, e: ItemDeleted(_s(o, "item_id"), event_id=e, raw=o),
    "conversation.item.input_audio_transcription.delta": lambda o, e: InputTranscriptionDelta(
        _s(o, "item_id"), str(o.get("delta") or ""), event_id=e, raw=o
    ),
    "conversation.item.input_audio_transcription.completed": lambda o, e: (
        InputTranscriptionCompleted(_s(o, "item_id"), _s(o, "transcript"), event_id=e, raw=o)
    ),
    "conversation.item.input_audio_transcription.segment": lambda o, e: InputTranscriptionSegment(
        _s(o, "item_id"), str(o.get("text") or ""), event_id=e, raw=o
    ),
    "output_audio_buffer.started": lambda o, e: OutputAudioBufferStarted(
        "output_audio_buffer.started", event_id=e, raw=o
    ),
    "output_audio_buffer.stopped": lambda o, e: OutputAudioBufferStopped(
        "output_audio_buffer.stopped", event_id=e, raw=o
    ),
    "output_audio_buffer.cleared": lambda o, e: OutputAudioBufferCleared(
        "output_audio_buffer.cleared", event_id=e, raw=o
    ),
    "conversation.item.input_audio_transcription.failed": lambda o, e: InputTranscriptionFailed(
        _s(o, "item_id"), str(_o(o, "error").get("message") or ""), event_id=e, raw=o
    ),
    "response.created": lambda o, e: ResponseCreated(
        _s(_o(o, "response"), "id"), event_id=e, raw=o
    ),
    "response.done": _response_done,
    "response.output_item.added": lambda o, e: OutputItemAdded(
        _s(o, "response_id"), _i(o, "output_index", 0), _o(o, "item"), event_id=e, raw=o
    ),
    "response.output_item.done": lambda o, e: OutputItemDone(
        _s(o, "response_id"), _i(o, "output_index", 0), _o(o, "item"), event_id=e, raw=o
    ),
    "response.content_part.added": lambda o, e: ContentPartAdded(
        *_ids(o), _i(o, "content_index", 0), _o(o, "part"), event_id=e, raw=o
    ),
    "response.content_part.done": lambda o, e: ContentPartDone(
        *_ids(o), _i(o, "content_index", 0), _o(o, "part"), event_id=e, raw=o
    ),
    "response.output_audio.delta": _audio_delta,
    "response.audio.delta": _audio_delta,
    "response.output_audio.done": lambda o, e: AudioDone(*_ids(o), event_id=e, raw=o),
    "response.audio.done": lambda o, e: AudioDone(*_ids(o), event_id=e, raw=o),
    "response.output_audio_transcript.delta": _transcript_delta,
    "response.audio_transcript.delta": _transcript_delta,
    "response.output_audio_transcript.done": _transcript_done,
    "response.audio_transcript.done": _transcript_done,
    "response.output_text.delta": _text_delta,
    "response.text.delta": _text_delta,
    "response.output_text.done": _text_done,
    "response.text.done": _text_done,
    "response.function_call_arguments.delta": lambda o, e: FunctionCallArgumentsDelta(
        *_ids(o), _s(o, "call_id"), str(o.get("delta") or ""), event_id=e, raw=o
    ),
    "response.function_call_arguments.done": lambda o, e: FunctionCallArgumentsDone(
        *_ids(o), _s(o, "call_id"), _s(o, "name"), _s(o, "arguments"), event_id=e, raw=o
    ),
    "mcp_list_tools.in_progress": lambda o, e: McpListToolsInProgress(
        _s(o, "item_id"), event_id=e, raw=o
    ),
    "mcp_list_tools.completed": lambda o, e: McpListToolsCompleted(
        _s(o, "item_id"), event_id=e, raw=o
    ),
    "mcp_list_tools.failed": lambda o, e: McpListToolsFailed(_s(o, "item_id"), event_id=e, raw=o),
    "response.mcp_call_arguments.delta": lambda o, e: McpCallArgumentsDelta(
        *_ids(o), _i(o, "output_index", 0), _s(o, "delta"), event_id=e, raw=o
    ),
    "response.mcp_call_arguments.done": lambda o, e: McpCallArgumentsDone(
        *_ids(o), _i(o, "output_index", 0), _s(o, "arguments"), event_id=e, raw=o
    ),
    "response.mcp_call.in_progress": lambda o, e: McpCallInProgress(
        _s(o, "item_id"), _i(o, "output_index", 0), event_id=e, raw=o
    ),
    "response.mcp_call.completed": lambda o, e: McpCallCompleted(
        _s(o, "item_id"), _i(o, "output_index", 0), event_id=e, raw=o
    ),
    "response.mcp_call.failed": lambda o, e: McpCallFailed(
        _s(o, "item_id"), _i(o, "output_index", 0), event_id=e, raw=o
    ),
    "rate_limits.updated": lambda o, e: RateLimitsUpdated(
        tuple(x for x in o.get("rate_limits") or () if isinstance(x, Mapping)), event_id=e, raw=o
    ),
}

#: Server event types with a typed class (GA and beta names); everything else is UnknownEvent.
KNOWN_SERVER_TYPES: frozenset[str] = frozenset(_PARSERS)


#: The class each wire type (GA and beta) is parsed into: the names `event_class_named` knows.
_CLASS_OF_TYPE: dict[str, type[ServerEvent]] = {
    "error": ErrorOccurred,
    "session.created": SessionCreated,
    "session.updated": SessionUpdated,
    "input_audio_buffer.speech_started": SpeechStarted,
    "input_audio_buffer.speech_stopped": SpeechStopped,
    "input_audio_buffer.committed": InputCommitted,
    "input_audio_buffer.cleared": InputCleared,
    "input_audio_buffer.timeout_triggered": InputTimeoutTriggered,
    "input_audio_buffer.dtmf_event_received": DtmfReceived,
    "conversation.item.added": ItemAdded,
    "conversation.item.created": ItemAdded,
    "conversation.item.done": ItemDone,
    "conversation.item.retrieved": ItemRetrieved,
    "conversation.item.truncated": ItemTruncated,
    "conversation.item.deleted": ItemDeleted,
    "conversation.item.input_audio_transcription.delta": InputTranscriptionDelta,
    "conversation.item.input_audio_transcription.completed": InputTranscriptionCompleted,
    "conversation.item.input_audio_transcription.segment": InputTranscriptionSegment,
    "conversation.item.input_audio_transcription.failed": InputTranscriptionFailed,
    "output_audio_buffer.started": OutputAudioBufferStarted,
    "output_audio_buffer.stopped": OutputAudioBufferStopped,
    "output_audio_buffer.cleared": OutputAudioBufferCleared,
    "response.created": ResponseCreated,
    "response.done": ResponseDone,
    "response.output_item.added": OutputItemAdded,
    "response.output_item.done": OutputItemDone,
    "response.content_part.added": ContentPartAdded,
    "response.content_part.done": ContentPartDone,
    "response.output_audio.delta": AudioDelta,
    "response.audio.delta": AudioDelta,
    "response.output_audio.done": AudioDone,
    "response.audio.done": AudioDone,
    "response.output_audio_transcript.delta": TranscriptDelta,
    "response.audio_transcript.delta": TranscriptDelta,
    "response.output_audio_transcript.done": TranscriptDone,
    "response.audio_transcript.done": TranscriptDone,
    "response.output_text.delta": TextDelta,
    "response.text.delta": TextDelta,
    "response.output_text.done": TextDone,
    "response.text.done": TextDone,
    "response.function_call_arguments.delta": FunctionCallArgumentsDelta,
    "response.function_call_arguments.done": FunctionCallArgumentsDone,
    "mcp_list_tools.in_progress": McpListToolsInProgress,
    "mcp_list_tools.completed": McpListToolsCompleted,
    "mcp_list_tools.failed": McpListToolsFailed,
    "response.mcp_call_arguments.delta": McpCallArgumentsDelta,
    "response.mcp_call_arguments.done": McpCallArgumentsDone,
    "response.mcp_call.in_progress": McpCallInProgress,
    "response.mcp_call.completed": McpCallCompleted,
    "response.mcp_call.failed": McpCallFailed,
    "rate_limits.updated": RateLimitsUpdated,
}
#: VoxEngine names that are not the CamelCase of a wire type (docs/voxengine.md).
_VOXENGINE_NAMES: Mapping[str, type[ServerEvent]] = {
    "connectorinformation": ConnectorEvent,
    "httpresponse": HttpResponse,
    "websocketerror": WebSocketError,
    "unknown": UnknownEvent,
}


def _camel(wire_type: str) -> str:
    """`response.output_audio.delta` -> `responseoutputaudiodelta` (VoxEngine's naming rule,
    case-folded so that `DTMF`/`Dtmf` and `MCP`/`Mcp` spell the same name)."""
    return wire_type.replace(".", "").replace("_", "").lower()


_BY_NAME: dict[str, type[ServerEvent]] = {
    **{_camel(t): cls for t, cls in _CLASS_OF_TYPE.items()},
    **_VOXENGINE_NAMES,
}
_SERVER_CLASSES: dict[str, type[ServerEvent]] = {
    cls.__name__: cls
    for cls in (
        *_CLASS_OF_TYPE.values(),
        UnknownEvent,
        ConnectorEvent,
        SessionReconnected,
        SessionStalled,
        SessionLost,
        WebSocketError,
        HttpResponse,
    )
}


def event_class_named(name: str) -> type[ServerEvent] | None:
    """The server event class a name stands for: a wire type (`response.output_audio.delta`,
    beta names too), its VoxEngine name (`ResponseOutputAudioDelta`, `ResponseAudioDelta`,
    `InputAudioBufferDTMFEventReceived`, `MCPListToolsCompleted`, `HTTPResponse`, `Unknown`,
    ...) or the gateway's class name (`AudioDelta`). None when it names none."""
    cls = _CLASS_OF_TYPE.get(name) or _SERVER_CLASSES.get(name)
    if cls is None and name.isalnum():
        cls = _BY_NAME.get(name.lower())
    return cls


def parse_server_event(obj: JsonObject) -> ServerEvent:
    """A typed event for a decoded server JSON object.

    Unknown types give `UnknownEvent`; a known type with bad fields raises ValueError.
    """
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ValueError("event has no string 'type'")
    eid = obj.get("event_id")
    parser = _PARSERS.get(kind)
    if parser is None:
        return UnknownEvent(kind, event_id=eid if isinstance(eid, str) else "", raw=obj)
    return parser(obj, eid if isinstance(eid, str) else "")


# --- client events (GA shape) ---------------------------------------------------------------------


def encode_append(audio: bytes) -> str:
    """JSON text of `input_audio_buffer.append` for raw `audio` bytes (base64 needs no escaping)."""
    return (
        '{"type":"input_audio_buffer.append","audio":"'
        + base64.b64encode(audio).decode("ascii")
        + '"}'
    )


def session_update(session: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "session.update", "session": dict(session)}


def input_audio_buffer_commit() -> dict[str, Any]:
    return {"type": "input_audio_buffer.commit"}


def input_audio_buffer_clear() -> dict[str, Any]:
    return {"type": "input_audio_buffer.clear"}


def output_audio_buffer_clear() -> dict[str, Any]:
    return {"type": "output_audio_buffer.clear"}


def conversation_item_create(
    item: Mapping[str, Any], previous_item_id: str | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "conversation.item.create", "item": dict(item)}
    if previous_item_id is not None:
        out["previous_item_id"] = previous_item_id
    return out


def conversation_item_retrieve(item_id: str) -> dict[str, Any]:
    return {"type": "conversation.item.retrieve", "item_id": item_id}


def conversation_item_truncate(item_id: str, audio_end_ms: int) -> dict[str, Any]:
    if audio_end_ms < 0:
        raise ValueError("audio_end_ms must be >= 0")
    return {
        "type": "conversation.item.truncate",
        "item_id": item_id,
        "content_index": 0,
        "audio_end_ms": int(audio_end_ms),
    }


def conversation_item_delete(item_id: str) -> dict[str, Any]:
    return {"type": "conversation.item.delete", "item_id": item_id}


def response_create(**response: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "response.create"}
    if response:
        out["response"] = response
    return out


def response_cancel(response_id: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "response.cancel"}
    if response_id is not None:
        out["response_id"] = response_id
    return out


def user_text_item(text: str) -> dict[str, Any]:
    """A user message item with one input_text part."""
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def assistant_text_item(text: str) -> dict[str, Any]:
    """An assistant message item with one output_text part (used to re-seed a new session)."""
    return {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text}],
    }


def function_call_output_item(call_id: str, output: str) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": output}


def function_tool(
    name: str, description: str = "", parameters: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A function tool definition for `SessionConfig.tools`."""
    return {
        "type": "function",
        "name": name,
        "description": description,
        "parameters": dict(parameters or {"type": "object", "properties": {}}),
    }


def texts_of(item: Mapping[str, Any]) -> Sequence[str]:
    """The text, transcript parts of a message item (for the conversation log)."""
    out: list[str] = []
    content = item.get("content")
    if isinstance(content, list):
        for part in content:
            if isinstance(part, Mapping):
                for key in ("text", "transcript"):
                    value = part.get(key)
                    if isinstance(value, str) and value:
                        out.append(value)
                        break
    return out

"""Sans-I/O engine of one local-provider session: the server side of the Realtime protocol.

Feed it client frames with `receive_text(frame, now)`; take the server events to send with
`events_to_send()` (JSON text frames, in order); arm one timer at `get_timer()` and call
`handle_timer(now)` when it fires. No sockets, no asyncio, no clock of its own.

Behaviour (OpenAI GA flavour; the `yandex` flavour differs as noted in `Flavor`):

* `session.created` first; `session.update` is validated whole (unknown fields give
  `invalid_request_error` / `unknown_parameter`), merged as a patch and answered with the full
  effective session in `session.updated`.
* Server VAD on the input stream (`vad.EnergyVad`): speech_started / speech_stopped / committed /
  conversation.item.added / done, then a response when `create_response`; speech during a
  response cancels it when `interrupt_response` (response.done cancelled, turn_detected).
* `response.create`: echoes exactly the user audio pending since the last response, in the output
  format; a DTMF text message (`gateway.realtime.dtmf`) becomes a function call to `end_call`
  (`#`) or `transfer_call({"target":"operator"})` (`0`) when those tools are offered, and `*N`
  (N = 1..9) into a call of the session's N-th tool, with its declared defaults as arguments
  (several `*N` pending for one response: that many function calls in it); after a
  function_call_output a short reply; with nothing pending, the greeting.
* Response events in OpenAI's order, audio deltas of `delta_ms` sent `speedup` times faster
  than real time.
* Bad input (bad JSON, unknown type, bad base64, oversized frame, unknown field) gets one
  `error` event; the session goes on.
"""

from __future__ import annotations

import base64
import binascii
import copy
import itertools
import json
import re
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import RealtimeError
from gateway.media.convert import convert, decode
from gateway.media.format import AudioFormat
from gateway.realtime.dtmf import parse_dtmf_text
from gateway.realtime.events import format_from_wire, format_to_wire, texts_of
from gateway.realtime.local.prompts import Prompts, chime_prompts
from gateway.realtime.local.vad import EnergyVad

__all__ = ["SPEECHKIT_VOICES", "EngineOptions", "Flavor", "LocalEngine"]

JsonDict = dict[str, Any]


#: SpeechKit voices (Yandex speech-realtime uses SpeechKit's voices)
SPEECHKIT_VOICES = frozenset(
    [
        "alena",
        "alexander",
        "anton",
        "dasha",
        "ermil",
        "filipp",
        "jane",
        "julia",
        "kirill",
        "lera",
        "madirus",
        "marina",
        "masha",
        "omazh",
        "zahar",
    ]
)


@dataclass(frozen=True)
class Flavor:
    """What differs between the providers the local engine imitates."""

    name: str = "openai"
    session_type: bool = True  # session objects carry `type: realtime`
    input_formats: frozenset[str] = frozenset({"audio/pcm", "audio/pcmu", "audio/pcma"})
    forced_output_rate: int | None = None  # yandex reports 44.1 kHz output whatever is asked
    default_voice: str = "marin"
    unsupported: frozenset[str] = frozenset({"output_audio_buffer.clear"})
    extra_input_fields: frozenset[str] = frozenset()
    extra_output_fields: frozenset[str] = frozenset()
    #: voice names accepted; None = any
    voices: frozenset[str] | None = None
    #: conversation.item.input_audio_transcription.completed carries `usage`
    transcription_usage: bool = True
    #: WebSocket upgrade: Authorization `Api-Key`/`Bearer` and a `gpt://FOLDER/MODEL` model URI
    yandex_handshake: bool = False


FLAVORS: Mapping[str, Flavor] = {
    "openai": Flavor(),
    "yandex": Flavor(
        name="yandex",
        session_type=False,
        input_formats=frozenset({"audio/pcm"}),
        forced_output_rate=44100,
        default_voice="marina",
        unsupported=frozenset({"input_audio_buffer.clear", "output_audio_buffer.clear"}),
        extra_input_fields=frozenset({"languages"}),
        extra_output_fields=frozenset({"role"}),
        voices=SPEECHKIT_VOICES,
        transcription_usage=False,
        yandex_handshake=True,
    ),
}


@dataclass
class EngineOptions:
    """Settings shared by all sessions of a local provider."""

    flavor: Flavor = field(default_factory=Flavor)
    model: str = "gpt-realtime"
    prompts: Prompts = field(default_factory=chime_prompts)
    delta_ms: int = 100
    speedup: float = 4.0
    max_event_bytes: int = 15 * 1024 * 1024
    max_buffer_ms: int = 5 * 60 * 1000
    #: test hook: keep every received text frame in `LocalEngine.received`, every sent one in
    #: `LocalEngine.sent`
    record_frames: bool = False
    #: test hook: requested format type -> format object put in the effective session instead
    substitute_formats: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: test hook: the server's copy of each assistant item holds this many ms less audio than
    #: was sent (pipecat#2106 saw 85 ms): a truncate at the audio received is refused
    short_item_ms: int = 0


#: `*N` on the keypad: call the session's N-th tool
_STAR_INDEX = re.compile(r"\*([0-9])")

_DEFAULT_VAD: JsonDict = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "idle_timeout_ms": None,
    "create_response": True,
    "interrupt_response": True,
}
_DEFAULT_SEMANTIC: JsonDict = {
    "type": "semantic_vad",
    "eagerness": "auto",
    "create_response": True,
    "interrupt_response": True,
}
# session.update fields: a dict is a nested object, None a leaf replaced whole
_SESSION_FIELDS: Mapping[str, Any] = {
    "type": None,
    "model": None,
    "instructions": None,
    "output_modalities": None,
    "tools": None,
    "tool_choice": None,
    "max_output_tokens": None,
    "tracing": None,
    "truncation": None,
    "include": None,
    "prompt": None,
    "parallel_tool_calls": None,
    "reasoning": None,
    "audio": {
        "input": {
            "format": None,
            "noise_reduction": None,
            "transcription": None,
            "turn_detection": None,
        },
        "output": {"format": None, "voice": None, "speed": None},
    },
}
_CLIENT_FIELDS: Mapping[str, frozenset[str]] = {
    "session.update": frozenset({"session"}),
    "input_audio_buffer.append": frozenset({"audio"}),
    "input_audio_buffer.commit": frozenset(),
    "input_audio_buffer.clear": frozenset(),
    "output_audio_buffer.clear": frozenset(),
    "conversation.item.create": frozenset({"item", "previous_item_id"}),
    "conversation.item.retrieve": frozenset({"item_id"}),
    "conversation.item.truncate": frozenset({"item_id", "content_index", "audio_end_ms"}),
    "conversation.item.delete": frozenset({"item_id"}),
    "response.create": frozenset({"response"}),
    "response.cancel": frozenset({"response_id"}),
}
_VAD_FIELDS = {
    "server_vad": frozenset(_DEFAULT_VAD),
    "semantic_vad": frozenset(_DEFAULT_SEMANTIC),
}


class _Bad(RealtimeError):
    """A client event to answer with an `error` event."""

    def __init__(
        self,
        code: str,
        message: str,
        param: str | None = None,
        error_type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.error_type = error_type


@dataclass
class _Item:
    id: str
    item: JsonDict  # the item as reported to the client (no audio data)
    audio: bytes = b""  # pending user audio (input format), until answered
    audio_ms: int = 0  # assistant audio length, for truncation


@dataclass
class _Response:
    id: str
    item_id: str
    chunks: list[bytes]
    transcript: str
    next_at: float
    started_at: float
    sent: int = 0
    sent_ms: float = 0.0
    audio_ms: float = 0.0


class LocalEngine:
    """One session of the local provider. See the module docstring for the contract."""

    _ids = itertools.count(1)

    def __init__(self, options: EngineOptions, now: float) -> None:
        self.options = options
        self.flavor = options.flavor
        self.stats: Counter[str] = Counter()
        self.session_id = f"sess_local{next(self._ids)}"
        self._out: list[str] = []
        self._n = itertools.count(1)
        self.session = self._initial_session()
        self._items: OrderedDict[str, _Item] = OrderedDict()
        self._last_item_id: str | None = None
        self._pending: list[str] = []  # unanswered user / function_call_output item ids
        self._dtmf_keys = ""  # a `*` waiting for its tool index
        self._buffer = bytearray()
        self._buffer_start_ms = 0.0
        self._stream_pos = 0.0  # ms of input appended this session
        self._speech_item: str | None = None
        self._speech_start_ms = 0
        self._response: _Response | None = None
        self._idle_deadline: float | None = None
        self.closed = False
        self.received: list[str] | None = [] if options.record_frames else None
        self.sent: list[str] | None = [] if options.record_frames else None
        self._apply_formats()
        self._emit({"type": "session.created", "session": self._public_session()})

    # --- helpers -------------------------------------------------------------------------------

    def _id(self, prefix: str) -> str:
        return f"{prefix}_{self.session_id[5:]}x{next(self._n)}"

    def _emit(self, event: JsonDict) -> None:
        event = {"event_id": self._id("event"), **event}
        self._out.append(json.dumps(event))
        self.stats["sent:" + event["type"]] += 1

    def _error(self, bad: _Bad, client_event_id: str | None = None) -> None:
        self.stats["errors"] += 1
        self.stats["error:" + bad.code] += 1
        self._emit(
            {
                "type": "error",
                "error": {
                    "type": bad.error_type,
                    "code": bad.code,
                    "message": bad.message,
                    "param": bad.param,
                    "event_id": client_event_id,
                },
            }
        )

    def events_to_send(self) -> list[str]:
        """Server events (JSON text) produced since the last call, in order."""
        out, self._out = self._out, []
        if self.sent is not None:
            self.sent += out
        return out

    # --- session -------------------------------------------------------------------------------

    def _initial_session(self) -> JsonDict:
        out_rate = self.flavor.forced_output_rate or 24000
        session: JsonDict = {
            "type": "realtime",
            "model": self.options.model,
            "output_modalities": ["audio"],
            "instructions": "",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "noise_reduction": None,
                    "transcription": None,
                    "turn_detection": dict(_DEFAULT_VAD),
                },
                "output": {
                    "format": {"type": "audio/pcm", "rate": out_rate},
                    "voice": self.flavor.default_voice,
                    "speed": 1.0,
                },
            },
            "tools": [],
            "tool_choice": "auto",
            "max_output_tokens": "inf",
            "truncation": "auto",
        }
        if not self.flavor.session_type:
            del session["type"]
        return session

    def _public_session(self) -> JsonDict:
        return copy.deepcopy(self.session)

    @property
    def conversation(self) -> list[JsonDict]:
        """The items of the conversation in order, as reported to the client (a copy)."""
        return [copy.deepcopy(item.item) for item in self._items.values()]

    @property
    def input_format(self) -> AudioFormat:
        return self._in_fmt

    @property
    def output_format(self) -> AudioFormat:
        return self._out_fmt

    @property
    def turn_detection(self) -> JsonDict | None:
        td = self.session["audio"]["input"]["turn_detection"]
        return td if isinstance(td, dict) else None

    def _apply_formats(self) -> None:
        audio = self.session["audio"]
        self._in_fmt = format_from_wire(audio["input"]["format"])
        self._out_fmt = format_from_wire(audio["output"]["format"])
        self._in_bpms = self._in_fmt.bytes_per_ms
        self._sample_bytes = self._in_fmt.bytes_per_sample
        td = self.turn_detection
        self._vad: EnergyVad | None = None
        if td is not None:
            self._vad = EnergyVad(
                self._in_fmt.rate,
                threshold=float(td.get("threshold") or 0.5),
                prefix_padding_ms=int(td.get("prefix_padding_ms") or 300),
                silence_duration_ms=int(td.get("silence_duration_ms") or 500),
                start_ms=int(self._stream_ms()),
            )

    def _stream_ms(self) -> float:
        return self._stream_pos

    def _check_fields(
        self,
        patch: Mapping[str, Any],
        schema: Mapping[str, Any],
        path: str,
        extra: Mapping[str, frozenset[str]],
    ) -> None:
        for key, value in patch.items():
            allowed = set(schema) | extra.get(path, frozenset())
            if key not in allowed:
                raise _Bad(
                    "unknown_parameter", f"Unknown parameter: '{path}.{key}'.", f"{path}.{key}"
                )
            sub = schema.get(key)
            if isinstance(sub, Mapping):
                if not isinstance(value, Mapping):
                    raise _Bad(
                        "invalid_type", f"'{path}.{key}' must be an object.", f"{path}.{key}"
                    )
                self._check_fields(value, sub, f"{path}.{key}", extra)

    def _format_value(self, value: object, param: str, output: bool) -> JsonDict:
        if not isinstance(value, Mapping):
            raise _Bad("invalid_type", f"'{param}' must be an object.", param)
        unknown = set(value) - {"type", "rate"}
        if unknown:
            name = sorted(unknown)[0]
            raise _Bad(
                "unknown_parameter", f"Unknown parameter: '{param}.{name}'.", f"{param}.{name}"
            )
        kind = value.get("type")
        if kind not in self.flavor.input_formats:
            raise _Bad(
                "invalid_value",
                f"Invalid value: '{kind}'. Supported values are: "
                + ", ".join(f"'{k}'" for k in sorted(self.flavor.input_formats))
                + ".",
                f"{param}.type",
            )
        fmt: JsonDict = {"type": kind}
        if kind == "audio/pcm":
            rate = value.get("rate", 24000)
            if rate != 24000:
                raise _Bad(
                    "invalid_value",
                    f"Invalid value: {rate}. Supported values are: 24000.",
                    f"{param}.rate",
                )
            fmt["rate"] = 24000
            if output and self.flavor.forced_output_rate:
                fmt["rate"] = self.flavor.forced_output_rate
        sub = self.options.substitute_formats.get(str(kind))
        return dict(sub) if sub is not None else fmt

    def _voice_value(self, value: object, param: str) -> object:
        voices = self.flavor.voices
        if voices is not None and value not in voices:
            raise _Bad(
                "invalid_value",
                f"Invalid value: '{value}'. Supported values are: "
                + ", ".join(f"'{v}'" for v in sorted(voices))
                + ".",
                param,
            )
        return value

    def _turn_detection_value(self, value: object) -> JsonDict | None:
        param = "session.audio.input.turn_detection"
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise _Bad("invalid_type", f"'{param}' must be an object or null.", param)
        kind = value.get("type")
        if kind not in _VAD_FIELDS:
            raise _Bad(
                "invalid_value",
                f"Invalid value: '{kind}'. Supported values are: 'server_vad' and 'semantic_vad'.",
                f"{param}.type",
            )
        for key in value:
            if key not in _VAD_FIELDS[str(kind)]:
                raise _Bad(
                    "unknown_parameter", f"Unknown parameter: '{param}.{key}'.", f"{param}.{key}"
                )
        threshold = value.get("threshold", 0.5)
        if kind == "server_vad" and (
            not isinstance(threshold, int | float) or not 0.0 <= threshold <= 1.0
        ):
            raise _Bad("invalid_value", "threshold must be between 0 and 1.", f"{param}.threshold")
        base = _DEFAULT_VAD if kind == "server_vad" else _DEFAULT_SEMANTIC
        return {**base, **value}

    def _session_update(self, event: Mapping[str, Any]) -> None:
        patch = event.get("session")
        if not isinstance(patch, Mapping):
            raise _Bad(
                "missing_required_parameter", "Missing required parameter: 'session'.", "session"
            )
        extra = {
            "session.audio.input": self.flavor.extra_input_fields,
            "session.audio.output": self.flavor.extra_output_fields,
        }
        self._check_fields(patch, _SESSION_FIELDS, "session", extra)
        if self.flavor.session_type:
            if "type" not in patch:
                raise _Bad(
                    "missing_required_parameter",
                    "Missing required parameter: 'session.type'.",
                    "session.type",
                )
            if patch["type"] != "realtime":
                raise _Bad(
                    "invalid_value", "Only session.type 'realtime' is served here.", "session.type"
                )
        # validate everything before changing anything
        new = copy.deepcopy(self.session)
        for key, value in patch.items():
            if key == "audio":
                for side in ("input", "output"):
                    for k, v in (value.get(side) or {}).items():
                        param = f"session.audio.{side}.{k}"
                        if k == "format":
                            v = self._format_value(v, param, output=side == "output")
                        elif k == "turn_detection":
                            v = self._turn_detection_value(v)
                        elif k == "voice":
                            v = self._voice_value(v, param)
                        new["audio"][side][k] = v
            elif key == "tools":
                if not isinstance(value, list) or not all(isinstance(t, Mapping) for t in value):
                    raise _Bad(
                        "invalid_type",
                        "'session.tools' must be an array of objects.",
                        "session.tools",
                    )
                new[key] = [dict(t) for t in value]
            elif key == "output_modalities":
                if not isinstance(value, list) or not set(value) <= {"audio", "text"}:
                    raise _Bad(
                        "invalid_value",
                        "output_modalities must be ['audio'] or ['text'].",
                        "session.output_modalities",
                    )
                new[key] = list(value)
            elif key == "type":
                continue
            else:
                new[key] = value
        if not self.flavor.session_type:
            new.pop("type", None)
        old_in = self.session["audio"]["input"]["format"]
        self.session = new
        if new["audio"]["input"]["format"] != old_in:
            self._buffer.clear()  # buffered audio is in the old format
            self._buffer_start_ms = self._stream_ms()
            self._speech_item = None
        self._apply_formats()
        self.stats["session_updates"] += 1
        self._emit({"type": "session.updated", "session": self._public_session()})
        if "tools" in patch:
            # An MCP server tool is listed when declared; this provider reaches no MCP server,
            # so the listing fails (as it does at OpenAI when the server cannot be reached).
            for tool in new["tools"]:
                if tool.get("type") == "mcp":
                    item_id = self._id("mcpl")
                    self._emit({"type": "mcp_list_tools.in_progress", "item_id": item_id})
                    self._emit({"type": "mcp_list_tools.failed", "item_id": item_id})

    # --- input ---------------------------------------------------------------------------------

    def receive_text(self, data: str | bytes, now: float) -> None:
        """Handle one client frame (text; a binary frame is an error)."""
        self.stats["frames"] += 1
        if self.received is not None and isinstance(data, str):
            self.received.append(data)
        client_event_id: str | None = None
        try:
            if isinstance(data, bytes):
                raise _Bad("invalid_frame", "Binary frames are not supported; send JSON text.")
            if len(data) > self.options.max_event_bytes:
                raise _Bad(
                    "message_too_large",
                    f"Message of {len(data)} bytes exceeds {self.options.max_event_bytes}.",
                )
            try:
                event = json.loads(data)
            except ValueError:
                raise _Bad("invalid_json", "The message is not valid JSON.") from None
            if not isinstance(event, dict):
                raise _Bad("invalid_json", "The message must be a JSON object.")
            eid = event.get("event_id")
            client_event_id = eid if isinstance(eid, str) else None
            kind = event.get("type")
            if not isinstance(kind, str) or kind not in _CLIENT_FIELDS:
                raise _Bad(
                    "invalid_value",
                    f"Invalid value: '{kind}'. Supported values are: "
                    + ", ".join(f"'{k}'" for k in _CLIENT_FIELDS)
                    + ".",
                    "type",
                )
            self.stats["recv:" + kind] += 1
            for key in event:
                if key not in ("type", "event_id") and key not in _CLIENT_FIELDS[kind]:
                    raise _Bad("unknown_parameter", f"Unknown parameter: '{key}'.", key)
            if kind in self.flavor.unsupported:
                raise _Bad(
                    "unsupported_event", f"'{kind}' is not supported by this provider.", "type"
                )
            self._dispatch(kind, event, now)
        except _Bad as bad:
            self._error(bad, client_event_id)

    def _dispatch(self, kind: str, event: JsonDict, now: float) -> None:
        if kind == "input_audio_buffer.append":
            self._append(event, now)
        elif kind == "session.update":
            self._session_update(event)
        elif kind == "input_audio_buffer.commit":
            self._commit(now, manual=True)
        elif kind == "input_audio_buffer.clear":
            self._buffer.clear()
            self._buffer_start_ms = self._stream_ms()
            self._speech_item = None
            self._emit({"type": "input_audio_buffer.cleared"})
        elif kind == "conversation.item.create":
            self._item_create(event)
        elif kind == "conversation.item.retrieve":
            item = self._get_item(event)
            self._emit({"type": "conversation.item.retrieved", "item": copy.deepcopy(item.item)})
        elif kind == "conversation.item.delete":
            item = self._get_item(event)
            del self._items[item.id]
            if item.id in self._pending:
                self._pending.remove(item.id)
            self._emit({"type": "conversation.item.deleted", "item_id": item.id})
        elif kind == "conversation.item.truncate":
            self._truncate(event)
        elif kind == "response.create":
            if self._response is not None:
                raise _Bad(
                    "conversation_already_has_active_response",
                    f"Conversation already has an active response in progress: "
                    f"{self._response.id}. Wait until the response is finished before "
                    "creating a new one.",
                )
            self._create_response(now)
        elif kind == "response.cancel":
            rid = event.get("response_id")
            if self._response is None or (rid is not None and rid != self._response.id):
                raise _Bad(
                    "response_cancel_not_active", "Cancellation failed: no active response found."
                )
            self._finish_response(now, cancelled="client_cancelled")
        else:  # pragma: no cover - every type in _CLIENT_FIELDS is handled above
            raise _Bad("invalid_value", f"Unhandled event type '{kind}'.", "type")

    def _append(self, event: Mapping[str, Any], now: float) -> None:
        audio = event.get("audio")
        if not isinstance(audio, str):
            raise _Bad(
                "missing_required_parameter", "Missing required parameter: 'audio'.", "audio"
            )
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise _Bad("invalid_value", "Invalid 'audio': not valid base64.", "audio") from None
        if len(data) % self._sample_bytes:
            raise _Bad("invalid_value", "Invalid 'audio': not a whole number of samples.", "audio")
        if not data:
            return
        self.stats["appended_bytes"] += len(data)
        self._buffer += data
        self._stream_pos += len(data) / self._in_bpms
        if self._vad is None:
            over = len(self._buffer) - int(self.options.max_buffer_ms * self._in_bpms)
            if over > 0:
                over -= over % self._sample_bytes
                del self._buffer[:over]
                self._buffer_start_ms += over / self._in_bpms
            return
        for vad_event in self._vad.process(decode(data, self._in_fmt)):
            if vad_event.kind == "started":
                self._speech_started(vad_event.at_ms, now)
            else:
                self._speech_stopped(vad_event.at_ms, now)
        if self._speech_item is None:
            # keep only the prefix padding while nobody speaks
            td = self.turn_detection or {}
            keep_ms = float(td.get("prefix_padding_ms") or 300)
            self._trim_buffer_to(self._stream_ms() - keep_ms)

    def _trim_buffer_to(self, start_ms: float) -> None:
        drop = int((start_ms - self._buffer_start_ms) * self._in_bpms)
        drop -= drop % self._sample_bytes
        if drop > 0:
            del self._buffer[:drop]
            self._buffer_start_ms += drop / self._in_bpms

    def _speech_started(self, audio_start_ms: int, now: float) -> None:
        self._trim_buffer_to(audio_start_ms)
        self._speech_item = self._id("item")
        self._speech_start_ms = audio_start_ms
        self._idle_deadline = None
        self.stats["speech_started"] += 1
        self._emit(
            {
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": audio_start_ms,
                "item_id": self._speech_item,
            }
        )
        td = self.turn_detection or {}
        if self._response is not None and td.get("interrupt_response", True):
            self._finish_response(now, cancelled="turn_detected")

    def _speech_stopped(self, audio_end_ms: int, now: float) -> None:
        item_id = self._speech_item or self._id("item")
        self.stats["speech_stopped"] += 1
        self._emit(
            {
                "type": "input_audio_buffer.speech_stopped",
                "audio_end_ms": audio_end_ms,
                "item_id": item_id,
            }
        )
        end = int((audio_end_ms - self._buffer_start_ms) * self._in_bpms)
        end -= end % self._sample_bytes
        audio = bytes(self._buffer[:end])
        del self._buffer[:end]
        self._buffer_start_ms += end / self._in_bpms
        self._speech_item = None
        self._commit_item(item_id, audio)
        td = self.turn_detection or {}
        if td.get("create_response", True) and self._response is None:
            self._create_response(now)

    def _commit(self, now: float, manual: bool) -> None:
        audio = bytes(self._buffer)
        if len(audio) < 100 * self._in_bpms:
            raise _Bad(
                "input_audio_buffer_commit_empty",
                f"Error committing input audio buffer: buffer too small. Expected at least "
                f"100ms of audio, but buffer only has {len(audio) / self._in_bpms:.2f}ms "
                "of audio.",
            )
        self._buffer.clear()
        self._buffer_start_ms = self._stream_ms()
        item_id = self._speech_item or self._id("item")
        self._speech_item = None
        self._commit_item(item_id, audio)

    def _commit_item(self, item_id: str, audio: bytes) -> None:
        previous = self._last_item_id
        self.stats["committed"] += 1
        self._emit(
            {
                "type": "input_audio_buffer.committed",
                "item_id": item_id,
                "previous_item_id": previous,
            }
        )
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        self._add_item(_Item(item_id, item, audio=audio), previous)
        self._pending.append(item_id)
        if self.session["audio"]["input"].get("transcription"):
            ms = len(audio) / self._in_bpms
            done: JsonDict = {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item_id,
                "content_index": 0,
                "transcript": f"[caller: {ms / 1000:.1f} s]",
            }
            if self.flavor.transcription_usage:
                done["usage"] = {"type": "duration", "seconds": round(ms / 1000, 3)}
            self._emit(done)

    def _add_item(self, item: _Item, previous: str | None) -> None:
        self._items[item.id] = item
        self._last_item_id = item.id
        for kind in ("conversation.item.added", "conversation.item.done"):
            self._emit(
                {"type": kind, "previous_item_id": previous, "item": copy.deepcopy(item.item)}
            )
        while len(self._items) > 256:
            old, _ = self._items.popitem(last=False)
            if old in self._pending:
                self._pending.remove(old)

    def _item_create(self, event: Mapping[str, Any]) -> None:
        item = event.get("item")
        if not isinstance(item, Mapping):
            raise _Bad("missing_required_parameter", "Missing required parameter: 'item'.", "item")
        kind = item.get("type")
        item_id = item.get("id")
        if item_id is not None and (not isinstance(item_id, str) or item_id in self._items):
            raise _Bad("invalid_value", "Item id must be a new unique string.", "item.id")
        new: JsonDict = {"id": item_id or self._id("item"), "object": "realtime.item"}
        if kind == "message":
            role = item.get("role")
            content = item.get("content")
            if role not in ("user", "assistant", "system"):
                raise _Bad("invalid_value", f"Invalid value: '{role}'.", "item.role")
            if not isinstance(content, list) or not all(isinstance(c, Mapping) for c in content):
                raise _Bad(
                    "missing_required_parameter",
                    "Missing required parameter: 'item.content'.",
                    "item.content",
                )
            new.update(
                type="message", status="completed", role=role, content=[dict(c) for c in content]
            )
        elif kind == "function_call_output":
            call_id, output = item.get("call_id"), item.get("output")
            if not isinstance(call_id, str) or not isinstance(output, str):
                raise _Bad(
                    "missing_required_parameter",
                    "function_call_output needs string 'call_id' and 'output'.",
                    "item.call_id",
                )
            new.update(type="function_call_output", call_id=call_id, output=output)
        elif kind == "function_call":
            new.update(
                type="function_call",
                status="completed",
                call_id=str(item.get("call_id") or ""),
                name=str(item.get("name") or ""),
                arguments=str(item.get("arguments") or ""),
            )
        else:
            raise _Bad(
                "invalid_value",
                f"Invalid value: '{kind}'. Supported values are: "
                "'message', 'function_call' and 'function_call_output'.",
                "item.type",
            )
        self._add_item(_Item(new["id"], new), self._last_item_id)
        if kind == "function_call_output" or new.get("role") == "user":
            self._pending.append(new["id"])

    def _get_item(self, event: Mapping[str, Any]) -> _Item:
        item_id = event.get("item_id")
        if not isinstance(item_id, str):
            raise _Bad(
                "missing_required_parameter", "Missing required parameter: 'item_id'.", "item_id"
            )
        item = self._items.get(item_id)
        if item is None:
            raise _Bad("item_not_found", f"Item with item_id not found: {item_id}.", "item_id")
        return item

    def _truncate(self, event: Mapping[str, Any]) -> None:
        item = self._get_item(event)
        end = event.get("audio_end_ms")
        if isinstance(end, bool) or not isinstance(end, int) or end < 0:
            raise _Bad(
                "invalid_value", "'audio_end_ms' must be a non-negative integer.", "audio_end_ms"
            )
        if event.get("content_index", 0) != 0:
            raise _Bad("invalid_value", "Only content_index 0 has audio.", "content_index")
        if item.item.get("role") != "assistant":
            raise _Bad("invalid_value", "Only assistant audio items can be truncated.", "item_id")
        if self._response is not None and self._response.item_id == item.id:
            available = max(0, int(self._response.sent_ms) - self.options.short_item_ms)
        else:
            available = item.audio_ms
        if end > available:
            raise _Bad(
                "invalid_value",
                f"Audio content of {available}ms is already shorter than {end}ms.",
                "audio_end_ms",
            )
        self.stats["truncated"] += 1
        item.audio_ms = end
        for part in item.item.get("content", []):
            if isinstance(part, dict) and "transcript" in part:
                part["transcript"] = ""
        self._emit(
            {
                "type": "conversation.item.truncated",
                "item_id": item.id,
                "content_index": 0,
                "audio_end_ms": end,
            }
        )

    # --- responses -----------------------------------------------------------------------------

    def _function_tools(self) -> list[Mapping[str, Any]]:
        return [
            t
            for t in self.session.get("tools") or []
            if isinstance(t, Mapping) and t.get("type", "function") == "function"
        ]

    def _tool_names(self) -> set[str]:
        return {str(t.get("name")) for t in self._function_tools()}

    def _star_calls(self, digits: str) -> list[tuple[str, str]]:
        """The function calls `*N` asks for (N: a 1-based index into the session's tools, with
        the tool's declared defaults as arguments); a trailing `*` waits for its digit."""
        keys = self._dtmf_keys + digits
        self._dtmf_keys = "*" if keys.endswith("*") else ""
        tools = self._function_tools()
        calls: list[tuple[str, str]] = []
        for index in _STAR_INDEX.findall(keys):
            if 1 <= int(index) <= len(tools):
                tool = tools[int(index) - 1]
                params = tool.get("parameters")
                props = params.get("properties") if isinstance(params, Mapping) else None
                args = {
                    str(k): v["default"]
                    for k, v in (props.items() if isinstance(props, Mapping) else ())
                    if isinstance(v, Mapping) and "default" in v
                }
                calls.append((str(tool.get("name")), json.dumps(args)))
        return calls

    def _response_object(
        self,
        rid: str,
        status: str,
        output: list[JsonDict],
        details: JsonDict | None = None,
        usage: JsonDict | None = None,
    ) -> JsonDict:
        return {
            "object": "realtime.response",
            "id": rid,
            "status": status,
            "status_details": details,
            "output": output,
            "conversation_id": "conv_" + self.session_id[5:],
            "output_modalities": ["audio"],
            "max_output_tokens": "inf",
            "audio": {
                "output": {
                    "format": format_to_wire(self._out_fmt),
                    "voice": self.session["audio"]["output"]["voice"],
                }
            },
            "usage": usage,
            "metadata": None,
        }

    def _create_response(self, now: float) -> None:
        self.stats["responses"] += 1
        pending = [self._items[i] for i in self._pending if i in self._items]
        self._pending.clear()
        self._idle_deadline = None
        tools = self._tool_names()
        pressed = [
            digits
            for item in pending
            if item.item.get("role") == "user"
            for text in texts_of(item.item)
            if (digits := parse_dtmf_text(text)) is not None
        ]
        for item in reversed(pending):
            if item.item.get("type") == "function_call_output":
                self._start_audio_response(now, "reply")
                return
            if item.item.get("role") == "user":
                for text in texts_of(item.item):
                    digits = parse_dtmf_text(text)
                    if digits is None:
                        continue
                    star = bool(self._dtmf_keys) or "*" in "".join(pressed)
                    calls = self._star_calls("".join(pressed))
                    if calls:
                        self._function_call(now, calls)
                        return
                    if not star and "#" in digits and "end_call" in tools:
                        self._function_call(now, [("end_call", "{}")])
                        return
                    if not star and "0" in digits and "transfer_call" in tools:
                        self._function_call(now, [("transfer_call", '{"target":"operator"}')])
                        return
                    self._start_audio_response(now, "dtmf")
                    return
        audio = b"".join(i.audio for i in pending if i.audio)
        for item in pending:
            item.audio = b""  # answered: free it
        if audio:
            echo = convert(audio, self._in_fmt, self._out_fmt)
            ms = len(audio) / self._in_bpms
            self._start_audio_response(now, None, echo, f"[echo of {ms / 1000:.1f} s]")
        elif pending:
            self._start_audio_response(now, "reply")
        else:
            self._start_audio_response(now, "greeting")

    def _start_audio_response(
        self, now: float, prompt: str | None, audio: bytes = b"", transcript: str = ""
    ) -> None:
        if prompt is not None:
            audio = self.options.prompts.audio(prompt, self._out_fmt)
            transcript = self.options.prompts.text(prompt)
        rid, item_id = self._id("resp"), self._id("item")
        step = int(self.options.delta_ms * self._out_fmt.bytes_per_ms)
        step -= step % self._out_fmt.bytes_per_sample
        chunks = [audio[i : i + step] for i in range(0, len(audio), step)]
        self._response = _Response(
            rid,
            item_id,
            chunks,
            transcript,
            next_at=now,
            started_at=now,
            audio_ms=len(audio) / self._out_fmt.bytes_per_ms,
        )
        self._emit(
            {"type": "response.created", "response": self._response_object(rid, "in_progress", [])}
        )
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        self._emit(
            {
                "type": "response.output_item.added",
                "response_id": rid,
                "output_index": 0,
                "item": item,
            }
        )
        self._emit(
            {
                "type": "response.content_part.added",
                "response_id": rid,
                "item_id": item_id,
                "output_index": 0,
                "content_index": 0,
                "part": {"type": "audio", "transcript": ""},
            }
        )
        self._send_deltas(now)

    def _send_deltas(self, now: float) -> None:
        resp = self._response
        if resp is None:
            return
        step_s = self.options.delta_ms / 1000 / self.options.speedup
        bpms = self._out_fmt.bytes_per_ms
        while resp.sent < len(resp.chunks) and resp.next_at <= now:
            chunk = resp.chunks[resp.sent]
            resp.sent += 1
            resp.sent_ms += len(chunk) / bpms
            self._emit(
                {
                    "type": "response.output_audio.delta",
                    "response_id": resp.id,
                    "item_id": resp.item_id,
                    "output_index": 0,
                    "content_index": 0,
                    "delta": base64.b64encode(chunk).decode("ascii"),
                }
            )
            resp.next_at += step_s
        if resp.sent >= len(resp.chunks):
            self._finish_response(now)

    def _finish_response(self, now: float, cancelled: str | None = None) -> None:
        resp = self._response
        if resp is None:
            return
        self._response = None
        base = {
            "response_id": resp.id,
            "item_id": resp.item_id,
            "output_index": 0,
            "content_index": 0,
        }
        transcript = "" if cancelled else resp.transcript
        self._emit({"type": "response.output_audio.done", **base})
        self._emit(
            {"type": "response.output_audio_transcript.done", **base, "transcript": transcript}
        )
        part = {"type": "audio", "transcript": transcript}
        self._emit({"type": "response.content_part.done", **base, "part": part})
        item = {
            "id": resp.item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "incomplete" if cancelled else "completed",
            "role": "assistant",
            "content": [{"type": "output_audio", "transcript": transcript}],
        }
        self._emit(
            {
                "type": "response.output_item.done",
                "response_id": resp.id,
                "output_index": 0,
                "item": item,
            }
        )
        held_ms = max(0, int(resp.sent_ms) - self.options.short_item_ms)
        self._items[resp.item_id] = _Item(resp.item_id, item, audio_ms=held_ms)
        self._last_item_id = resp.item_id
        out_tokens = int(resp.sent_ms / 50)
        usage = {"total_tokens": 10 + out_tokens, "input_tokens": 10, "output_tokens": out_tokens}
        if cancelled:
            self.stats["cancelled"] += 1
            self.stats["cancelled:" + cancelled] += 1
            details: JsonDict | None = {"type": "cancelled", "reason": cancelled}
        else:
            details = None
            td = self.turn_detection
            if td is not None and td.get("idle_timeout_ms"):
                remaining = max(0.0, resp.audio_ms / 1000 - (now - resp.started_at))
                self._idle_deadline = now + remaining + int(td["idle_timeout_ms"]) / 1000
        self._emit(
            {
                "type": "response.done",
                "response": self._response_object(
                    resp.id, "cancelled" if cancelled else "completed", [item], details, usage
                ),
            }
        )

    def _function_call(self, now: float, calls: list[tuple[str, str]]) -> None:
        """One response holding a function call per (name, arguments), in order."""
        rid = self._id("resp")
        self._emit(
            {"type": "response.created", "response": self._response_object(rid, "in_progress", [])}
        )
        output: list[JsonDict] = []
        for index, (name, arguments) in enumerate(calls):
            item_id, call_id = self._id("item"), self._id("call")
            self.stats["function_calls"] += 1
            item = {
                "id": item_id,
                "object": "realtime.item",
                "type": "function_call",
                "status": "in_progress",
                "name": name,
                "call_id": call_id,
                "arguments": "",
            }
            self._emit(
                {
                    "type": "response.output_item.added",
                    "response_id": rid,
                    "output_index": index,
                    "item": item,
                }
            )
            base = {
                "response_id": rid,
                "item_id": item_id,
                "output_index": index,
                "call_id": call_id,
            }
            self._emit(
                {"type": "response.function_call_arguments.delta", **base, "delta": arguments}
            )
            self._emit(
                {
                    "type": "response.function_call_arguments.done",
                    **base,
                    "name": name,
                    "arguments": arguments,
                }
            )
            done = {**item, "status": "completed", "arguments": arguments}
            self._emit(
                {
                    "type": "response.output_item.done",
                    "response_id": rid,
                    "output_index": index,
                    "item": done,
                }
            )
            self._items[item_id] = _Item(item_id, done)
            self._last_item_id = item_id
            output.append(done)
        self._emit(
            {
                "type": "response.done",
                "response": self._response_object(
                    rid,
                    "completed",
                    output,
                    None,
                    {"total_tokens": 20, "input_tokens": 10, "output_tokens": 10},
                ),
            }
        )

    def close(self) -> None:
        """The connection is gone: free buffered audio."""
        self._response = None
        self._idle_deadline = None
        self._buffer = bytearray()
        self._items.clear()
        self._pending.clear()
        self.closed = True

    # --- timers --------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When `handle_timer` must next be called (next audio delta, idle timeout), or None."""
        times = []
        if self._response is not None:
            times.append(self._response.next_at)
        if self._idle_deadline is not None:
            times.append(self._idle_deadline)
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        if self._response is not None:
            self._send_deltas(now)
        if self._idle_deadline is not None and now >= self._idle_deadline:
            self._idle_deadline = None
            if self._speech_item is None and self._response is None:
                end_ms = int(self._stream_ms())
                item_id = self._id("item")
                self.stats["timeouts"] += 1
                self._emit(
                    {
                        "type": "input_audio_buffer.timeout_triggered",
                        "audio_start_ms": int(self._buffer_start_ms),
                        "audio_end_ms": end_ms,
                        "item_id": item_id,
                    }
                )
                self._buffer.clear()
                self._buffer_start_ms = self._stream_ms()
                td = self.turn_detection or {}
                if td.get("create_response", True):
                    self._pending.clear()
                    self.stats["responses"] += 1
                    self._start_audio_response(now, "idle")

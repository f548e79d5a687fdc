"""What a new Realtime session is given when the old one is gone: the session configuration as
changed mid-call, and the conversation so far. Sans-I/O, no clock.

`SessionPatches` keeps every mid-call `session.update` by its event_id. The handshake of a
re-opened session (drop, stall, renewal) sends `merge_session(base, *patches)`: the patch rule
the provider applies itself (shared/reference/realtime-protocol.md; the openai SDK's
`RealtimeSessionCreateRequest`): a field sent replaces the earlier value (`tools`,
`instructions`, `turn_detection`, `transcription`... whole), except that the `audio` object and
its `input` and `output` objects merge field by field. A patch the provider refused (an
`error` naming its event_id) is forgotten, so it is not replayed where it would fail again.

`Conversation` keeps the conversation in order by item id, as re-seed items:

* the caller's words: a placeholder at `input_audio_buffer.committed` (its place in the
  conversation), filled by the input transcription when it completes; text the client added;
* the assistant's words from its transcript, cut to what the caller heard when the item was
  truncated (the heard share of the item's audio, back to a word boundary); an item deleted
  (barge-in before its first audio) is dropped;
* function calls (`function_call` items) and their outputs (`function_call_output`); an output
  is replayed only after its call (a provider refuses an output whose call it does not know).

Bounded by `max_chars` of text: the oldest entries go first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Conversation", "Entry", "SessionPatches", "cut_to_heard", "merge_session"]

#: objects of a GA session that a patch merges into, rather than replaces
_MERGED = {(): {"audio"}, ("audio",): {"input", "output"}}


def merge_session(base: Mapping[str, Any], *patches: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with each `session.update` patch applied in order, as the provider applies it."""
    out = _copy(base)
    for patch in patches:
        _merge_into(out, patch, ())
    return out


def _copy(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _copy(v) if isinstance(v, Mapping) else v for k, v in obj.items()}


def _merge_into(target: dict[str, Any], patch: Mapping[str, Any], path: tuple[str, ...]) -> None:
    merged = _MERGED.get(path, set())
    for key, value in patch.items():
        old = target.get(key)
        if key in merged and isinstance(value, Mapping) and isinstance(old, dict):
            _merge_into(old, value, (*path, key))
        else:
            target[key] = _copy(value) if isinstance(value, Mapping) else value


class SessionPatches:
    """Mid-call session patches by event_id; at most `max_kept` unfolded (older ones are
    folded into one, past any refusal that could still name them)."""

    def __init__(self, max_kept: int = 32) -> None:
        self.max_kept = max_kept
        self._folded: dict[str, Any] = {}
        self._patches: OrderedDict[str, Mapping[str, Any]] = OrderedDict()

    def __bool__(self) -> bool:
        return bool(self._folded or self._patches)

    def add(self, event_id: str, patch: Mapping[str, Any]) -> None:
        self._patches[event_id] = _copy(patch)
        while len(self._patches) > self.max_kept:
            _, old = self._patches.popitem(last=False)
            _merge_into(self._folded, old, ())

    def refused(self, event_id: str) -> bool:
        """The provider refused that update: forget it. True if it was one of ours."""
        return self._patches.pop(event_id, None) is not None

    def apply(self, base: Mapping[str, Any]) -> dict[str, Any]:
        """The session for a new connection: `base` with every patch kept, in order."""
        return merge_session(base, self._folded, *self._patches.values())


def cut_to_heard(text: str, heard_ms: int, audio_ms: int) -> str:
    """The part of an assistant transcript the caller heard: the `heard_ms / audio_ms` share
    of its characters, back to the last word boundary."""
    if audio_ms <= 0 or heard_ms >= audio_ms:
        return text
    if heard_ms <= 0:
        return ""
    n = len(text) * heard_ms // audio_ms
    if n < len(text) and not text[n].isspace():
        space = text.rfind(" ", 0, n + 1)
        n = space if space >= 0 else 0
    return text[:n].rstrip()


@dataclass(slots=True)
class Entry:
    """One item of the conversation. `kind`: user, assistant, function_call or
    function_call_output; `text`: the words, the call's arguments or the output."""

    kind: str
    text: str = ""
    call_id: str = ""
    name: str = ""
    heard_ms: int | None = None  # truncated at this (assistant audio)
    audio_ms: int = 0  # assistant audio received for it when last known

    def item(self) -> dict[str, Any] | None:
        """The item to re-seed with, or None when there is nothing to say."""
        if self.kind == "function_call":
            return {
                "type": "function_call",
                "call_id": self.call_id,
                "name": self.name,
                "arguments": self.text or "{}",
            }
        if self.kind == "function_call_output":
            return {"type": "function_call_output", "call_id": self.call_id, "output": self.text}
        text = self.text
        if self.kind == "assistant" and self.heard_ms is not None:
            text = cut_to_heard(text, self.heard_ms, self.audio_ms)
        text = text.strip()
        if not text:
            return None
        if self.kind == "assistant":
            return {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text}],
            }
        part = {"type": "input_text", "text": text}
        return {"type": "message", "role": "user", "content": [part]}


class Conversation:
    """The conversation of a session, kept for re-seeding the next one (module docstring)."""

    def __init__(self, max_chars: int = 20000, max_entries: int = 512) -> None:
        self.max_chars = max_chars
        self.max_entries = max_entries
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._chars = 0
        self._anon = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _key(self, item_id: str | None) -> str:
        if item_id:
            return item_id
        self._anon += 1
        return f"_local{self._anon}"

    def _entry(self, item_id: str | None, kind: str) -> Entry:
        key = self._key(item_id)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = Entry(kind)
            if len(self._entries) > self.max_entries:
                _, old = self._entries.popitem(last=False)
                self._chars -= len(old.text)
        return entry

    def _set_text(self, entry: Entry, text: str) -> None:
        self._chars += len(text) - len(entry.text)
        entry.text = text
        while self._chars > self.max_chars and self._entries:
            _, old = self._entries.popitem(last=False)
            self._chars -= len(old.text)

    # --- what happened ----------------------------------------------------------------------

    def user_turn(self, item_id: str) -> None:
        """A committed user audio turn: its place; the words come with its transcription."""
        self._entry(item_id, "user")

    def user_text(self, item_id: str | None, text: str) -> None:
        """The caller's words (input transcription, or a user text item the client added)."""
        self._set_text(self._entry(item_id, "user"), text.strip())

    def assistant_item(self, item_id: str) -> None:
        """An assistant message began (its place in the conversation)."""
        self._entry(item_id, "assistant")

    def assistant_text(self, item_id: str | None, text: str, audio_ms: int = 0) -> None:
        """The assistant's words (transcript or text) and the audio received for them."""
        entry = self._entry(item_id, "assistant")
        entry.audio_ms = max(entry.audio_ms, audio_ms)
        self._set_text(entry, text.strip())

    def truncated(self, item_id: str, heard_ms: int, audio_ms: int) -> None:
        """The caller heard `heard_ms` of the item's `audio_ms` received so far."""
        entry = self._entries.get(item_id)
        if entry is None:
            entry = self._entry(item_id, "assistant")
        entry.heard_ms = heard_ms
        entry.audio_ms = max(entry.audio_ms, audio_ms)

    def deleted(self, item_id: str) -> None:
        entry = self._entries.pop(item_id, None)
        if entry is not None:
            self._chars -= len(entry.text)

    def function_call(self, item_id: str | None, call_id: str, name: str, arguments: str) -> None:
        entry = self._entry(item_id, "function_call")
        entry.kind, entry.call_id, entry.name = "function_call", call_id, name
        self._set_text(entry, arguments)

    def function_output(self, item_id: str | None, call_id: str, output: str) -> None:
        entry = self._entry(item_id, "function_call_output")
        entry.call_id = call_id
        self._set_text(entry, output)

    def add_item(self, item: Mapping[str, Any], text: str) -> None:
        """A `conversation.item.create` the client sent (`text`: its words, if a message)."""
        kind = item.get("type")
        item_id = item.get("id") if isinstance(item.get("id"), str) else None
        if kind == "message":
            if item.get("role") == "assistant":
                self.assistant_text(item_id, text)
            else:
                self.user_text(item_id, text)
        elif kind == "function_call_output":
            self.function_output(item_id, str(item.get("call_id") or ""), str(item.get("output")))
        elif kind == "function_call":
            self.function_call(
                item_id,
                str(item.get("call_id") or ""),
                str(item.get("name") or ""),
                str(item.get("arguments") or ""),
            )

    # --- what a new session is given --------------------------------------------------------

    def entries(self) -> Iterator[Entry]:
        return iter(list(self._entries.values()))

    def items(self) -> list[dict[str, Any]]:
        """The re-seed items, in conversation order: messages with something to say, calls,
        and the outputs of calls that are replayed."""
        out: list[dict[str, Any]] = []
        calls: set[str] = set()
        for entry in self._entries.values():
            if entry.kind == "function_call":
                calls.add(entry.call_id)
            elif entry.kind == "function_call_output" and entry.call_id not in calls:
                continue
            item = entry.item()
            if item is not None:
                out.append(item)
        return out

"""The default scenario, written with the public scenario API only.

* Greeting: the model speaks first (`response.create` once the call is connected).
* Barge-in on `input_audio_buffer.speech_started`: drop queued bot audio at once, truncate the
  playing item at the milliseconds the caller actually heard, and cancel the response only when
  the server does not (`interrupt_response` false). Late deltas of that response are ignored.
* `output_audio_buffer.cleared/started/stopped` (servers that send them) stop/resume media.
* DTMF (RFC 4733, SIP INFO, in-band, data channel, provider) is reported to the model as a user
  text message under the `DTMF: <digits>` convention, and a response is asked for.
* Tools: `end_call`, `transfer_call(target)`, `send_dtmf(digits)`.
* Provider failure mid-call: the client re-opens a dropped session (within its reconnect
  budget); if the session is lost, an apology prompt is played and the call ends
  (`on_session_lost`).
* A stalled provider (no event for `--provider-stall-timeout` while a response is awaited): a
  short holding prompt while the client re-opens the session, then a response is asked for so
  the model picks the conversation up (`hold_on_stall`).
* A response that failed (`response.done` status `failed`, or `incomplete` for a reason other
  than `max_output_tokens`/`content_filter`) is asked for once more; a second failure in a row
  gets the apology and the call ends with outcome `response_failed` (`retry_failed_responses`).
  Cancelled responses (barge-in) are not failures; responses cut by `max_output_tokens` or
  `content_filter` are counted and logged by the client but not retried.

Each of the last three is installed by its own function, so a scenario that calls
`setup(call)` can remove one with `call.realtime.off(EventClass)` (`rt.SessionLost`,
`rt.SessionStalled` and `rt.SessionReconnected`, `rt.ResponseDone`) and install its own.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from gateway import metrics
from gateway.call.call import Call
from gateway.call.events import CallConnected, DtmfReceived
from gateway.call.prompts import apology_prompt, holding_prompt
from gateway.realtime import events as rt
from gateway.realtime.dtmf import dtmf_text

TOOLS: tuple[dict[str, Any], ...] = (
    {
        "type": "function",
        "name": "end_call",
        "description": "End the phone call. Say goodbye first; the line is closed after it.",
        "parameters": {"type": "object", "properties": {}},
    },
    {
        "type": "function",
        "name": "transfer_call",
        "description": "Transfer the caller to a person or department by name.",
        "parameters": {
            "type": "object",
            "properties": {"target": {"type": "string", "description": "e.g. operator"}},
            "required": ["target"],
        },
    },
    {
        "type": "function",
        "name": "send_dtmf",
        "description": "Send DTMF tones (0-9, *, #) to the caller's line.",
        "parameters": {
            "type": "object",
            "properties": {"digits": {"type": "string"}},
            "required": ["digits"],
        },
    },
)


def setup(call: Call) -> None:
    """Install the default behaviour on `call`."""

    def on_connected(_: CallConnected) -> None:
        if call.options.greeting:
            call.realtime.response_create_when_idle()

    def on_speech_started(_: rt.SpeechStarted) -> None:
        call.barge_in()

    def on_unknown(ev: rt.UnknownEvent) -> None:
        # output_audio_buffer.* is sent by servers that own playout (WebRTC/SIP transports).
        if ev.type == "output_audio_buffer.cleared":
            call.clear_media_buffer()
        elif ev.type == "output_audio_buffer.started":
            call.send_media_to("caller")

    def on_dtmf(ev: DtmfReceived) -> None:
        call.realtime.add_user_text(dtmf_text(ev.digit))
        call.realtime.response_create_when_idle()

    def on_provider_dtmf(ev: rt.DtmfReceived) -> None:
        call.leg_event(DtmfReceived(ev.digit, "provider"))

    async def on_function_call(ev: rt.FunctionCallArgumentsDone) -> None:
        try:
            args = json.loads(ev.arguments or "{}")
            if not isinstance(args, dict):
                raise ValueError("arguments must be a JSON object")
        except ValueError as exc:
            _tool_result(call, ev, "bad_arguments", {"error": f"bad arguments: {exc}"})
            return
        if ev.name == "end_call":
            _tool_result(call, ev, "ok", {"ok": True, "result": "the call will end after goodbye"})
            call.spawn(call.hangup_after_playout("completed", call.options.goodbye_timeout_s))
        elif ev.name == "transfer_call":
            target = str(args.get("target", ""))
            if target not in call.options.transfer_targets:
                known = sorted(call.options.transfer_targets)
                _tool_result(
                    call,
                    ev,
                    "unknown_target",
                    {"ok": False, "error": f"unknown target {target!r}", "known": known},
                )
                return
            call.spawn(_transfer(call, ev, target))
        elif ev.name == "send_dtmf":
            digits = str(args.get("digits", ""))
            try:
                call.send_dtmf(digits)
            except ValueError as exc:
                _tool_result(call, ev, "bad_arguments", {"ok": False, "error": str(exc)})
                return
            _tool_result(call, ev, "ok", {"ok": True, "sent": digits})
        else:
            call.spawn(_unknown_tool(call, ev))

    call.on(CallConnected, on_connected)
    call.realtime.on(rt.SpeechStarted, on_speech_started)
    call.realtime.on(rt.UnknownEvent, on_unknown)
    call.on(DtmfReceived, on_dtmf)
    call.realtime.on(rt.DtmfReceived, on_provider_dtmf)
    call.realtime.on(rt.FunctionCallArgumentsDone, on_function_call)
    apologise_on_session_lost(call)
    hold_on_stall(call)
    retry_failed_responses(call)


async def apologise_and_hang_up(call: Call, outcome: str) -> None:
    """Play the apology after whatever is queued for the caller, then end the call."""
    await call.play(*apology_prompt())
    # Bot audio still queued ahead of the apology plays first; wait for all of it.
    timeout = call.playout.queued_ms / 1000 + 2.0
    await call.hangup_after_playout(outcome, timeout, wait_response=False)


def apologise_on_session_lost(call: Call) -> None:
    """The provider session is gone for good: apologise, then hang up (`provider_failed`)."""

    async def on_session_lost(_: rt.SessionLost) -> None:
        await apologise_and_hang_up(call, "provider_failed")

    call.realtime.on(rt.SessionLost, on_session_lost)


def hold_on_stall(call: Call) -> None:
    """A stalled provider: the caller hears a holding prompt while the session is re-opened;
    once it is, a response is asked for (the model answers the re-seeded conversation)."""

    async def on_stalled(_: rt.SessionStalled) -> None:
        await call.play(*holding_prompt())

    def on_reconnected(ev: rt.SessionReconnected) -> None:
        if ev.reason == "stalled":
            call.realtime.response_create_when_idle()

    call.realtime.on(rt.SessionStalled, on_stalled)
    call.realtime.on(rt.SessionReconnected, on_reconnected)


def retry_failed_responses(call: Call, retries: int = 1) -> None:
    """A response that failed is asked for again, up to `retries` times in a row; one more
    failure gets the apology and the call ends (`response_failed`). A completed response starts
    the count again. See `ResponseDone.failure` for what counts as failed."""
    failures = 0

    async def on_response_done(ev: rt.ResponseDone) -> None:
        nonlocal failures
        if ev.failure is None and ev.status == "completed":
            failures = 0
        if ev.failure != "failed":
            return
        failures += 1
        if failures <= retries:
            call.log.info("response_retried", status=ev.status, reason=ev.reason, retry=failures)
            call.realtime.response_create_when_idle()
            return
        call.log.warning("response_failed_hanging_up", status=ev.status, failures=failures)
        call.stop_media_to("model")  # no new turns while the apology plays
        await apologise_and_hang_up(call, "response_failed")

    call.realtime.on(rt.ResponseDone, on_response_done)


def _tool_result(
    call: Call,
    ev: rt.FunctionCallArgumentsDone,
    outcome: str,
    output: dict[str, Any],
    *,
    respond: bool = True,
) -> None:
    metrics.TOOL_CALLS.labels(
        name=metrics.bounded(ev.name, {"end_call", "transfer_call", "send_dtmf"}), outcome=outcome
    ).inc()
    call.stats["tool_calls"].append(f"{ev.name}:{outcome}")
    call.realtime.function_call_output(ev.call_id, output)
    if respond:
        call.realtime.response_create_when_idle()


async def _unknown_tool(call: Call, ev: rt.FunctionCallArgumentsDone) -> None:
    """A tool this scenario does not know: another handler may answer it; if none has within
    2 s, tell the model there is no such tool so it does not wait forever."""
    await asyncio.sleep(2.0)
    if not call.realtime.function_call_answered(ev.call_id):
        _tool_result(call, ev, "unknown_tool", {"ok": False, "error": f"no tool {ev.name!r}"})


async def _transfer(call: Call, ev: rt.FunctionCallArgumentsDone, target: str) -> None:
    ok = await call.transfer(target)
    if ok:
        _tool_result(call, ev, "ok", {"ok": True, "transferred_to": target}, respond=False)
        await call.hangup("transferred")
    else:
        _tool_result(call, ev, "failed", {"ok": False, "error": "transfer failed"})

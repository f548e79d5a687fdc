"""The default scenario, written with the public scenario API only.

* Greeting: the model speaks first (`response.create` once the call is connected).
* Barge-in on `input_audio_buffer.speech_started`: drop queued bot audio at once, truncate the
  playing item at the milliseconds the caller actually heard, and cancel the response only when
  the server does not (`interrupt_response` false). Late deltas of that response are ignored.
* `output_audio_buffer.cleared/started/stopped` (servers that send them) stop/resume media.
* DTMF (RFC 4733, SIP INFO, in-band, data channel, provider) is reported to the model as a user
  text message under the `DTMF: <digits>` convention, and a response is asked for.
* Tools: `end_call`, `transfer_call(target)`, `send_dtmf(digits)`, registered in the call's tool
  registry (`gateway.call.tools`) by `register_builtin_tools(call)`; a scenario replaces one by
  registering a tool of the same name, or drops it with `call.tools.remove(name)`.
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

from typing import Any

from gateway.call.call import Call
from gateway.call.events import CallConnected, DtmfReceived
from gateway.call.prompts import apology_prompt, holding_prompt
from gateway.call.tools import ToolContext, ToolResult, tool_error
from gateway.realtime import events as rt
from gateway.realtime.dtmf import dtmf_text

END_CALL: dict[str, Any] = {
    "description": "End the phone call. Say goodbye first; the line is closed after it.",
    "parameters": {"type": "object", "properties": {}},
}
TRANSFER_CALL: dict[str, Any] = {
    "description": "Transfer the caller to a person or department by name.",
    "parameters": {
        "type": "object",
        "properties": {"target": {"type": "string", "description": "e.g. operator"}},
        "required": ["target"],
    },
}
SEND_DTMF: dict[str, Any] = {
    "description": "Send DTMF tones (0-9, *, #) to the caller's line.",
    "parameters": {
        "type": "object",
        "properties": {"digits": {"type": "string"}},
        "required": ["digits"],
    },
}
#: a transfer waits up to 32 s for the far end's final NOTIFY
TRANSFER_TIMEOUT_S = 40.0

#: the built-in tools' declarations (the session's `tools` before the scenario runs)
TOOLS: tuple[dict[str, Any], ...] = tuple(
    rt.function_tool(name, str(spec["description"]), spec["parameters"])
    for name, spec in (
        ("end_call", END_CALL),
        ("transfer_call", TRANSFER_CALL),
        ("send_dtmf", SEND_DTMF),
    )
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

    call.on(CallConnected, on_connected)
    call.realtime.on(rt.SpeechStarted, on_speech_started)
    call.realtime.on(rt.UnknownEvent, on_unknown)
    call.on(DtmfReceived, on_dtmf)
    call.realtime.on(rt.DtmfReceived, on_provider_dtmf)
    register_builtin_tools(call)
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


def register_builtin_tools(call: Call) -> None:
    """`end_call`, `transfer_call(target)` and `send_dtmf(digits)` in the call's registry."""

    @call.tool("end_call", **END_CALL)
    async def end_call(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        return ToolResult(
            {"ok": True, "result": "the call will end after goodbye"},
            then=lambda: call.hangup_after_playout("completed", call.options.goodbye_timeout_s),
        )

    @call.tool("transfer_call", **TRANSFER_CALL, timeout_s=TRANSFER_TIMEOUT_S, holding=False)
    async def transfer_call(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        target = str(args.get("target", ""))
        if target not in call.options.transfer_targets:
            known = sorted(call.options.transfer_targets)
            error = tool_error("unknown_target", f"unknown target {target!r}", known=known)
            return ToolResult(error, "unknown_target")
        if not await call.transfer(target):
            return ToolResult(tool_error("failed", "transfer failed"), "failed")
        return ToolResult(
            {"ok": True, "transferred_to": target},
            respond=False,
            then=lambda: call.hangup("transferred"),
        )

    @call.tool("send_dtmf", **SEND_DTMF)
    async def send_dtmf(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        digits = str(args.get("digits", ""))
        try:
            call.send_dtmf(digits)
        except ValueError as exc:
            return ToolResult(tool_error("bad_arguments", str(exc)), "bad_arguments")
        return ToolResult({"ok": True, "sent": digits})

"""The scenario's tools: a registry, the context a tool gets, and the runner of function calls.

    @call.tool("order_status", description="...", parameters={...}, timeout_s=5)
    async def order_status(args: dict, ctx: ToolContext) -> dict | str: ...

`call.tools` (a `ToolRegistry`) lists, adds and removes tools. Registered tools are declared to
the provider in the session's `tools` (one `session.update` per change, sent on the next loop
turn, so a scenario's `setup()` registering five tools sends one update, and none when the
session already has them). The routing table can limit which tools a call gets
(`CallOptions.tool_names`); a tool outside it is neither declared nor run.

How a function call is answered (the runner):

* each call runs in its own task owned by the call's TaskGroup, never in the event dispatcher,
  so barge-in, DTMF and every other handler run while a tool works;
* exactly one `function_call_output` per `call_id`: an unregistered tool, or arguments that are
  not a JSON object, are answered at once with an error output; a tool past its `timeout_s`
  gets a timeout error output and its late result is dropped and logged; a tool that raises
  gets an error output and the exception is logged with the call id;
* the function calls of one response run concurrently, and ONE `response.create` follows once
  every `call_id` of that response (its `response.done` output list) has its output. When the
  caller's turn is open as the last output goes in (speech started, and the turn's response
  not yet created), no `response.create` is sent: the caller's turn ends in the response the
  turn rules make (server VAD `create_response`), and that response sees every output;
* a tool still running `hold_after_s` (1.5 s by default) after its response's function calls
  began makes the caller hear a holding line: the built-in holding prompt, or a model response
  with the instructions in `call.tools.holding_instructions`.

Output errors are JSON objects `{"ok": false, "error": CODE, "message": TEXT}` with CODE one of
`unknown_tool`, `bad_arguments`, `timeout`, `tool_failed` (and a webhook's own codes,
`gateway.call.webhook`). The runner is active once a tool has been registered: a scenario that
registers none (a VoxEngine port answering `FunctionCallArgumentsDone` itself) is left alone.

External tools (the sideband WebSocket, `gateway.http.sideband`): the function tools an app
declares in its own `session.update` are registered here as *external* (`set_external`): they
are declared to the provider beside the gateway's tools, and the runner leaves their calls to
the app (no `unknown_tool` answer, no response.create for them). A call_id the app answered
(`answered_externally`) is never answered by the runner. A name the call registered itself stays
the call's: the app cannot take over `end_call`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from gateway import metrics
from gateway.call.history import CallTrace
from gateway.call.prompts import holding_prompt
from gateway.realtime import events as rt


class CallFacts(Protocol):
    """What a tool knows of its call's parties (`gateway.call.call.CallInfo`)."""

    @property
    def leg(self) -> str: ...
    @property
    def caller(self) -> str: ...
    @property
    def called(self) -> str: ...


class ToolHost(Protocol):
    """What the registry needs of its call (`gateway.call.call.Call`; a Protocol, so that this
    module does not import the Call that imports it)."""

    id: str
    stats: dict[str, Any]
    trace: CallTrace

    @property
    def info(self) -> CallFacts: ...
    @property
    def log(self) -> Any: ...
    @property
    def realtime(self) -> Any: ...
    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]: ...
    def report(self, event: str, **fields: Any) -> None: ...
    async def play(self, audio: npt.NDArray[np.int16], rate: int = 8000) -> None: ...


#: the built-in tools' names (the default scenario registers them)
BUILTIN_TOOLS = frozenset({"end_call", "transfer_call", "send_dtmf"})
#: distinct tool names counted under their own label; beyond it, "other" (bounded labels)
MAX_METRIC_NAMES = 64
_metric_names: set[str] = set(BUILTIN_TOOLS)


def metric_name(name: str, registered: bool) -> str:
    """The `name` label of a tool: its name when registered somewhere (config, a scenario),
    up to `MAX_METRIC_NAMES` distinct ones per process; otherwise `other`."""
    if registered and name not in _metric_names and len(_metric_names) < MAX_METRIC_NAMES:
        _metric_names.add(name)
    return metrics.bounded(name, _metric_names)


def tool_error(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """A structured error output for the model."""
    return {"ok": False, "error": code, "message": message, **extra}


@dataclass(frozen=True)
class ToolResult:
    """What a tool may return instead of a plain dict or string: `outcome` labels the metric
    and the call summary; `respond=False` asks for no response after it (a transfer that
    succeeded: the call is leaving); `then` runs as a task of the call once the output is sent
    (end the call after the goodbye)."""

    output: Mapping[str, Any] | str
    outcome: str = "ok"
    respond: bool = True
    then: Callable[[], Awaitable[Any]] | None = None


ToolOutput = Mapping[str, Any] | str | ToolResult
ToolFunction = Callable[[dict[str, Any], "ToolContext"], Awaitable[ToolOutput]]


@dataclass(frozen=True)
class ToolContext:
    """What a running tool knows: its call, the model's `call_id`, the tool's name and the
    response that asked for it."""

    #: the call (a `gateway.call.call.Call`)
    call: ToolHost
    call_id: str
    name: str
    response_id: str

    @property
    def info(self) -> CallFacts:
        return self.call.info


@dataclass(frozen=True)
class Tool:
    """A registered tool: its declaration (name, description, JSON schema) and its function."""

    name: str
    function: ToolFunction
    description: str = ""
    parameters: Mapping[str, Any] = field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )
    timeout_s: float = 5.0
    #: the caller hears a holding line while this tool runs long (transfers say their own)
    holding: bool = True

    def definition(self) -> dict[str, Any]:
        """The function tool as the session's `tools` declares it."""
        return rt.function_tool(self.name, self.description, self.parameters)


@dataclass
class _Batch:
    """The function calls of one response."""

    response_id: str
    started: set[str] = field(default_factory=set)
    running: dict[str, Tool] = field(default_factory=dict)
    respond: bool = False
    closed: bool = False  # response.done seen: no more calls will join
    hold: asyncio.Task[Any] | None = None


class ToolRegistry:
    """`call.tools`: the call's tools, and the runner that answers the model's function calls."""

    def __init__(self, call: ToolHost, *, hold_after_s: float = 1.5) -> None:
        self._call = call  # a weakref proxy (see Call.__init__)
        self._tools: dict[str, Tool] = {}
        self.hold_after_s = hold_after_s
        #: instructions for a model response as the holding line; None: the holding prompt
        self.holding_instructions: str | None = None
        #: tool names the routing allows this call (None: any)
        self.allowed: frozenset[str] | None = None
        self._active = False
        self._flush_scheduled = False
        self._declared: str | None = None
        self._batches: dict[str, _Batch] = {}
        self._answered: set[str] = set()
        #: each running function call's arguments, for the call history
        self._arguments: dict[str, str] = {}
        self._turn_open = False
        #: function tools declared by an app over the sideband: name -> definition
        self._external: dict[str, dict[str, Any]] = {}

    # --- the registry -------------------------------------------------------------------------

    def tool(
        self,
        name: str,
        *,
        description: str = "",
        parameters: Mapping[str, Any] | None = None,
        timeout_s: float = 5.0,
        holding: bool = True,
    ) -> Callable[[ToolFunction], ToolFunction]:
        """Decorator: register `async def f(args, ctx)` as tool `name` (see `add`)."""

        def register(function: ToolFunction) -> ToolFunction:
            self.add(
                Tool(
                    name,
                    function,
                    description,
                    dict(parameters or {"type": "object", "properties": {}}),
                    timeout_s,
                    holding,
                )
            )
            return function

        return register

    def add(self, tool: Tool) -> None:
        """Register `tool` (replacing one of the same name) and declare it to the provider."""
        if not tool.name or not isinstance(tool.name, str):
            raise ValueError("a tool needs a name")
        if tool.timeout_s <= 0:
            raise ValueError(f"tool {tool.name!r}: timeout_s must be more than 0")
        self._tools[tool.name] = tool
        self._active = True
        metric_name(tool.name, registered=True)
        self._changed()

    def remove(self, name: str) -> None:
        """Forget tool `name` (no error if unknown); later calls to it get `unknown_tool`."""
        if self._tools.pop(name, None) is not None:
            self._changed()

    def get(self, name: str) -> Tool | None:
        """The tool the model may call by `name` (registered and allowed for this call)."""
        tool = self._tools.get(name)
        if tool is None or (self.allowed is not None and name not in self.allowed):
            return None
        return tool

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[Tool]:
        return iter([t for t in self._tools.values() if self.get(t.name) is not None])

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def names(self) -> list[str]:
        return [t.name for t in self]

    def definitions(self) -> list[dict[str, Any]]:
        """What the session's `tools` declares for this call: the call's tools, then the
        external ones."""
        own = [t.definition() for t in self]
        return own + [d for n, d in self._external.items() if n not in self._tools]

    # --- external tools (an app's, over the sideband) -------------------------------------------

    def set_external(self, definitions: list[dict[str, Any]]) -> list[str]:
        """Replace the app's tools with `definitions` (function tools: {"name", ...}) and declare
        them. Returns the names refused because the call registered a tool of that name."""
        refused = [str(d.get("name")) for d in definitions if d.get("name") in self._tools]
        self._external = {
            str(d["name"]): dict(d)
            for d in definitions
            if isinstance(d.get("name"), str) and d["name"] and d["name"] not in self._tools
        }
        self._changed()
        return refused

    def is_external(self, name: str) -> bool:
        """True when calls of `name` are the app's (declared by it, not registered here)."""
        return name in self._external and name not in self._tools

    @property
    def manages_declarations(self) -> bool:
        """True when the registry declares the session's tools (a tool was registered)."""
        return self._active

    def answered_externally(self, call_id: str) -> None:
        """The app answered `call_id`: the runner will not."""
        self._answered.add(call_id)

    def clear(self) -> None:
        """The call is over: drop every tool (closures over the call) and batch."""
        self._tools.clear()
        self._external.clear()
        self._batches.clear()

    # --- declaring the tools to the provider --------------------------------------------------

    @staticmethod
    def _canonical(tools: object) -> str:
        items = [dict(t) for t in tools] if isinstance(tools, list | tuple) else []
        return json.dumps(sorted(items, key=lambda t: str(t.get("name"))), sort_keys=True)

    def _changed(self) -> None:
        if self._flush_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # registered before the call runs: declared when it starts
            return
        self._flush_scheduled = True
        loop.call_soon(self.flush)

    def flush(self) -> None:
        """Send one `session.update` with the tools when they differ from the declared ones."""
        self._flush_scheduled = False
        if not self._active:
            return
        call = self._call
        try:
            link = call.realtime.link
            if self._declared is None:
                self._declared = self._canonical(link.protocol.requested.tools or ())
            defs = self.definitions()
            wanted = self._canonical(defs)
            if wanted == self._declared or link.closed:
                return
            patch: dict[str, Any] = {"tools": defs}
            if defs:
                patch["tool_choice"] = "auto"
            call.realtime.session_update(patch)
        except ReferenceError:  # the call is gone
            return
        self._declared = wanted
        call.log.info("tools_declared", tools=[d["name"] for d in defs])

    # --- the runner ---------------------------------------------------------------------------

    def server_event(self, ev: rt.ServerEvent) -> None:
        """A server event's effect on the tools (called inline by the call's receive loop)."""
        if isinstance(ev, rt.SpeechStarted):
            self._turn_open = True
        elif isinstance(ev, rt.ResponseCreated):
            self._turn_open = False
        elif isinstance(ev, rt.SpeechStopped):
            td = self._call.realtime.link.effective
            turn = td.turn_detection if td is not None else None
            if turn is None or turn.create_response is False:
                self._turn_open = False  # no response will come of it: the scenario's turn
        if not self._active:
            return
        if isinstance(ev, rt.FunctionCallArgumentsDone):
            self._start(ev.response_id, ev.call_id, ev.name, ev.arguments)
        elif isinstance(ev, rt.ResponseDone):
            batch = self._batches.get(ev.response_id)
            for item in ev.output:  # the response's whole set of function calls
                if item.get("type") != "function_call" or not item.get("call_id"):
                    continue
                call_id = str(item["call_id"])
                if batch is None or call_id not in batch.started:
                    self._start(
                        ev.response_id,
                        call_id,
                        str(item.get("name", "")),
                        str(item.get("arguments") or ""),
                    )
                    batch = self._batches.get(ev.response_id)
            if batch is not None:
                batch.closed = True
                self._settle(batch)

    def _start(self, response_id: str, call_id: str, name: str, arguments: str) -> None:
        batch = self._batches.setdefault(response_id, _Batch(response_id))
        if call_id in batch.started or call_id in self._answered:
            return
        if self.is_external(name):
            return  # the app's tool: it answers over the sideband
        batch.started.add(call_id)
        self._arguments[call_id] = arguments[:4000]
        call = self._call
        tool = self.get(name)
        if tool is None:
            self._answer(
                batch,
                call_id,
                name,
                0.0,
                ToolResult(
                    tool_error("unknown_tool", f"there is no tool {name!r}"), "unknown_tool"
                ),
                registered=False,
            )
            return
        try:
            args = json.loads(arguments or "{}")
            if not isinstance(args, dict):
                raise ValueError("arguments must be a JSON object")
        except ValueError as exc:
            self._answer(
                batch,
                call_id,
                name,
                0.0,
                ToolResult(tool_error("bad_arguments", f"bad arguments: {exc}"), "bad_arguments"),
            )
            return
        batch.running[call_id] = tool
        ctx = ToolContext(call, call_id, name, response_id)
        call.spawn(self._run(batch, tool, args, ctx))
        if batch.hold is None and tool.holding and self.hold_after_s > 0:
            batch.hold = call.spawn(self._hold(batch))

    async def _run(self, batch: _Batch, tool: Tool, args: dict[str, Any], ctx: ToolContext) -> None:
        call = self._call
        started = time.monotonic()
        # the tool runs in its own task of the call's TaskGroup (cancelled when the call ends);
        # it outlives a timeout, so that its late result can be logged
        task: asyncio.Future[tuple[ToolOutput | None, Exception | None]]
        task = asyncio.get_running_loop().create_future()

        async def body() -> None:
            try:
                value = await tool.function(args, ctx)
            except Exception as exc:
                task.set_result((None, exc))
            else:
                task.set_result((value, None))

        call.spawn(body())
        done, _ = await asyncio.wait({task}, timeout=tool.timeout_s)
        elapsed = time.monotonic() - started
        if not done:
            self._answer(
                batch,
                ctx.call_id,
                tool.name,
                elapsed,
                ToolResult(
                    tool_error("timeout", f"{tool.name} took longer than {tool.timeout_s:g} s"),
                    "timeout",
                ),
            )
            task.add_done_callback(lambda t: self._late(t, ctx, started))
            return
        value, exc = task.result()
        result: ToolOutput = value if value is not None else ""
        if exc is not None:
            call.log.error(
                "tool_failed",
                tool=tool.name,
                tool_call_id=ctx.call_id,
                error=repr(exc),
                exc_info=exc,
            )
            result = ToolResult(tool_error("tool_failed", f"{tool.name} failed"), "error")
        self._answer(batch, ctx.call_id, tool.name, elapsed, result)

    def _late(
        self,
        task: asyncio.Future[tuple[ToolOutput | None, Exception | None]],
        ctx: ToolContext,
        started: float,
    ) -> None:
        if task.cancelled():
            return
        _, exc = task.result()
        self._call.log.warning(
            "tool_late_result_dropped",
            tool=ctx.name,
            tool_call_id=ctx.call_id,
            after_s=round(time.monotonic() - started, 3),
            error=repr(exc) if exc else None,
        )

    def _answer(
        self,
        batch: _Batch,
        call_id: str,
        name: str,
        elapsed: float,
        result: ToolOutput,
        *,
        registered: bool = True,
    ) -> None:
        """Send the one output of `call_id`, count it, and settle its response."""
        if not isinstance(result, ToolResult):
            result = ToolResult(result)
        call = self._call
        batch.running.pop(call_id, None)
        self._answered.add(call_id)
        label = metric_name(name, registered)
        metrics.TOOL_CALLS.labels(name=label, outcome=result.outcome).inc()
        if registered:
            metrics.TOOL_CALL_DURATION.labels(name=label).observe(elapsed)
        call.stats["tool_calls"].append(f"{name}:{result.outcome}")
        call.trace.add(
            call.trace.tool_calls,
            {
                "call_id": call_id,
                "name": name,
                "arguments": self._arguments.pop(call_id, ""),
                "output": result.output,
                "outcome": result.outcome,
                "elapsed_ms": round(elapsed * 1000, 1),
            },
        )
        call.report("tool_call", name=name, outcome=result.outcome, ms=round(elapsed * 1000))
        if result.outcome != "ok":
            call.log.info(
                "tool_call_failed", tool=name, tool_call_id=call_id, outcome=result.outcome
            )
        if not call.realtime.link.closed:
            call.realtime.function_call_output(call_id, result.output)
        batch.respond = batch.respond or result.respond
        self._settle(batch)
        if result.then is not None:
            call.spawn(result.then())

    def _settle(self, batch: _Batch) -> None:
        """Once the response is done and every call of it answered: one response.create, unless
        the caller's turn is open (its own response will see the outputs)."""
        if not batch.closed or batch.running:
            return
        self._batches.pop(batch.response_id, None)
        if batch.hold is not None:
            batch.hold.cancel()
        call = self._call
        if not batch.respond or call.realtime.link.closed:
            return
        if self._turn_open:
            call.log.info("tool_response_left_to_turn", response_id=batch.response_id)
            return
        call.realtime.response_create_when_idle()

    async def _hold(self, batch: _Batch) -> None:
        await asyncio.sleep(self.hold_after_s)
        if not any(t.holding for t in batch.running.values()) or self._turn_open:
            return
        call = self._call
        call.log.info("tool_holding", tools=sorted({t.name for t in batch.running.values()}))
        if self.holding_instructions:
            call.realtime.response_create_when_idle(instructions=self.holding_instructions)
        else:
            await call.play(*holding_prompt())

"""The CallManager: the live calls, admission (`--max-calls`, draining) and graceful drain."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import secrets
from collections.abc import Callable
from typing import Any

from gateway import metrics
from gateway.call.call import Call
from gateway.call.progress import CallProgress
from gateway.call.prompts import goodbye_prompt
from gateway.call.scenario import ScenarioSetup
from gateway.errors import AdmissionError
from gateway.logs import bind_call, get_logger

log = get_logger("call.manager")

#: Retry-After (seconds) of a call refused for overload: about the hold before admitting again
OVERLOAD_RETRY_AFTER = 10
#: how long an API request about a call still being set up (accepted by its app, its provider
#: session connecting) waits for it: the provider's connect and session set-up timeouts
SETUP_WAIT_S = 30.0


class CallManager:
    """Holds the live calls; every call runs as one task owned here until it ends."""

    def __init__(self, max_calls: int) -> None:
        self.max_calls = max_calls
        self.calls: dict[str, Call] = {}
        self._reserved = 0
        self._tasks: dict[str, asyncio.Task[None]] = {}
        #: the calls being set up (reserved, not yet started), by id: each future gets the Call
        #: once it starts, or None if its set-up fails (`wait_live`)
        self._starting: dict[str, asyncio.Future[Call | None]] = {}
        self.draining = False
        #: progress events by call id (`GET /calls/{id}/events`)
        self.progress = CallProgress()
        self._idle = asyncio.Event()
        self._idle.set()
        #: True while the media clock runs late (issue 20, `gateway.media.overload`): new calls
        #: are refused with `overload` until it recovers
        self.overloaded: Callable[[], bool] = lambda: False
        #: told of each admitted call (the overload gate projects its cost)
        self.on_admitted: Callable[[], None] = lambda: None
        #: given each call's history record when it ends (`gateway.call.history.History`)
        self.on_call_ended: Callable[[dict[str, Any]], None] | None = None

    @staticmethod
    def new_id() -> str:
        """A call id: random, URL-safe, never a phone number."""
        return secrets.token_hex(8)

    def check_admission(self) -> None:
        """AdmissionError if a new call could not be taken now (draining, at capacity, the media
        clock overloaded)."""
        if self.draining:
            raise AdmissionError("draining", retry_after=30)
        if self.in_progress >= self.max_calls:
            raise AdmissionError("capacity", retry_after=5)
        if self.overloaded():
            raise AdmissionError("overload", retry_after=OVERLOAD_RETRY_AFTER)

    @property
    def in_progress(self) -> int:
        """Calls live or being set up."""
        return len(self.calls) + self._reserved

    def reserve(self, call_id: str | None = None) -> None:
        """Take a slot for a call being set up; AdmissionError when none is free. With its
        `call_id`, `wait_live` waits for the call until it starts or its set-up fails."""
        self.check_admission()
        self._reserved += 1
        self.on_admitted()
        self._idle.clear()
        if call_id is not None:
            self._starting[call_id] = asyncio.get_running_loop().create_future()

    def release_reservation(self, call_id: str | None = None) -> None:
        """Give back a slot whose call never started (setup failed)."""
        self._reserved = max(0, self._reserved - 1)
        self._settle_starting(call_id, None)
        self._check_idle()

    def _settle_starting(self, call_id: str | None, call: Call | None) -> None:
        starting = self._starting.pop(call_id, None) if call_id is not None else None
        if starting is not None and not starting.done():
            starting.set_result(call)

    async def wait_live(self, call_id: str, timeout_s: float) -> Call | None:
        """The live call `call_id`; a call still being set up (e.g. accepted by its app, its
        provider session connecting) is waited for up to `timeout_s`. None: no such call, its
        set-up failed, or it did not start in time."""
        call = self.calls.get(call_id)
        starting = self._starting.get(call_id)
        if call is not None or starting is None:
            return call
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(starting)
        return self.calls.get(call_id)

    def start(self, call: Call, setup: ScenarioSetup) -> asyncio.Task[None]:
        """Run `call` (its slot was reserved) until it ends."""
        self._reserved = max(0, self._reserved - 1)
        self.calls[call.id] = call
        call.progress = self.progress.publish
        # every line the call's tasks log carries its id, leg and provider
        with bind_call(call.id, call.info.leg, call.info.provider):
            task = asyncio.get_running_loop().create_task(
                self._run(call, setup), name=f"call-{call.id}"
            )
        self._tasks[call.id] = task
        self._settle_starting(call.id, call)
        return task

    async def _run(self, call: Call, setup: ScenarioSetup) -> None:
        try:
            await call.run(setup)
        except Exception:
            log.exception("call_crashed", call_id=call.id)
        finally:
            self.progress.publish(call.id, "ended", outcome=call.outcome or "completed")
            self.calls.pop(call.id, None)
            self._tasks.pop(call.id, None)
            self._check_idle()
            if self.on_call_ended is not None:
                try:
                    self.on_call_ended(call.history_record(asyncio.get_running_loop().time()))
                except Exception:
                    log.exception("call_history_failed", call_id=call.id)

    def _check_idle(self) -> None:
        if not self.calls and not self._reserved:
            self._idle.set()

    def task(self, call_id: str) -> asyncio.Task[None] | None:
        """The task running `call_id`, while it runs."""
        return self._tasks.get(call_id)

    def get(self, call_id: str) -> Call | None:
        return self.calls.get(call_id)

    def list(self) -> list[dict[str, object]]:
        """The live calls, as `GET /calls` shows them."""
        return [c.describe() for c in self.calls.values()]

    def live(self) -> builtins.list[dict[str, Any]]:
        """The live calls with their media figures, as the console's live stream shows them."""
        return [c.live() for c in self.calls.values()]

    async def hangup(self, call_id: str, outcome: str = "api_hangup") -> bool:
        """End one call; False if there is no such call."""
        call = self.calls.get(call_id)
        if call is None:
            return False
        await call.hangup(outcome)
        task = self._tasks.get(call_id)
        if task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(task), 10)
        return True

    async def drain(self, timeout: float) -> None:
        """Stop admitting calls, let live calls finish for up to `timeout` seconds, then play
        the goodbye prompt to those still up and end them."""
        self.draining = True
        metrics.DRAINING.set(1)
        log.info("drain_started", live_calls=len(self.calls), timeout_s=timeout)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
        if self.calls:
            log.info("drain_timeout_goodbye", live_calls=len(self.calls))
            await self.end_all("drained", goodbye=True)

    async def end_all(self, outcome: str, goodbye: bool = False) -> None:
        """End every live call (with a goodbye prompt first if asked) and wait for them."""
        for call in list(self.calls.values()):
            if goodbye:
                with contextlib.suppress(Exception):
                    call.stop_media_to("model")
                    call.clear_media_buffer()
                    await call.play(*goodbye_prompt())
                    call.spawn(call.hangup_after_playout(outcome, 8.0, wait_response=False))
            else:
                await call.hangup(outcome)
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.wait(tasks, timeout=15)
        for task in self._tasks.values():
            task.cancel()

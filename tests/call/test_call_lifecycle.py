"""The Call's lifecycle table (`gateway.call.lifecycle`): every (state, input) pair, and the Call
that feeds it logging and counting what the table refuses, against the real local provider."""

from __future__ import annotations

import asyncio
import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from gateway.call.call import Call
from gateway.call.events import CallConnected
from gateway.call.lifecycle import TRANSITIONS, CallInput, CallLifecycle, CallState
from gateway.call.manager import CallManager
from gateway.errors import CallStateError
from gateway.realtime.local.server import LocalProvider
from tests.support.memory_call import open_call

S = CallState
I = CallInput  # noqa: E741

ALL_PAIRS = list(itertools.product(CallState, CallInput))


@pytest.mark.parametrize(("state", "event"), ALL_PAIRS, ids=str)
def test_every_state_and_input_is_a_transition_or_an_error(
    state: CallState, event: CallInput
) -> None:
    life = CallLifecycle()
    life.state = state
    expected = TRANSITIONS.get((state, event))
    if expected is None:
        with pytest.raises(CallStateError) as err:
            life.handle(event)
        assert (err.value.state, err.value.input) == (state, event)
        assert life.state is state  # refused: nothing changed
    else:
        assert life.handle(event) is expected
        assert life.state is expected


def test_the_table_refuses_what_can_only_be_a_bug() -> None:
    refused = {pair for pair in ALL_PAIRS if pair not in TRANSITIONS}
    assert refused == {
        (S.CONNECTED, I.RUN),  # run() twice
        (S.ENDED, I.RUN),
        (S.CONNECTING, I.TASK_FAILED),  # no task runs before run()
        (S.ENDED, I.TASK_FAILED),  # none after the clean-up
        (S.CONNECTING, I.CLEANUP),  # a clean-up without run()
        (S.ENDED, I.CLEANUP),  # twice
    }


@given(st.lists(st.sampled_from(list(CallInput)), max_size=12))
def test_any_sequence_follows_the_table_and_ended_is_final(events: list[CallInput]) -> None:
    life = CallLifecycle()
    ended = False
    for event in events:
        before = life.state
        try:
            after = life.handle(event)
        except CallStateError:
            assert (before, event) not in TRANSITIONS and life.state is before
            continue
        assert after is TRANSITIONS[(before, event)]
        if ended:
            assert after is S.ENDED  # nothing brings an ended call back
        ended = after is S.ENDED


def test_the_ways_a_call_goes() -> None:
    def walk(*events: CallInput) -> list[CallState]:
        life = CallLifecycle()
        return [life.handle(e) for e in events]

    # hung up by anyone
    assert walk(I.RUN, I.END_REQUESTED, I.END_REQUESTED, I.CLEANUP, I.END_REQUESTED) == [
        S.CONNECTED,
        S.ENDING,
        S.ENDING,
        S.ENDED,
        S.ENDED,
    ]
    # a task failed, then the hang-up of the clean-up's handlers
    assert walk(I.RUN, I.TASK_FAILED, I.CLEANUP) == [S.CONNECTED, S.ENDING, S.ENDED]
    # ended (drain, API) before its task first ran: it runs its set-up, then ends at once
    assert walk(I.END_REQUESTED, I.RUN, I.CLEANUP) == [S.ENDING, S.ENDING, S.ENDED]
    # run() cancelled (shutdown) with nothing asking for the end
    assert walk(I.RUN, I.CLEANUP) == [S.CONNECTED, S.ENDED]


def _state_errors(state: str, event: str) -> float:
    labels = {"machine": "call", "state": state, "input": event}
    return REGISTRY.get_sample_value("gateway_state_errors_total", labels) or 0.0


async def test_a_call_shows_its_state_and_refuses_a_second_run_loudly() -> None:
    provider = LocalProvider(use_espeak=False)
    await provider.start()
    try:
        call, _m = await open_call(provider)
        assert call.state is S.CONNECTING
        connected = asyncio.Event()

        def scenario(c: Call) -> None:
            c.on(CallConnected, lambda _e: connected.set())

        task = CallManager(2).start(call, scenario)
        await asyncio.wait_for(connected.wait(), 5)
        assert call.state is S.CONNECTED
        listed = json.loads(json.dumps(call.describe()))
        assert listed["state"] == "connected"
        await call.hangup("api_hangup")
        assert call.state is S.ENDING
        await task
        assert call.state is S.ENDED and call.outcome == "api_hangup"
        await call.hangup("late")  # a CallEnded handler may still hang up: nothing happens
        assert call.state is S.ENDED and call.outcome == "api_hangup"

        before = _state_errors("ended", "run")
        with capture_logs() as logs, pytest.raises(CallStateError):
            await call.run(scenario)
        assert _state_errors("ended", "run") == before + 1
        (line,) = [e for e in logs if e["event"] == "call_state_invalid"]
        assert (line["state"], line["input"], line["log_level"]) == ("ended", "run", "error")
        assert call.state is S.ENDED
    finally:
        await provider.stop()


async def test_a_call_ended_before_it_ran_runs_its_setup_and_ends_at_once() -> None:
    provider = LocalProvider(use_espeak=False)
    await provider.start()
    try:
        call, m = await open_call(provider)
        await call.hangup("drained")
        assert call.state is S.ENDING
        seen: list[str] = []
        await asyncio.wait_for(call.run(lambda c: seen.append(str(c.state))), 5)
        assert seen == ["ending"]
        assert call.state is S.ENDED and call.outcome == "drained"
        assert m.leg.closed and len(m.clock) == 0
    finally:
        await provider.stop()

"""The Call's lifecycle as one table: `(state, input) -> state`, in the manner of h11 and h2.

Theory of operation. A Call is created once its leg is answered (or, for an outbound call, once
the far end's early media starts: `Call.early`) and its Realtime session is ready (CONNECTING).
`run()` starts its tasks (CONNECTED). Every way out asks for the end (END_REQUESTED: a hang-up
from the scenario or the API, the leg ended, the provider session is gone) or fails
(TASK_FAILED: a task of the call raised); the call is then ENDING while its tasks are cancelled.
CLEANUP (leg, session and recorder closed, the call counted) makes it ENDED; it also ends a call
whose `run()` was cancelled before anything asked for the end.

    CONNECTING --run--> CONNECTED --end_requested/task_failed--> ENDING --cleanup--> ENDED
        |                   |                                      ^
        +--end_requested----|--------------------------------------+
                            +--cleanup (run() cancelled)-------------------------> ENDED

Anything not in `TRANSITIONS` (run twice, a clean-up twice or before `run()`, a task failing
before the call ran or after it ended) is a `CallStateError`: the Call logs and counts it and
raises it; it is never swallowed. No I/O here.
"""

from __future__ import annotations

from enum import StrEnum

from gateway.errors import CallStateError


class CallState(StrEnum):
    CONNECTING = "connecting"  # answered, session ready; run() not started
    CONNECTED = "connected"  # run(): tasks up, media flowing
    ENDING = "ending"  # the end was asked for (or a task failed): tasks being cancelled
    ENDED = "ended"  # cleaned up: leg, session, recorder closed; the call counted


class CallInput(StrEnum):
    RUN = "run"  # run() starts the call's tasks
    END_REQUESTED = "end_requested"  # hangup(), the leg ended, the provider session is gone
    TASK_FAILED = "task_failed"  # a task of the call raised
    CLEANUP = "cleanup"  # run() tears the call down


S = CallState
I = CallInput  # noqa: E741

TRANSITIONS: dict[tuple[CallState, CallInput], CallState] = {
    (S.CONNECTING, I.RUN): S.CONNECTED,
    # ended before it ran (a drain, the API): its set-up runs, then it ends at once
    (S.CONNECTING, I.END_REQUESTED): S.ENDING,
    (S.ENDING, I.RUN): S.ENDING,
    (S.CONNECTED, I.END_REQUESTED): S.ENDING,
    (S.CONNECTED, I.TASK_FAILED): S.ENDING,
    # asked twice, or a task failing while the call ends: the first outcome counts
    (S.ENDING, I.END_REQUESTED): S.ENDING,
    (S.ENDING, I.TASK_FAILED): S.ENDING,
    (S.ENDING, I.CLEANUP): S.ENDED,
    # run() cancelled (shutdown) with nothing asking for the end
    (S.CONNECTED, I.CLEANUP): S.ENDED,
    # a CallEnded handler hanging up: nothing is left to end
    (S.ENDED, I.END_REQUESTED): S.ENDED,
}


class CallLifecycle:
    """The state of one Call; `handle()` is the only way it changes."""

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state = CallState.CONNECTING

    def handle(self, event: CallInput) -> CallState:
        """Apply `event`; CallStateError (state unchanged) when the table has no entry."""
        new = TRANSITIONS.get((self.state, event))
        if new is None:
            raise CallStateError(self.state, event)
        self.state = new
        return new

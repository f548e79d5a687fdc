"""`gateway serve` under signals: SIGINT or SIGTERM drains and stops, and signals that keep
coming while it stops (a supervisor repeating itself, or the test harness's second SIGINT sent
0.3 s after the first) never turn the clean exit into a death by signal: the exit status stays
0. A clean-clone CI once saw -2 here: the second SIGINT landed after the loop had closed."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.support.gateway import GatewayProcess


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signals_during_the_stop_leave_a_clean_exit(tmp_path: Path, sig: signal.Signals) -> None:
    for round_ in range(3):
        workdir = tmp_path / f"{sig.name}-{round_}"
        workdir.mkdir()
        gw = GatewayProcess(workdir)
        gw.start()
        proc = gw.proc
        assert proc is not None
        try:
            proc.send_signal(sig)
            # keep signalling through the drain, the stop and the interpreter's teardown
            deadline = time.monotonic() + 15
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.004 * (round_ + 1))
                if proc.poll() is None:
                    proc.send_signal(sig)
            assert proc.wait(timeout=5) == 0, gw.log_path.read_text()[-2000:]
        finally:
            gw.stop()
        events = [line.get("event") for line in gw.log_lines()]
        assert "gateway_stopping" in events

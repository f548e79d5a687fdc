"""Graceful drain of one real gateway process (`python -m gateway serve`), driven by signals and
`POST /admin/drain`, with sipp callers, raw SIP probes and a real WebRTC offer (aiortc).

- SIGTERM: /readyz turns 503, OPTIONS and a new INVITE get 503 (Retry-After), a WebRTC offer
  gets 503; the live call goes on until the caller hangs up, then the process exits 0.
- `--drain-timeout 3`: a call still up when it runs out hears the goodbye prompt (checked by
  correlating the RTP it received with the prompt) and gets a BYE; the process exits 0.
- A second SIGTERM ends the drain at once, still cleanly: the call gets a BYE, exit 0.
"""

from __future__ import annotations

import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from telcodecs import ulaw_decode

from gateway.call.prompts import goodbye_prompt
from tests.support.audio import best_abs_correlation
from tests.support.gateway import (
    API_TOKEN,
    aiortc_offer,
    call_summaries,
    gateway_process,
    header,
    live_calls,
    post_offer,
    sip_probe,
)
from tests.support.sip_messages import status_code
from tests.support.sipp import Sipp
from tests.support.waiting import wait_until

WAIT_BYE = Path(__file__).parent / "sipp" / "uac_wait_bye.xml"


class RtpSink:
    """A UDP socket on loopback that keeps every PCMU RTP packet with its arrival time."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = int(self.sock.getsockname()[1])
        self.packets: list[tuple[float, int, bytes]] = []  # (arrival, seq, payload)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            if len(data) > 12 and data[1] & 0x7F == 0:
                cc = data[0] & 0x0F
                seq = struct.unpack("!H", data[2:4])[0]
                self.packets.append((time.monotonic(), seq, data[12 + 4 * cc :]))

    def audio_after(self, start: float) -> np.ndarray[Any, np.dtype[np.int16]]:
        """The decoded audio of packets that arrived after `start` (monotonic), in order."""
        payloads = [p for t, _, p in self.packets if t >= start]
        return ulaw_decode(b"".join(payloads)) if payloads else np.zeros(0, np.int16)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def rtp_sink() -> Iterator[RtpSink]:
    sink = RtpSink()
    try:
        yield sink
    finally:
        sink.close()


async def test_sigterm_refuses_new_work_and_lets_the_live_call_finish(tmp_path: Path) -> None:
    offer = await aiortc_offer()
    with gateway_process(tmp_path) as gw:
        # before the drain everything is accepted: the probes below can fail
        assert status_code(sip_probe(gw, "OPTIONS")) == 200
        caller = Sipp(
            tmp_path, f"127.0.0.1:{gw.sip_port}", builtin="uac", extra=["-m", "1", "-d", "5000"]
        ).start()
        try:
            wait_until(lambda: live_calls(gw) == 1, what="the sipp call")
            gw.signal(signal.SIGTERM)
            wait_until(lambda: gw.http("GET", "/readyz")[0] == 503, what="/readyz 503")
            assert gw.http("GET", "/healthz")[0] == 200  # alive, just not ready
            options = sip_probe(gw, "OPTIONS")
            assert status_code(options) == 503, options
            invite = sip_probe(gw, "INVITE")
            assert status_code(invite) == 503, invite
            assert header(invite, "Retry-After"), invite
            status, headers, body = post_offer(gw, offer)
            assert status == 503, body
            assert headers.get("Retry-After"), headers
            _, text = gw.http("GET", "/metrics")
            assert "\ngateway_draining 1.0" in text
            # the live call is still up, and the process with it
            assert live_calls(gw) == 1 and gw.proc is not None and gw.proc.poll() is None
            result = caller.wait(20)
        finally:
            caller.kill()
        assert result.successful_calls == 1 and result.failed_calls == 0, result.explain()
        assert gw.wait(15) == 0
        (summary,) = call_summaries(gw)
        assert summary["outcome"] == "remote_hangup"
        assert summary["duration_s"] >= 4.5


def test_drain_timeout_plays_goodbye_then_bye(tmp_path: Path, rtp_sink: RtpSink) -> None:
    prompt, rate = goodbye_prompt()
    assert rate == 8000
    with gateway_process(tmp_path, "--drain-timeout", "3") as gw:
        caller = Sipp(
            tmp_path,
            f"127.0.0.1:{gw.sip_port}",
            scenario=WAIT_BYE,
            extra=["-m", "1", "-key", "rtp_sink", str(rtp_sink.port)],
        ).start()
        try:
            wait_until(lambda: live_calls(gw) == 1, what="the sipp call")
            wait_until(lambda: len(rtp_sink.packets) > 10, what="the greeting's RTP")
            # the drain API wants the token
            assert gw.http("POST", "/admin/drain", token="wrong")[0] == 401
            assert gw.http("GET", "/readyz")[0] == 200
            started = time.monotonic()
            status, body = gw.http("POST", "/admin/drain", token=API_TOKEN)
            assert status == 202 and body == {"status": "draining"}
            assert gw.http("GET", "/readyz")[0] == 503
            result = caller.wait(20)
            ended = time.monotonic()
        finally:
            caller.kill()
        assert result.successful_calls == 1 and result.failed_calls == 0, result.explain()
        assert ended - started >= 3.0  # not before the grace period
        assert gw.wait(15) == 0
        (summary,) = call_summaries(gw)
        assert summary["outcome"] == "drained"
    # what the caller heard after the grace period is the goodbye prompt
    heard = rtp_sink.audio_after(started + 2.9)
    assert len(heard) >= len(prompt) * 0.9, (len(heard), len(prompt))
    score = best_abs_correlation(
        heard, prompt[: len(heard)] if len(heard) < len(prompt) else prompt
    )
    assert score > 0.8, score


def test_second_sigterm_ends_calls_at_once_cleanly(tmp_path: Path, rtp_sink: RtpSink) -> None:
    with gateway_process(tmp_path) as gw:  # default drain timeout: 300 s
        caller = Sipp(
            tmp_path,
            f"127.0.0.1:{gw.sip_port}",
            scenario=WAIT_BYE,
            extra=["-m", "1", "-key", "rtp_sink", str(rtp_sink.port)],
        ).start()
        try:
            wait_until(lambda: live_calls(gw) == 1, what="the sipp call")
            gw.signal(signal.SIGTERM)
            wait_until(lambda: gw.http("GET", "/readyz")[0] == 503, what="/readyz 503")
            time.sleep(0.5)
            assert gw.proc is not None and gw.proc.poll() is None  # still draining
            started = time.monotonic()
            gw.signal(signal.SIGTERM)
            assert gw.wait(10) == 0
            stopped = time.monotonic() - started
            result = caller.wait(10)
        finally:
            caller.kill()
        assert result.successful_calls == 1 and result.failed_calls == 0, result.explain()
        assert stopped < 3, stopped  # at once: no grace period, no goodbye prompt
        (summary,) = call_summaries(gw)
        assert summary["outcome"] == "shutdown"
        events = [line.get("event") for line in gw.log_lines()]
        assert "signal_drain" in events and "signal_stop_now" in events


def test_drain_with_no_calls_answers_then_exits_at_once(tmp_path: Path) -> None:
    with gateway_process(tmp_path) as gw:
        assert gw.http("POST", "/admin/drain")[0] == 401  # the API token is required
        assert gw.proc is not None and gw.proc.poll() is None
        started = time.monotonic()
        status, body = gw.http("POST", "/admin/drain", token=API_TOKEN)
        assert status == 202 and body == {"status": "draining"}
        assert gw.wait(10) == 0
        assert time.monotonic() - started < 5
        events = [line.get("event") for line in gw.log_lines()]
        assert "drain_started" in events and "gateway_stopping" in events

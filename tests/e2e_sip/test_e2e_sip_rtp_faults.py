"""RTP faults against the whole gateway (embedded local provider), sipp placing the call:

- an RTP scanner on another address (127.0.0.2, a separate process) sprays the whole RTP range
  before the caller's first packet and all through the call: it must get none of the call's
  audio, and the caller (a socket of this test, named in sipp's SDP) must hear the greeting,
  checked by content;
- a caller that never sends RTP is hung up after the RTP timeout, counted from the answer; so is
  an outbound call's far end, counted from its answer, not while it rang."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import telcodecs
from prometheus_client import REGISTRY

from gateway.config import parse_port_range
from gateway.media.format import AudioFormat
from gateway.rtp.session import RtpSession
from tests.support.audio import windows_found
from tests.support.gateway import assert_nothing_leaked, outbound_call, run_sipp, running_gateway
from tests.support.scenarios import CallLog
from tests.support.waiting import wait_for

SPRAY = Path(__file__).resolve().parents[1] / "peers" / "rtp_spray.py"
ATTACKER_IP = "127.0.0.2"  # loopback is all of 127/8


class Sprayer:
    """tests/peers/rtp_spray.py as a child process, stopped by PID; `result()` after `stop()`."""

    def __init__(self, target_ip: str, lo: int, hi: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(SPRAY), ATTACKER_IP, target_ip, str(lo), str(hi)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert self.proc.stdout is not None
        first = json.loads(self.proc.stdout.readline() or "{}")
        assert first.get("bound", [None])[0] == ATTACKER_IP, first

    def stop(self) -> dict[str, object]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=10)
        result: dict[str, object] = json.loads(out.decode().strip().splitlines()[-1])
        return result

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


class Phone(asyncio.DatagramProtocol):
    """The caller's media socket: records the RTP it receives, sends PCMU silence when told."""

    def __init__(self) -> None:
        self.received: dict[int, bytes] = {}  # sequence number -> payload
        self.sources: set[tuple[str, int]] = set()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sources.add(addr)
        if len(data) > 12 and data[0] == 0x80 and data[1] & 0x7F == 0:
            self.received[struct.unpack_from("!H", data, 2)[0]] = data[12:]

    def heard(self) -> np.ndarray:
        """What arrived, in sequence order (one call, no wrap in a few seconds), decoded."""
        first = min(self.received)
        payload = b"".join(
            self.received.get(s, b"\xff" * 160) for s in range(first, max(self.received) + 1)
        )
        return telcodecs.ulaw_decode(payload)


async def _talk(transport: asyncio.DatagramTransport, dest: tuple[str, int]) -> None:
    """PCMU silence every 20 ms, as a phone sends it (no barge-in on the greeting)."""
    loop = asyncio.get_running_loop()
    seq, ts, at = 4000, 9000, loop.time()
    while True:
        transport.sendto(struct.pack("!BBHII", 0x80, 0, seq, ts, 0xCA11) + b"\xff" * 160, dest)
        seq, ts, at = seq + 1, ts + 160, at + 0.02
        await asyncio.sleep(max(0.0, at - loop.time()))


def _dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("gateway_rtp_dropped_total", {"reason": reason}) or 0.0


async def test_rtp_sprayed_from_another_address_never_takes_the_call(tmp_path: Path) -> None:
    log = CallLog()
    async with running_gateway(log.setup) as gw:
        assert gw.local_provider is not None
        greeting = telcodecs.ulaw_decode(
            gw.local_provider.options.prompts.audio("greeting", AudioFormat("pcmu", 8000))
        )
        lo, hi = parse_port_range(gw.settings.rtp_ports)
        before = _dropped("wrong_source"), _dropped("rtcp_wrong_source")
        loop = asyncio.get_running_loop()
        transport, phone = await loop.create_datagram_endpoint(Phone, local_addr=("127.0.0.1", 0))
        phone_addr = transport.get_extra_info("sockname")[:2]
        sprayer = Sprayer("127.0.0.1", lo, hi)  # from before the call on
        talker: asyncio.Task[None] | None = None
        try:
            sipp = asyncio.create_task(
                run_sipp(
                    gw,
                    tmp_path,
                    scenario="e2e_wait_bye_rtp_port.xml",
                    extra=["-key", "rtp_port", str(phone_addr[1])],
                    timeout=30,
                )
            )
            await wait_for(lambda: bool(log.calls), 10, "the call")
            [call] = log.calls
            session: RtpSession = call.leg.session  # type: ignore[attr-defined]
            # the scanner's packets reach the call's port before the caller's first one
            await wait_for(lambda: session.stats.packets_in >= 5, 5, "sprayed packets")
            talker = asyncio.create_task(_talk(transport, ("127.0.0.1", call.leg.rtp.port)))  # type: ignore[attr-defined]
            # the whole greeting, and a second more, with the scanner spraying all along
            await asyncio.sleep(len(greeting) / 8000 + 1.0)
            await call.hangup()
            _sipp, result = await sipp
            assert result.successful_calls == 1, result.explain()
        finally:
            if talker is not None:
                talker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await talker
            spray = sprayer.stop()
            sprayer.kill()
            transport.close()
        # the scanner got nothing back: no audio, no RTCP
        assert spray["received"] == 0, spray
        assert int(spray["sent"]) > 1000, spray  # type: ignore[call-overload]
        # the caller heard the greeting, start to end (G.711 both ways: sample for sample)
        assert phone.sources == {("127.0.0.1", call.leg.rtp.port)}  # type: ignore[attr-defined]
        found = windows_found(greeting, phone.heard())
        assert np.mean(np.array(found) >= 0.8) >= 0.85, found
        # the media came from the caller; the scanner was refused and counted
        assert session.latched == phone_addr
        stats = session.stats
        assert stats.dropped["wrong_source"] >= 50 and stats.dropped["rtcp_wrong_source"] >= 5
        await assert_nothing_leaked(gw)  # (the leg's close exports its counters)
        assert log.outcomes() == ["completed"]
        assert _dropped("wrong_source") - before[0] == stats.dropped["wrong_source"]
        assert _dropped("rtcp_wrong_source") - before[1] == stats.dropped["rtcp_wrong_source"]


async def test_caller_that_never_sends_rtp_is_hung_up_after_the_rtp_timeout(
    tmp_path: Path,
) -> None:
    log = CallLog()
    async with running_gateway(log.setup, rtp_timeout=1.5) as gw:
        sipp, result = await run_sipp(gw, tmp_path, scenario="e2e_wait_bye.xml", timeout=20)
        assert result.successful_calls == 1, result.explain()  # the gateway's BYE came
        assert "BYE sip:" in sipp.messages
        # its port, provider session and slot are freed; then its end is on record
        await assert_nothing_leaked(gw)
        assert log.outcomes() == ["media_timeout"]
        [ended] = log.ended.values()
        assert 1.4 <= ended.duration_s <= 3.0, ended.duration_s  # from the answer
        [call] = log.calls
        assert call.leg.session.stats.packets_in == 0  # type: ignore[attr-defined]


async def test_outbound_rtp_timeout_runs_from_the_answer_not_while_ringing(tmp_path: Path) -> None:
    log = CallLog()
    # the far end rings for longer than the timeout, answers, and never sends RTP
    uas, result = await outbound_call(tmp_path, log, ring_ms=2500, rtp_timeout=1.5)
    assert result.successful_calls == 1, result.explain()  # our BYE came
    assert "BYE sip:" in uas.messages
    assert log.outcomes() == ["media_timeout"]
    [ended] = log.ended.values()
    assert 1.4 <= ended.duration_s <= 3.0, ended.duration_s  # counted from the answer

"""Reliable provisionals (RFC 3262) and early media against the whole gateway (embedded local
provider), with sipp as the phone or the carrier:

- a caller requiring (or supporting) 100rel gets a reliable 18x, PRACKs it (a wrong RAck gets
  481), then the 200, and the call completes with BYE;
- with `sip_early_media` and a slow provider, the caller gets 183 with SDP and hears ringback
  (440 + 480 Hz, checked by content) before the 200, which repeats the 183's SDP;
- an outbound call to a carrier that sends a reliable 183 with SDP and audio before its 200
  gets our PRACK (RAck checked by sipp), and the carrier's early audio is in the call's
  recording (by cross-correlation) and the scenario saw `EarlyMedia`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import telcodecs

from gateway.call.call import Call
from gateway.call.events import CallConnected, EarlyMedia
from gateway.realtime.local.server import LocalProvider
from gateway.rtp.packet import RtpPacket
from gateway.secret import Secret
from tests.support.audio import best_correlation, read_stereo_wav, tone_share
from tests.support.fault_provider import Fault, FaultyProvider
from tests.support.gateway import assert_nothing_leaked, run_sipp, running_gateway
from tests.support.harness import free_udp_port
from tests.support.pcap import pcap_rtp_payloads, sipp_capture
from tests.support.scenarios import CallLog
from tests.support.sipp import Sipp


def received(messages: str) -> list[str]:
    """The messages sipp received, from its -trace_msg log."""
    blocks = re.split(r"^-{20,}.*$", messages, flags=re.M)
    return [b.split("\n\n", 1)[1].strip() for b in blocks if "message received" in b]


def sent(messages: str) -> list[str]:
    blocks = re.split(r"^-{20,}.*$", messages, flags=re.M)
    return [b.split("\n\n", 1)[1].strip() for b in blocks if "message sent" in b]


def first_line_and_cseq(message: str) -> str:
    cseq = re.search(r"^CSeq:\s*(.+)$", message, re.M)
    return f"{message.splitlines()[0]} / {cseq.group(1).strip() if cseq else ''}"


def body_of(message: str) -> str:
    return message.split("\n\n", 1)[1].strip() if "\n\n" in message else ""


@pytest.fixture
def rtp_socket() -> Iterator[socket.socket]:
    """The caller's media port: a plain UDP socket the gateway's RTP goes to."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", free_udp_port()))
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


@dataclass
class RtpCapture:
    """RTP datagrams received on a socket, with the loop time of each."""

    packets: list[tuple[float, RtpPacket]] = field(default_factory=list)

    def pcmu_before(self, t: float) -> np.ndarray:
        audio = b"".join(p.payload for at, p in self.packets if at < t and p.payload_type == 0)
        return telcodecs.ulaw_decode(audio) if audio else np.zeros(0, np.int16)


@contextlib.asynccontextmanager
async def capturing(sock: socket.socket) -> AsyncIterator[RtpCapture]:
    loop = asyncio.get_running_loop()
    capture = RtpCapture()

    def readable() -> None:
        with contextlib.suppress(BlockingIOError):
            while True:
                data = sock.recv(2048)
                with contextlib.suppress(ValueError):
                    capture.packets.append((loop.time(), RtpPacket.parse(data)))

    loop.add_reader(sock.fileno(), readable)
    try:
        yield capture
    finally:
        loop.remove_reader(sock.fileno())


def prack_exchange(messages: str) -> list[str]:
    return [first_line_and_cseq(m) for m in received(messages)]


async def test_require_100rel_reliable_180_prack_then_200_and_bye(
    tmp_path: Path, rtp_socket: socket.socket
) -> None:
    """Once 420: a caller requiring 100rel gets a reliable 180 (RSeq, Require: 100rel); its
    PRACK for an RSeq never sent gets 481, the right one 200, then the INVITE its 200."""
    log = CallLog()
    rtp_port = rtp_socket.getsockname()[1]
    async with running_gateway(log.setup, sip_ringing=True) as gw:
        sipp, result = await run_sipp(
            gw,
            tmp_path,
            scenario="e2e_prack_uac.xml",
            extra=["-key", "rel", "Require: 100rel", "-key", "rtp_port", str(rtp_port)],
        )
        assert result.successful_calls == 1, result.explain()
        msgs = received(sipp.messages)
        [ringing] = [m for m in msgs if m.startswith("SIP/2.0 180")]
        assert re.search(r"^Require:.*100rel", ringing, re.M | re.I), ringing
        assert re.search(r"^RSeq: *[1-9][0-9]*$", ringing, re.M), ringing
        assert [e for e in prack_exchange(sipp.messages) if "100 Trying" not in e] == [
            "SIP/2.0 180 Ringing / 1 INVITE",
            "SIP/2.0 481 Call/Transaction Does Not Exist / 2 PRACK",
            "SIP/2.0 200 OK / 3 PRACK",
            "SIP/2.0 200 OK / 1 INVITE",
            "SIP/2.0 200 OK / 4 BYE",
        ]
        await assert_nothing_leaked(gw)
    assert log.outcomes() == ["remote_hangup"]


@pytest.fixture
async def local() -> AsyncIterator[LocalProvider]:
    p = LocalProvider(use_espeak=False)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


@dataclass
class Timeline(CallLog):
    """CallLog, plus when each call started (the 200 OK went out just before) and what the
    scenario saw of early media and the answer."""

    started: list[float] = field(default_factory=list)
    seen: list[tuple[str, int, float]] = field(default_factory=list)

    def setup(self, call: Call) -> None:
        super().setup(call)
        loop = asyncio.get_running_loop()
        self.started.append(loop.time())
        call.on(EarlyMedia, lambda ev: self.seen.append(("early_media", ev.status, loop.time())))
        call.on(CallConnected, lambda _: self.seen.append(("connected", 0, loop.time())))


@pytest.mark.parametrize("rel", ["Supported: 100rel", "Require: 100rel", ""])
async def test_early_media_rings_back_while_a_slow_provider_connects(
    tmp_path: Path, rtp_socket: socket.socket, local: LocalProvider, rel: str
) -> None:
    """`sip_early_media`: 183 with our SDP (reliable when the caller has 100rel) and RTP
    carrying ringback (440 + 480 Hz) while the provider takes 2 s to connect; then the 200,
    with the same SDP."""
    proxy = FaultyProvider(local.url, [Fault(connect_delay_s=2.0)])
    await proxy.start()
    log = Timeline()
    port = rtp_socket.getsockname()[1]
    try:
        async with (
            running_gateway(
                log.setup, sip_early_media=True, provider="url", provider_url=proxy.url
            ) as gw,
            capturing(rtp_socket) as capture,
        ):
            scenario = "e2e_prack_uac.xml" if rel else "e2e_early_media_uac.xml"
            sipp, result = await run_sipp(
                gw,
                tmp_path,
                scenario=scenario,
                extra=["-key", "rel", rel or "Supported: timer", "-key", "rtp_port", str(port)],
            )
            assert result.successful_calls == 1, result.explain()
            await assert_nothing_leaked(gw)
    finally:
        await proxy.stop()
    msgs = received(sipp.messages)
    [progress] = [m for m in msgs if m.startswith("SIP/2.0 183")]
    [ok] = [m for m in msgs if m.startswith("SIP/2.0 200") and "CSeq: 1 INVITE" in m]
    assert "m=audio" in body_of(progress) and body_of(ok) == body_of(progress)
    assert bool(re.search(r"^RSeq:", progress, re.M)) == bool(rel)
    assert not [m for m in msgs if m.startswith("SIP/2.0 180")]
    [answered_at] = log.started
    # ringback, by content, in what reached the caller before the 200 OK
    early = capture.pcmu_before(answered_at)
    assert len(early) >= 8000 * 1.5, len(early)
    ring = early[400 : 400 + 8000]  # inside the first 2 s "on" of the cadence
    assert tone_share(ring, (440.0, 480.0)) > 0.9
    assert telcodecs.rms_dbfs(ring) > -30
    assert log.outcomes() == ["remote_hangup"]


async def dial_carrier(
    tmp_path: Path, scenario_file: str, early_ms: int, log: Timeline
) -> tuple[Sipp, str, Path]:
    """POST /calls through a trunk to a sipp carrier running `scenario_file` (-d `early_ms`),
    recording the call; the scenario hangs up 1 s after the answer. Returns once sipp is done,
    with nothing left behind in the gateway."""
    token = "test-api-token-early"

    def scenario(call: Call) -> None:
        log.setup(call)

        async def hang_up_soon(_: CallConnected) -> None:
            await asyncio.sleep(1.0)
            await call.hangup()

        call.on(CallConnected, lambda ev: call.spawn(hang_up_soon(ev)))

    extra = ["-m", "1", "-d", str(early_ms)]
    uas = Sipp(tmp_path, "", scenario=scenario_file, extra=extra, timeout=30).start()
    trunk = {"main": {"uri": f"sip:127.0.0.1:{uas.local_port}", "from_user": "gw"}}
    record_dir = tmp_path / "rec"
    try:
        async with running_gateway(
            scenario, api_token=Secret(token), trunks=trunk, record_dir=str(record_dir)
        ) as gw:
            async with (
                aiohttp.ClientSession() as http,
                http.post(
                    f"http://127.0.0.1:{gw.http_port}/calls",
                    json={"to": "1000", "trunk": "main"},
                    headers={"Authorization": f"Bearer {token}"},
                ) as resp,
            ):
                assert resp.status == 201, await resp.text()
                call_id = (await resp.json())["id"]
            result = await uas.wait_async()
            assert result.successful_calls == 1, result.explain()
            await assert_nothing_leaked(gw)
    finally:
        uas.kill()
    return uas, call_id, record_dir / f"{call_id}.wav"


def g711a_reference() -> np.ndarray:
    """The audio of sipp's g711a.pcap (PCMA), decoded."""
    pcap = b"".join(p for pt, _, p in pcap_rtp_payloads(sipp_capture("g711a.pcap")) if pt == 8)
    return telcodecs.alaw_decode(pcap)


async def test_outbound_early_media_is_prack_ed_recorded_and_seen_by_the_scenario(
    tmp_path: Path,
) -> None:
    """A carrier answering our INVITE with a reliable 183 + SDP gets our PRACK (sipp checks
    `RAck: 4711 1 INVITE`) and plays g711a.pcap for 2 s before its 200: that early audio is
    in the call's recording, the scenario saw `EarlyMedia(183)` then `CallConnected`."""
    log = Timeline()
    uas, _call_id, wav = await dial_carrier(tmp_path, "e2e_uas_early_media.xml", 2000, log)
    [prack] = [m for m in received(uas.messages) if m.startswith("PRACK ")]
    assert re.search(r"^RAck: 4711 1 INVITE$", prack, re.M), prack
    [invite] = [m for m in received(uas.messages) if m.startswith("INVITE ")]
    assert re.search(r"^Supported:.*100rel", invite, re.M), invite
    assert [(kind, status) for kind, status, _ in log.seen] == [
        ("early_media", 183),
        ("connected", 0),
    ]
    early_s = log.seen[1][2] - log.seen[0][2]
    assert 1.5 < early_s < 3.5, early_s
    assert log.outcomes() == ["completed"]
    # the carrier's early audio, by content, in the recording before the answer
    rate, stereo = read_stereo_wav(wav)
    before_answer = stereo[: int(early_s * rate), 0]
    assert best_correlation(g711a_reference()[2400:12000], before_answer) > 0.8


async def test_outbound_announcement_then_486_is_recorded_and_the_call_ends(
    tmp_path: Path,
) -> None:
    """A carrier's announcement in an unreliable 183 (no PRACK), then 486: the scenario saw
    `EarlyMedia(183)` and no `CallConnected`, the announcement is in the recording, the call
    ends `rejected` and frees everything."""
    log = Timeline()
    uas, _call_id, wav = await dial_carrier(tmp_path, "e2e_uas_early_reject.xml", 1500, log)
    assert not [m for m in received(uas.messages) if m.startswith("PRACK ")]
    assert [(kind, status) for kind, status, _ in log.seen] == [("early_media", 183)]
    assert log.outcomes() == ["rejected"]
    _rate, stereo = read_stereo_wav(wav)
    assert best_correlation(g711a_reference()[2400:9600], stereo[:, 0]) > 0.8


async def test_cancel_during_ringback_frees_everything(
    tmp_path: Path, local: LocalProvider
) -> None:
    """A caller who gives up while hearing ringback: 487, and the early media's port, the
    ringback and the half-open provider session are all freed."""
    proxy = FaultyProvider(local.url, [Fault(connect_delay_s=2.0)])
    await proxy.start()
    log = CallLog()
    try:
        async with running_gateway(
            log.setup, sip_early_media=True, provider="url", provider_url=proxy.url
        ) as gw:
            _, result = await run_sipp(gw, tmp_path, scenario="e2e_cancel_early.xml")
            assert result.successful_calls == 1, result.explain()
            await assert_nothing_leaked(gw)
    finally:
        await proxy.stop()
    assert log.calls == []

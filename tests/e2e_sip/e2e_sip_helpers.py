"""Shared helpers of the end-to-end SIP tests: the whole gateway (in-process, embedded local
provider) against real SIP phones (sipp, baresip).

Import as `from tests.e2e_sip.e2e_sip_helpers import ...`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt

from gateway.app import Gateway
from gateway.call.call import Call
from gateway.call.default_scenario import setup as default_setup
from gateway.call.events import CallEnded, DtmfReceived, HoldChanged
from gateway.realtime.local.engine import LocalEngine
from gateway.secret import Secret
from tests.gateway_harness import running_gateway
from tests.sipp_harness import Sipp, SippResult

Pcm = npt.NDArray[np.int16]
SIPP_SHARE = Path("/usr/share/sip-tester")


def provider_sessions(gw: Gateway) -> list[LocalEngine]:
    assert gw.local_provider is not None
    return gw.local_provider.sessions


async def wait_for(pred: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    """Poll `pred` every 20 ms; AssertionError naming `what` after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what or pred}")
        await asyncio.sleep(0.02)


def leaks(gw: Gateway) -> dict[str, object]:
    """Everything a finished call could leave behind; all zero/empty when nothing leaked."""
    assert gw.sip_calls is not None and gw.clocks is not None
    local = gw.local_provider  # None with --provider url: the test checks its own server
    return {
        "calls": dict(gw.manager.calls),
        "call_tasks": len(gw.manager._tasks),
        "reserved": gw.manager._reserved,
        "rtp_ports": gw.sip_calls.ports.in_use,
        "sip_setup_tasks": len(gw.sip_calls._tasks),
        "clock20": len(gw.clocks.for_ptime(20)),
        "clock30": len(gw.clocks.for_ptime(30)),
        "provider_sessions": local.active_sessions if local is not None else 0,
    }


NO_LEAKS: dict[str, object] = {
    "calls": {},
    "call_tasks": 0,
    "reserved": 0,
    "rtp_ports": 0,
    "sip_setup_tasks": 0,
    "clock20": 0,
    "clock30": 0,
    "provider_sessions": 0,
}


async def assert_nothing_leaked(gw: Gateway, timeout: float = 4.0) -> None:
    """No call, call task, reserved slot, RTP port, media clock ticker or provider session left
    (after a short wait for sockets to close)."""
    try:
        await wait_for(lambda: leaks(gw) == NO_LEAKS, timeout, "everything freed")
    except AssertionError:
        pass
    assert leaks(gw) == NO_LEAKS


@dataclass
class CallLog:
    """A scenario wrapping the default one that records what each call saw."""

    calls: list[Call] = field(default_factory=list)
    dtmf: list[tuple[str, str, str]] = field(default_factory=list)  # (call id, digit, source)
    hold: list[tuple[str, bool, float]] = field(default_factory=list)
    ended: dict[str, CallEnded] = field(default_factory=dict)

    def setup(self, call: Call) -> None:
        default_setup(call)
        self.calls.append(call)
        loop = asyncio.get_running_loop()

        def on_dtmf(ev: DtmfReceived) -> None:
            self.dtmf.append((call.id, ev.digit, ev.source))

        def on_hold(ev: HoldChanged) -> None:
            self.hold.append((call.id, ev.on_hold, loop.time()))

        def on_ended(ev: CallEnded) -> None:
            self.ended[call.id] = ev

        call.on(DtmfReceived, on_dtmf)
        call.on(HoldChanged, on_hold)
        call.on(CallEnded, on_ended)

    def outcomes(self) -> list[str]:
        return [e.outcome for e in self.ended.values()]


async def run_sipp(
    gw: Gateway,
    workdir: Path,
    *,
    scenario: str | None = None,
    builtin: str | None = None,
    extra: list[str] | None = None,
    timeout: float = 20.0,
    local_ip: str = "127.0.0.1",
    calls: int = 1,
) -> tuple[Sipp, SippResult]:
    """Run one sipp against the gateway's SIP port and wait for it without blocking the loop."""
    args = ["-m", str(calls), *(extra or [])]
    sipp = Sipp(
        workdir,
        f"127.0.0.1:{gw.sip_port}",
        scenario=scenario,
        builtin=builtin,
        extra=args,
        timeout=timeout,
        local_ip=local_ip,
    ).start()
    try:
        result = await sipp.wait_async()
    finally:
        sipp.kill()
    return sipp, result


# --- audio


def pcap_rtp_payloads(path: Path) -> list[tuple[int, int, bytes]]:
    """(payload type, sequence number, payload) of every RTP packet in an Ethernet/IPv4/UDP
    pcap (the captures sipp ships)."""
    data = path.read_bytes()
    magic, _vmaj, _vmin, _tz, _sig, _snap, linktype = struct.unpack("<IHHiIII", data[:24])
    if magic != 0xA1B2C3D4 or linktype != 1:
        raise ValueError(f"{path}: not a little-endian Ethernet pcap")
    out: list[tuple[int, int, bytes]] = []
    pos = 24
    while pos + 16 <= len(data):
        _ts, _us, incl, _orig = struct.unpack("<IIII", data[pos : pos + 16])
        frame = data[pos + 16 : pos + 16 + incl]
        pos += 16 + incl
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        rtp = ip[ihl + 8 :]
        cc = rtp[0] & 0x0F
        pt = rtp[1] & 0x7F
        (seq,) = struct.unpack("!H", rtp[2:4])
        out.append((pt, seq, rtp[12 + 4 * cc :]))
    return out


def best_correlation(needle: Pcm, haystack: Pcm) -> float:
    """Peak normalised cross-correlation of `needle` anywhere in `haystack` (FFT)."""
    a = needle.astype(np.float64)
    b = haystack.astype(np.float64)
    if len(b) < len(a) or not len(a):
        return 0.0
    n = 1 << int(np.ceil(np.log2(len(a) + len(b))))
    corr = np.fft.irfft(np.fft.rfft(b, n) * np.conj(np.fft.rfft(a, n)), n)[: len(b) - len(a) + 1]
    cum = np.concatenate(([0.0], np.cumsum(b**2)))
    energy = cum[len(a) :] - cum[: len(b) - len(a) + 1]
    norm = np.sqrt(np.maximum(energy, 0.0) * np.sum(a**2)) + 1e-9
    return float(np.max(corr / norm))


def windows_found(needle: Pcm, haystack: Pcm, window: int = 2000) -> list[float]:
    """Best correlation of each 250 ms window of `needle` anywhere in `haystack`: robust to
    the odd frame a phone's jitter buffer drops or repeats under load, still a check by content
    (an unrelated signal scores well under 0.5)."""
    return [
        round(best_correlation(needle[at : at + window], haystack), 3)
        for at in range(0, len(needle) - window + 1, window)
    ]


def appended_audio(engine: LocalEngine) -> bytes:
    """Every `input_audio_buffer.append` the provider session received (needs record_frames)."""
    out = bytearray()
    for frame in engine.received or []:
        obj: dict[str, Any] = json.loads(frame)
        if obj.get("type") == "input_audio_buffer.append":
            out += base64.b64decode(obj["audio"])
    return bytes(out)


def client_events(engine: LocalEngine, kind: str) -> list[dict[str, Any]]:
    """Client events of type `kind` the provider session received (needs record_frames)."""
    out = []
    for frame in engine.received or []:
        obj: dict[str, Any] = json.loads(frame)
        if obj.get("type") == kind:
            out.append(obj)
    return out


# --- outbound


async def outbound_call(
    workdir: Path,
    log: CallLog,
    proto: str = "RTP/AVP",
    attribute: str = "a=sendrecv",
    ring_ms: int = 0,
    **settings: Any,
) -> tuple[Sipp, SippResult]:
    """POST /calls through a trunk whose far end (sipp, tests/peers/sipp/e2e_uas_answer.xml)
    rings `ring_ms`, then answers with `proto` and `attribute` and sends no RTP; returns once
    sipp has had the gateway's BYE (or timed out), with nothing left behind in the gateway."""
    token = "test-api-token-outbound"
    uas = Sipp(
        workdir,
        "",
        scenario="e2e_uas_answer.xml",
        extra=["-m", "1", "-d", str(ring_ms), "-key", "proto", proto, "-key", "secattr", attribute],
        timeout=20,
    ).start()
    trunk = {"main": {"uri": f"sip:127.0.0.1:{uas.local_port}", "from_user": "gw"}}
    try:
        async with running_gateway(
            log.setup, api_token=Secret(token), trunks=trunk, **settings
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
            result = await uas.wait_async()
            await assert_nothing_leaked(gw)
    finally:
        uas.kill()
    return uas, result

"""Load generator for `bench_calls.py`: N SIP phones that call the gateway and stream G.711.

One process, one asyncio (uvloop) loop, meant to be pinned to its own core with `taskset`:

* SIP over one UDP socket: INVITE (SDP offer PCMU/8000 + telephone-event) -> 200 OK -> ACK, and
  BYE at the end. Minimal but valid RFC 3261 UAC: Timer A/B style retransmission of INVITE and
  BYE, ACK re-sent for every retransmitted 200, requests from the gateway answered 200.
* One UDP socket per call for RTP. Every call sends a 20 ms PCMU packet on an absolute grid, from
  one timer for all calls (spread over `SLOTS` phases, like the gateway's media clock). The audio
  is a 4 s cycle: about 2 s of speech-like sound (voiced harmonics at a syllable rhythm), then
  about 2 s of near-silence, so the provider's VAD ends a turn every cycle and answers. By default
  every call is in the same phase of the cycle ("aligned"): speech starts, stops and the answers
  arrive for every call at once, which is the hardest case for pacing.
* The receiver reads the gateway's packets with kernel receive timestamps (SO_TIMESTAMPNS), so its
  inter-arrival figures do not depend on how busy this process is. Per stream: packets, voiced
  packets (not silence), worst gap; all within the steady-state window only.

Protocol with the parent on stdout (one JSON object per line): {"event": "established", ...},
{"event": "window_start", "wall": t}, {"event": "window_end", "wall": t}, then the result
({"event": "result", ...}) after the BYEs. Stop early with SIGTERM (the calls are then hung up).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import signal
import socket
import statistics
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import telcodecs

PTIME = 0.020
SAMPLES = 160
SLOTS = 10  # send phases per 20 ms
CYCLE_FRAMES = 200  # 4 s: speech then silence
SPEECH_FRAMES = 100
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; SCM_TIMESTAMPNS has the same value
SILENCE_PAYLOAD = b"\xff" * SAMPLES
_RTP = struct.Struct("!BBHII")
_TIMESPEC = struct.Struct("@qq")


#: the codecs a call can offer: RTP payload type and SDP rtpmap
CODECS = {"pcmu": (0, "PCMU/8000"), "g722": (9, "G722/8000")}


def speech_cycle(seed: int = 1, codec: str = "pcmu") -> list[bytes]:
    """One 4 s cycle of frames: ~2 s speech-like (f0 120-160 Hz with formant-weighted
    harmonics, 4 Hz syllable envelope, about -16 dBFS) then ~2 s of noise at about -66 dBFS;
    µ-law at 8 kHz, or G.722 (16 kHz audio, 160 bytes per 20 ms, coded once here)."""
    rng = np.random.default_rng(seed)
    rate = 16000 if codec == "g722" else 8000
    frame = rate // 50  # samples per 20 ms at this rate
    n_speech = SPEECH_FRAMES * frame
    t = np.arange(n_speech) / rate
    f0 = 140 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voice = np.zeros(n_speech)
    for k in range(1, 25):
        fk = 140 * k
        weight = math.exp(-(((fk - 500) / 300) ** 2)) + 0.6 * math.exp(-(((fk - 1500) / 400) ** 2))
        voice += (weight + 0.05) / k**0.5 * np.sin(k * phase)
    envelope = 0.35 + 0.65 * (0.5 - 0.5 * np.cos(2 * np.pi * 4 * t))
    ramp = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.02)  # no click at the edges
    voice *= envelope * ramp
    voice *= (10 ** (-16 / 20)) * 32767 / np.sqrt(np.mean(voice**2))
    noise = rng.normal(0, 32767 * 10 ** (-66 / 20), (CYCLE_FRAMES - SPEECH_FRAMES) * frame)
    pcm = np.clip(np.concatenate((voice, noise)), -32768, 32767).astype(np.int16)
    if codec == "g722":
        from gateway.media.wideband import G722Codec

        coder = G722Codec(20)
        return [coder.encode(pcm[i * frame : (i + 1) * frame]) for i in range(CYCLE_FRAMES)]
    encoded = telcodecs.ulaw_encode(pcm)
    return [encoded[i * frame : (i + 1) * frame] for i in range(CYCLE_FRAMES)]


def silence_payloads(codec: str) -> frozenset[bytes]:
    """The payloads a sender of `codec` sends for silence: µ-law's one, G.722's steady ones."""
    if codec != "g722":
        return frozenset({SILENCE_PAYLOAD})
    from gateway.media.wideband import G722Codec

    coder = G722Codec(20)
    zeros = np.zeros(320, dtype=np.int16)
    return frozenset(coder.encode(zeros) for _ in range(60))


@dataclass
class Stream:
    """Receive-side figures of one call's RTP from the gateway."""

    packets: int = 0
    voiced: int = 0
    worst_gap: float = 0.0
    last: float | None = None
    gaps_over_30: int = 0
    gaps_over_45: int = 0
    counting: bool = False
    first_wall: float | None = None


@dataclass
class Phone:
    """One call: SIP dialog state, RTP socket, send state and receive figures."""

    index: int
    call_id: str
    from_tag: str
    rtp_sock: socket.socket
    rtp_port: int
    ssrc: int
    seq: int = 0
    ts: int = 0
    slot: int = 0
    phase: int = 0
    invite: bytes = b""
    invite_sent_at: float = 0.0
    invite_retx_at: float = 0.0
    invite_interval: float = 0.5
    provisional: bool = False
    status: int = 0
    setup_s: float | None = None
    to_header: str = ""
    remote_target: str = ""
    remote_rtp: tuple[str, int] | None = None
    ack: bytes = b""
    sending: bool = False
    bye: bytes = b""
    bye_sent_at: float = 0.0
    bye_done: bool = False
    ended_by_gateway: bool = False
    failure: str = ""
    send_errors: int = 0
    stream: Stream = field(default_factory=Stream)


def _headers(message: str) -> tuple[str, dict[str, str], str]:
    head, _, body = message.partition("\r\n\r\n")
    lines = head.split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        key = {"i": "call-id", "t": "to", "f": "from", "m": "contact", "v": "via"}.get(key, key)
        headers.setdefault(key, value.strip())
    return lines[0], headers, body


def _sdp_media(body: str) -> tuple[str, int] | None:
    host, port = "", 0
    for line in body.splitlines():
        if line.startswith("c=IN IP4 "):
            host = line[9:].strip()
        elif line.startswith("m=audio "):
            port = int(line.split()[1])
    return (host, port) if host and port else None


class LoadGenerator(asyncio.DatagramProtocol):
    """Places `calls` calls at `rate` per second, streams, measures, hangs up."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        host, _, port = args.target.rpartition(":")
        self.target = (host, int(port))
        self.loop = asyncio.get_running_loop()
        self.sip: asyncio.DatagramTransport | None = None
        self.local_sip = ("127.0.0.1", 0)
        self.phones: dict[str, Phone] = {}
        self.order: list[Phone] = []
        self.slots: list[list[Phone]] = [[] for _ in range(SLOTS)]
        self.payload_type, self.rtpmap = CODECS[args.codec]
        self.cycle = speech_cycle(codec=args.codec)
        self.silence = silence_payloads(args.codec)
        self.t0 = 0.0
        self.tick = 0
        self.send_late_max = 0.0
        self.send_late_over_5ms = 0
        self.send_ticks = 0
        self.window: tuple[float, float] | None = None
        self.window_open = False
        self.stopping = asyncio.Event()
        self.unmatched = 0
        self.long_gaps: list[tuple[float, float]] = []  # (wall time the gap began, length)
        self.finals = 0
        self.ramp_done = False
        self.all_final = asyncio.Event()

    def _check_all_final(self) -> None:
        if self.ramp_done and self.finals >= len(self.order):
            self.all_final.set()

    # --- SIP transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.sip = cast(asyncio.DatagramTransport, transport)  # uvloop's is not a subclass

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            text = data.decode("utf-8", "replace")
            start, headers, body = _headers(text)
        except ValueError:
            return
        phone = self.phones.get(headers.get("call-id", ""))
        if start.startswith("SIP/2.0 "):
            if phone is not None:
                self._response(phone, int(start.split()[1]), headers, body)
            else:
                self.unmatched += 1
        else:
            self._request(start, headers, addr, phone)

    def _send_sip(self, data: bytes) -> None:
        assert self.sip is not None
        self.sip.sendto(data, self.target)

    def _response(self, phone: Phone, status: int, headers: dict[str, str], body: str) -> None:
        method = headers.get("cseq", "").split()[-1:]
        if method == ["INVITE"]:
            if status < 200:
                phone.provisional = True
                return
            if status >= 300:
                if not phone.status:
                    phone.status = status
                    phone.failure = f"invite {status}"
                    self.finals += 1
                    self._check_all_final()
                # RFC 3261 17.1.1.3: ACK a non-2xx final in the INVITE transaction
                to = headers.get("to", "")
                self._send_sip(self._ack_non2xx(phone, to))
                return
            if not phone.status:
                phone.status = status
                self.finals += 1
                self._check_all_final()
                phone.setup_s = self.loop.time() - phone.invite_sent_at
                phone.to_header = headers.get("to", "")
                contact = headers.get("contact", "")
                phone.remote_target = contact[contact.find("<") + 1 : contact.find(">")] or (
                    f"sip:bench@{self.target[0]}:{self.target[1]}"
                )
                phone.remote_rtp = _sdp_media(body)
                phone.ack = self._ack_2xx(phone)
                if phone.remote_rtp is None:
                    phone.failure = "no sdp answer"
                else:
                    self._start_media(phone)
            self._send_sip(phone.ack)  # also for every retransmitted 200
        elif method == ["BYE"] and status >= 200:
            phone.bye_done = True
            if status >= 300 and not phone.failure:
                phone.failure = f"bye {status}"

    def _request(
        self, start: str, headers: dict[str, str], addr: tuple[str, int], phone: Phone | None
    ) -> None:
        method = start.split(" ", 1)[0]
        if method == "ACK":
            return
        code = (
            "200 OK"
            if method in ("BYE", "INFO", "OPTIONS", "UPDATE", "NOTIFY")
            else ("501 Not Implemented")
        )
        if method == "BYE" and phone is not None:
            phone.ended_by_gateway = True
            phone.sending = False
            if not self.stopping.is_set() and not phone.failure:
                phone.failure = "ended by gateway"
        reply = (
            f"SIP/2.0 {code}\r\n"
            f"Via: {headers.get('via', '')}\r\n"
            f"From: {headers.get('from', '')}\r\n"
            f"To: {headers.get('to', '')}\r\n"
            f"Call-ID: {headers.get('call-id', '')}\r\n"
            f"CSeq: {headers.get('cseq', '')}\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        assert self.sip is not None
        self.sip.sendto(reply.encode(), addr)

    def _common(self, phone: Phone, branch: str, cseq: str, to: str) -> str:
        host, port = self.local_sip
        return (
            f"Via: SIP/2.0/UDP {host}:{port};branch={branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:caller{phone.index}@{host}>;tag={phone.from_tag}\r\n"
            f"To: {to}\r\n"
            f"Call-ID: {phone.call_id}\r\n"
            f"CSeq: {cseq}\r\n"
        )

    def _invite(self, phone: Phone) -> bytes:
        host, port = self.local_sip
        th, tp = self.target
        sess = random.randrange(1, 2**31)
        sdp = (
            "v=0\r\n"
            f"o=bench {sess} {sess} IN IP4 {host}\r\n"
            "s=bench\r\n"
            f"c=IN IP4 {host}\r\n"
            "t=0 0\r\n"
            f"m=audio {phone.rtp_port} RTP/AVP {self.payload_type} 101\r\n"
            f"a=rtpmap:{self.payload_type} {self.rtpmap}\r\n"
            "a=rtpmap:101 telephone-event/8000\r\n"
            "a=fmtp:101 0-16\r\n"
            "a=ptime:20\r\n"
            "a=sendrecv\r\n"
        )
        return (
            f"INVITE sip:bench@{th}:{tp} SIP/2.0\r\n"
            + self._common(
                phone, f"z9hG4bK-{phone.call_id}-i", "1 INVITE", f"<sip:bench@{th}:{tp}>"
            )
            + f"Contact: <sip:caller{phone.index}@{host}:{port}>\r\n"
            "Content-Type: application/sdp\r\n"
            f"Content-Length: {len(sdp)}\r\n\r\n" + sdp
        ).encode()

    def _ack_2xx(self, phone: Phone) -> bytes:
        return (
            f"ACK {phone.remote_target} SIP/2.0\r\n"
            + self._common(phone, f"z9hG4bK-{phone.call_id}-a", "1 ACK", phone.to_header)
            + "Content-Length: 0\r\n\r\n"
        ).encode()

    def _ack_non2xx(self, phone: Phone, to: str) -> bytes:
        th, tp = self.target
        return (
            f"ACK sip:bench@{th}:{tp} SIP/2.0\r\n"
            + self._common(phone, f"z9hG4bK-{phone.call_id}-i", "1 ACK", to)
            + "Content-Length: 0\r\n\r\n"
        ).encode()

    def _bye(self, phone: Phone) -> bytes:
        return (
            f"BYE {phone.remote_target} SIP/2.0\r\n"
            + self._common(phone, f"z9hG4bK-{phone.call_id}-b", "2 BYE", phone.to_header)
            + "Content-Length: 0\r\n\r\n"
        ).encode()

    # --- RTP

    def _new_phone(self, index: int) -> Phone:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 18)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        tag = os.urandom(6).hex()
        phone = Phone(
            index=index,
            call_id=f"{tag}-{index}",
            from_tag=tag,
            rtp_sock=sock,
            rtp_port=sock.getsockname()[1],
            ssrc=random.randrange(1, 2**32),
            seq=random.randrange(0, 2**16),
            ts=random.randrange(0, 2**32),
            slot=index % SLOTS,
            phase=0 if self.args.aligned else random.randrange(CYCLE_FRAMES),
        )
        self.loop.add_reader(sock.fileno(), self._readable, phone)
        return phone

    def _start_media(self, phone: Phone) -> None:
        if not phone.sending:
            phone.sending = True
            self.slots[phone.slot].append(phone)

    def _readable(self, phone: Phone) -> None:
        sock = phone.rtp_sock
        st = phone.stream
        payload_type, silence = self.payload_type, self.silence
        while True:
            try:
                data, anc, _flags, _addr = sock.recvmsg(2048, 64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            at = 0.0
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = _TIMESPEC.unpack_from(cdata)
                    at = sec + nsec * 1e-9
            if not at:
                at = time.time()
            if len(data) < 12 or data[1] & 0x7F != payload_type:
                continue  # RFC 4733 events etc. are not audio packets
            if st.first_wall is None:
                st.first_wall = at
            if st.counting:
                st.packets += 1
                if data[12:] not in silence:
                    st.voiced += 1
                if st.last is not None:
                    gap = at - st.last
                    if gap > st.worst_gap:
                        st.worst_gap = gap
                    if gap > 0.030:
                        st.gaps_over_30 += 1
                        if gap > 0.045:
                            st.gaps_over_45 += 1
                            if len(self.long_gaps) < 200_000:
                                self.long_gaps.append((at - gap, gap))
            st.last = at

    def _send_tick(self) -> None:
        """One sub-tick of the send grid: a packet for every call of this slot."""
        now = self.loop.time()
        deadline = self.t0 + self.tick * (PTIME / SLOTS)
        late = now - deadline
        if late > self.send_late_max:
            self.send_late_max = late
        if late > 0.005:
            self.send_late_over_5ms += 1
        self.send_ticks += 1
        slot = self.tick % SLOTS
        frame_no = self.tick // SLOTS
        cycle = self.cycle
        payload_type = self.payload_type
        pack = _RTP.pack
        for phone in self.slots[slot]:
            if not phone.sending or phone.remote_rtp is None:
                continue
            payload = cycle[(frame_no + phone.phase) % CYCLE_FRAMES]
            data = pack(0x80, payload_type, phone.seq, phone.ts, phone.ssrc) + payload
            phone.seq = (phone.seq + 1) & 0xFFFF
            phone.ts = (phone.ts + SAMPLES) & 0xFFFFFFFF
            try:
                phone.rtp_sock.sendto(data, phone.remote_rtp)
            except OSError:
                phone.send_errors += 1
        self.tick += 1
        # a stalled loop does not burst: skip to the next sub-tick in the future
        nxt = self.t0 + self.tick * (PTIME / SLOTS)
        if nxt < now - PTIME:
            self.tick = int((now - self.t0) / (PTIME / SLOTS)) + 1
            nxt = self.t0 + self.tick * (PTIME / SLOTS)
        if not self.stopping.is_set():
            self.loop.call_at(nxt, self._send_tick)

    # --- the run

    async def run(self) -> dict[str, Any]:
        args = self.args
        transport, _ = await self.loop.create_datagram_endpoint(
            lambda: self, local_addr=("127.0.0.1", 0)
        )
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        self.local_sip = sock.getsockname()[:2]
        self.t0 = self.loop.time()
        self.loop.call_at(self.t0, self._send_tick)
        retx = self.loop.create_task(self._retransmit())
        try:
            # ramp: INVITEs on an absolute schedule of `rate` per second
            start = self.loop.time()
            for i in range(args.calls):
                at = start + i / args.rate
                delay = at - self.loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if self.stopping.is_set():
                    break
                phone = self._new_phone(i)
                phone.invite = self._invite(phone)
                self.phones[phone.call_id] = phone
                self.order.append(phone)
                phone.invite_sent_at = phone.invite_retx_at = self.loop.time()
                self._send_sip(phone.invite)
            # wait for every final answer (Timer B: 32 s)
            give_up = self.loop.time() + 32
            self.ramp_done = True
            self._check_all_final()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.all_final.wait(), max(0.0, give_up - self.loop.time()))
            for p in self.order:
                if p.status == 0:
                    p.failure = p.failure or "no final response"
            up = sum(1 for p in self.order if p.sending)
            _emit({"event": "established", "calls": up, "ramp_s": self.loop.time() - start})
            await self._sleep_unless_stopped(args.settle)
            # steady-state window
            for p in self.order:
                p.stream.counting = True
                p.stream.gaps_over_30 = p.stream.gaps_over_45 = 0
            w0 = time.time()
            self.long_gaps.clear()
            lost_before = self.send_late_over_5ms
            late_max_before, self.send_late_max = self.send_late_max, 0.0
            _emit({"event": "window_start", "wall": w0})
            await self._sleep_unless_stopped(args.duration)
            for p in self.order:
                p.stream.counting = False
            w1 = time.time()
            self.window = (w0, w1)
            window_late_max = self.send_late_max
            window_late_over = self.send_late_over_5ms - lost_before
            _emit({"event": "window_end", "wall": w1})
        finally:
            self.stopping.set()
            await self._hang_up_all()
            retx.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await retx
            transport.close()
            for p in self.order:
                self.loop.remove_reader(p.rtp_sock.fileno())
                p.rtp_sock.close()
        return self._result(late_max_before, window_late_max, window_late_over)

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)
        if self.stopping.is_set():
            raise asyncio.CancelledError("stopped")

    async def _retransmit(self) -> None:
        """RFC 3261 17.1.1.2 Timer A (doubling from T1 = 0.5 s, until a provisional or final)."""
        while True:
            await asyncio.sleep(0.1)
            now = self.loop.time()
            for p in self.order:
                if (
                    p.status == 0
                    and not p.provisional
                    and now >= p.invite_retx_at + p.invite_interval
                ):
                    p.invite_retx_at = now
                    p.invite_interval = min(p.invite_interval * 2, 4.0)
                    self._send_sip(p.invite)

    async def _hang_up_all(self) -> None:
        self.stopping.set()
        calls = [p for p in self.order if p.status and 200 <= p.status < 300]
        for p in calls:
            p.sending = False
            if p.ended_by_gateway:
                p.bye_done = True
                continue
            p.bye = self._bye(p)
            self._send_sip(p.bye)
            p.bye_sent_at = self.loop.time()
        deadline = self.loop.time() + 10
        interval = 0.5
        while self.loop.time() < deadline and any(not p.bye_done for p in calls):
            await asyncio.sleep(interval)
            for p in calls:
                if not p.bye_done:
                    self._send_sip(p.bye)
            interval = min(interval * 2, 4.0)
        for p in calls:
            if not p.bye_done and not p.failure:
                p.failure = "bye unanswered"

    def _result(
        self, ramp_late_max: float, window_late_max: float, window_late_over: int
    ) -> dict[str, Any]:
        window = self.window
        setups = [p.setup_s for p in self.order if p.setup_s is not None]
        failures: dict[str, int] = {}
        for p in self.order:
            if p.failure:
                failures[p.failure] = failures.get(p.failure, 0) + 1
        out: dict[str, Any] = {
            "event": "result",
            "calls_placed": len(self.order),
            "calls_answered": sum(1 for p in self.order if p.status and 200 <= p.status < 300),
            "failed_calls": sum(failures.values()),
            "failures": failures,
            "setup_ms": _summary([s * 1000 for s in setups]),
            "loadgen_send_late_max_ms": round(window_late_max * 1000, 2),
            "loadgen_send_late_ramp_max_ms": round(ramp_late_max * 1000, 2),
            "loadgen_send_ticks_over_5ms": window_late_over,
            "send_errors": sum(p.send_errors for p in self.order),
            "unmatched_responses": self.unmatched,
        }
        if window is not None:
            span = window[1] - window[0]
            streams = [p.stream for p in self.order if p.remote_rtp is not None]
            worst = [s.worst_gap * 1000 for s in streams if s.packets > 1]
            expected = int(span / PTIME) * len(streams)
            received = sum(s.packets for s in streams)
            out.update(
                {
                    "window_s": round(span, 3),
                    "streams": len(streams),
                    "streams_silent": sum(1 for s in streams if s.packets == 0),
                    "streams_without_bot_audio": sum(1 for s in streams if s.voiced == 0),
                    "packets_expected": expected,
                    "packets_received": received,
                    "packets_voiced": sum(s.voiced for s in streams),
                    "worst_gap_median_ms": round(statistics.median(worst), 2) if worst else None,
                    "worst_gap_p90_ms": round(_quantile(worst, 0.9), 2) if worst else None,
                    "max_gap_ms": round(max(worst), 2) if worst else None,
                    "gaps_over_30ms": sum(s.gaps_over_30 for s in streams),
                    "gaps_over_45ms": sum(s.gaps_over_45 for s in streams),
                    "stalls": _stalls(self.long_gaps, window[0], len(streams)),
                }
            )
        return out


def _stalls(
    gaps: list[tuple[float, float]], w0: float, streams: int, top: int = 12
) -> list[dict[str, float]]:
    """Gaps over 45 ms grouped by when they began (within 20 ms of each other): many streams
    stalling at once is the gateway's loop blocked; a few alone is per-call work."""
    clusters: list[list[tuple[float, float]]] = []
    for began, length in sorted(gaps):
        if clusters and began - clusters[-1][0][0] <= 0.020:
            clusters[-1].append((began, length))
        else:
            clusters.append([(began, length)])
    clusters.sort(key=lambda c: (-len(c), -max(g for _, g in c)))
    return [
        {
            "at_s": round(c[0][0] - w0, 3),
            "streams_pct": round(len(c) / max(1, streams) * 100, 1),
            "max_gap_ms": round(max(g for _, g in c) * 1000, 1),
        }
        for c in clusters[:top]
    ]


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _summary(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    return {
        "n": len(values),
        "p50": round(_quantile(values, 0.5), 2),
        "p99": round(_quantile(values, 0.99), 2),
        "max": round(max(values), 2),
    }


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def _main(args: argparse.Namespace) -> int:
    gen = LoadGenerator(args)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, gen.stopping.set)
    try:
        result = await gen.run()
    except asyncio.CancelledError:
        result = gen._result(0.0, gen.send_late_max, 0)
        result["interrupted"] = True
    _emit(result)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="gateway SIP HOST:PORT (UDP)")
    parser.add_argument("--calls", type=int, required=True)
    parser.add_argument("--rate", type=float, default=20.0, help="new calls per second")
    parser.add_argument("--duration", type=float, default=30.0, help="steady window, seconds")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after the ramp")
    parser.add_argument("--codec", default="pcmu", choices=sorted(CODECS), help="what calls offer")
    parser.add_argument(
        "--staggered",
        dest="aligned",
        action="store_false",
        help="random speech phase per call instead of all calls in phase",
    )
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_main(args))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_main(args))


if __name__ == "__main__":
    raise SystemExit(main())

"""A real SIP call (sipp) to the whole gateway with `--provider yandex` pointed at the
Yandex-flavoured local provider: the test owns the caller's RTP (speech in, everything heard
recorded), sipp does the signalling and sends DTMF # by SIP INFO. The greeting and the echo are
heard by content through the 44.1 kHz output path, the # reaches the scenario, the model calls
end_call, and the gateway hangs up with BYE."""

from __future__ import annotations

import asyncio
import json
import random
import struct
from pathlib import Path
from typing import cast

import numpy as np
import telcodecs

from gateway.media.format import AudioFormat
from gateway.realtime.local.server import LocalProvider
from gateway.secret import Secret
from tests.support.audio import best_correlation, speech_like
from tests.support.gateway import running_gateway
from tests.support.sipp import Sipp

KEY = "yc-api-key-sip-test-7"


class RtpPeer(asyncio.DatagramProtocol):
    """The caller's media: records PCMU it receives, sends PCMU paced on 20 ms deadlines."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.received: list[tuple[int, bytes]] = []  # (seq, payload) of PT 0
        self.remote: tuple[str, int] | None = None
        self.first = asyncio.Event()
        self._seq = random.randrange(1 << 16)
        self._ts = random.randrange(1 << 32)
        self._ssrc = random.randrange(1 << 32)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) < 12 or data[0] >> 6 != 2:
            return
        self.remote = addr
        if data[1] & 0x7F == 0:
            cc = data[0] & 0x0F
            self.received.append((struct.unpack("!H", data[2:4])[0], data[12 + 4 * cc :]))
            self.first.set()

    def heard(self) -> np.ndarray:
        # RFC 3550 §A.1: order by extended sequence number (one wrap at most in a short call)
        first = self.received[0][0]
        ordered = sorted(self.received, key=lambda p: (p[0] - first) & 0xFFFF)
        return telcodecs.ulaw_decode(b"".join(payload for _, payload in ordered))

    async def play(self, pcm: np.ndarray, until: asyncio.Event) -> None:
        """Send `pcm` (8 kHz) then silence, one 20 ms packet per deadline, until `until`."""
        assert self.transport is not None and self.remote is not None
        loop = asyncio.get_running_loop()
        start = loop.time()
        n = 0
        while not until.is_set():
            chunk = pcm[n * 160 : (n + 1) * 160]
            if len(chunk) < 160:
                chunk = np.concatenate([chunk, np.zeros(160 - len(chunk), np.int16)])
            header = struct.pack("!BBHII", 0x80, 0, self._seq, self._ts, self._ssrc)
            self.transport.sendto(header + telcodecs.ulaw_encode(chunk), self.remote)
            self._seq = (self._seq + 1) & 0xFFFF
            self._ts = (self._ts + 160) & 0xFFFFFFFF
            n += 1
            await asyncio.sleep(max(0.0, start + n * 0.02 - loop.time()))


async def test_sipp_call_greeting_echo_and_info_hash_ends_with_bye(tmp_path: Path) -> None:
    provider = LocalProvider("yandex", use_espeak=False, record_frames=True, require_token=KEY)
    await provider.start()
    loop = asyncio.get_running_loop()
    transport, rtp = await loop.create_datagram_endpoint(RtpPeer, local_addr=("127.0.0.1", 0))
    rtp_port = transport.get_extra_info("sockname")[1]
    done = asyncio.Event()
    said = speech_like(1.2, seed=31)
    try:
        async with running_gateway(
            provider="yandex",
            provider_url=provider.url,
            yandex_folder_id="b1gtest",
            yandex_api_key=Secret(KEY),
            vad_silence_ms=400,
        ) as gw:
            sipp = Sipp(
                tmp_path,
                f"127.0.0.1:{gw.sip_port}",
                scenario="yandex_rtp_info_hash.xml",
                extra=["-m", "1", "-set", "rtp_port", str(rtp_port), "-d", "5500"],
                timeout=30,
            ).start()  # fmt: skip
            try:
                await asyncio.wait_for(rtp.first.wait(), 10)  # the greeting starts
                await asyncio.sleep(0.9)  # ...and ends (0.6 s chime)
                player = asyncio.create_task(rtp.play(said, done))
                result = await sipp.wait_async()
            finally:
                done.set()
                sipp.kill()
            await player
            assert result.successful_calls == 1 and result.failed_calls == 0, result.explain()
            assert "BYE sip:" in sipp.messages  # the gateway hung up
            await asyncio.sleep(0.1)
            assert not gw.manager.calls
            assert gw.sip_calls is not None and gw.sip_calls.ports.in_use == 0
    finally:
        transport.close()
        await provider.stop()
    heard = rtp.heard()
    # the greeting: the provider's 44.1 kHz prompt, resampled to the call's 8 kHz
    greeting = np.frombuffer(
        provider.options.prompts.audio("greeting", AudioFormat("pcm16", 44100)), "<i2"
    )
    resampler = telcodecs.Resampler(44100, 8000)
    greeting_8k = np.concatenate([resampler.process(greeting), resampler.flush()])
    assert best_correlation(greeting_8k[800:4000], heard[: 8000 * 2]) >= 0.9
    # the echo of what the caller said, after it (real RTP both ways, jitter buffer included)
    assert best_correlation(said[2000:7000], heard) >= 0.9
    # the INFO # reached the scenario (as the DTMF text convention) and the model ended the call
    engine = provider.sessions[0]
    frames = [json.loads(f) for f in engine.received or []]
    texts = [
        c.get("text")
        for f in frames
        if f["type"] == "conversation.item.create"
        for c in f["item"].get("content", [])
    ]
    assert "DTMF: #" in texts
    assert engine.stats["function_calls"] == 1
    assert any(
        f["type"] == "conversation.item.create" and f["item"]["type"] == "function_call_output"
        for f in frames
    )
    assert not {f["type"] for f in frames} & {
        "input_audio_buffer.clear",
        "output_audio_buffer.clear",
    }

"""The call bridge's media path: µs per 20 ms frame of `Call.deliver` and `Call.pull`, and per
100 ms audio delta, for a G.711 passthrough session and a transcoding (PCM16 24 kHz) one.

The Call runs as the media clock drives it (deliver then pull, every frame), its Realtime client
unconnected (appends queue in the protocol, as they do between two sends). Prints figures; it
does not pass or fail. Run: .venv/bin/python benchmarks/bench_bridge.py
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from gateway.call.call import Call, CallInfo, CallOptions
from gateway.media.convert import encode
from gateway.media.format import PCMU_8K, AudioFormat
from gateway.media.port import MediaPort, MediaSink
from gateway.realtime import events as rt
from gateway.realtime.client import RealtimeClient
from gateway.realtime.profiles import make_profile

FRAMES = 5000  # 100 s of call
REPEAT = 5


class _Leg(MediaPort):
    leg = "sip"
    native = PCMU_8K
    frame_ms = 20

    def attach(self, sink: MediaSink) -> None:
        self._attach_sink(sink)

    def send_dtmf(self, digits: str) -> None:
        pass

    async def aclose(self) -> None:
        pass


def _call(session: AudioFormat) -> Call:
    config = rt.SessionConfig(input_format=session, output_format=session)
    client = RealtimeClient(make_profile("local", base_url="ws://127.0.0.1:9"), config)
    info = CallInfo(leg="sip", direction="inbound", provider="local")
    return Call("bench", info, _Leg(), client, CallOptions(), created_at=0.0)


def _run(session: AudioFormat) -> tuple[float, float, float]:
    """Median µs per frame of deliver, of pull, and per 100 ms delta."""
    t = np.arange(160) / 8000
    frame = encode((8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16), PCMU_8K)
    n = session.rate // 10
    delta_pcm = (8000 * np.sin(2 * np.pi * 300 * np.arange(n) / session.rate)).astype(np.int16)
    delta_audio = encode(delta_pcm, session)
    deliver_us, pull_us, delta_us = [], [], []
    for _ in range(REPEAT):
        call = _call(session)
        proto = call._link.protocol  # appends pile up unsent: empty the queue now and then
        call._on_server_event(rt.ResponseCreated(response_id="r1"), 0.0)
        delta = rt.AudioDelta(response_id="r1", item_id="i1", audio=delta_audio)
        d = p = a = 0.0
        now = 0.0
        for i in range(FRAMES):
            if i % 5 == 0:
                s = time.perf_counter()
                call._on_server_event(delta, now)
                a += time.perf_counter() - s
            s = time.perf_counter()
            call.deliver(frame, now)
            m = time.perf_counter()
            call.pull(now)
            e = time.perf_counter()
            d += m - s
            p += e - m
            now += 0.02
            if i % 50 == 0:
                proto._queue.clear()
                proto._queued_audio = 0
        deliver_us.append(d / FRAMES * 1e6)
        pull_us.append(p / FRAMES * 1e6)
        delta_us.append(a / (FRAMES / 5) * 1e6)
    return statistics.median(deliver_us), statistics.median(pull_us), statistics.median(delta_us)


def main() -> None:
    for name, session in (("passthrough", PCMU_8K), ("transcoding", AudioFormat("pcm16", 24000))):
        d, p, a = _run(session)
        print(
            f"bridge {name:11s}: deliver {d:5.2f} µs/frame, pull {p:5.2f} µs/frame,"
            f" delta {a:6.2f} µs/100 ms"
        )


if __name__ == "__main__":
    main()

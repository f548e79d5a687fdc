"""Realtime hot-path costs: client append encode, client delta decode, local provider append.

Prints microseconds per operation; it does not pass or fail.
"""

from __future__ import annotations

import base64
import json
import time

from gateway.media.format import PCMU_8K
from gateway.realtime import events as ev
from gateway.realtime.events import SessionConfig, TurnDetection
from gateway.realtime.local.engine import EngineOptions, LocalEngine
from gateway.realtime.protocol import RealtimeProtocol


def per_op(fn: object, n: int) -> float:
    assert callable(fn)
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    audio = b"\xd5" * 480  # 60 ms of pcmu
    print(
        f"encode_append 60 ms pcmu:        {per_op(lambda: ev.encode_append(audio), 50000):7.2f} µs"
    )
    config = SessionConfig(
        input_format=PCMU_8K, output_format=PCMU_8K, turn_detection=TurnDetection()
    )
    proto = RealtimeProtocol(config)
    proto.connection_made(0.0)
    proto.receive_text(json.dumps({"type": "session.created", "session": {}}), 0.0)
    proto.receive_text(json.dumps({"type": "session.updated", "session": config.to_wire()}), 0.0)

    def send() -> None:
        proto.send_audio(audio)
        proto.next_frame()

    print(f"protocol send_audio+next_frame:  {per_op(send, 50000):7.2f} µs")
    delta = json.dumps(
        {
            "type": "response.output_audio.delta",
            "event_id": "e",
            "response_id": "r",
            "item_id": "i",
            "output_index": 0,
            "content_index": 0,
            "delta": base64.b64encode(b"\xd5" * 800).decode(),
        }
    )

    def receive() -> None:
        proto.receive_text(delta, 1.0)
        proto.events_received()

    print(f"protocol receive 100 ms delta:   {per_op(receive, 50000):7.2f} µs")
    engine = LocalEngine(EngineOptions(), 0.0)
    engine.receive_text(
        json.dumps(
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "audio": {
                        "input": {"format": {"type": "audio/pcmu"}},
                        "output": {"format": {"type": "audio/pcmu"}},
                    },
                },
            }
        ),
        0.0,
    )
    engine.events_to_send()
    frame = ev.encode_append(audio)

    def append() -> None:
        engine.receive_text(frame, 0.0)
        engine.events_to_send()

    print(f"local engine append 60 ms pcmu:  {per_op(append, 20000):7.2f} µs")


if __name__ == "__main__":
    main()

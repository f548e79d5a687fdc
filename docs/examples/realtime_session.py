"""A Realtime session against the embedded local provider: greeting, one caller turn, echo.

Run it with `python docs/examples/realtime_session.py` from the repository (venv active).
The local provider runs in-process on a free loopback port; no key, no network.
"""

from __future__ import annotations

import asyncio
import audioop

import numpy as np

from gateway.media.format import PCMU_8K
from gateway.realtime import events as ev
from gateway.realtime.client import RealtimeClient
from gateway.realtime.events import SessionConfig, TurnDetection
from gateway.realtime.local.server import LocalProvider
from gateway.realtime.profiles import make_profile


async def main() -> None:
    provider = LocalProvider()  # speaks with espeak-ng when installed, else chimes
    url = await provider.start("127.0.0.1", 0)
    config = SessionConfig(
        instructions="You are a helpful voice assistant on a phone call.",
        voice="marin",
        input_format=PCMU_8K,  # G.711 passthrough: what a SIP leg already has
        output_format=PCMU_8K,
        turn_detection=TurnDetection(create_response=True, interrupt_response=True),
    )
    try:
        async with RealtimeClient(make_profile("local", base_url=url), config) as rt:
            print(f"session ready: in={rt.input_format} out={rt.output_format}")
            rt.create_response()  # nothing said yet: the provider greets
            # one second of a 440 Hz "caller" tone between silences, in 60 ms appends
            t = np.arange(8000) / 8000
            tone = audioop.lin2ulaw((np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes(), 2)
            caller = b"\xff" * 2400 + tone + b"\xff" * 6400
            bot = bytearray()
            responses = 0
            async for event in rt.events():
                if isinstance(event, ev.AudioDelta):
                    bot += event.audio
                elif isinstance(event, ev.SpeechStarted):
                    print(f"caller speech started at {event.audio_start_ms} ms")
                elif isinstance(event, ev.ResponseDone):
                    responses += 1
                    print(f"response {responses} {event.status}: {len(bot) / 8:.0f} ms of audio")
                    if responses == 1:
                        for i in range(0, len(caller), 480):
                            rt.send_audio(caller[i : i + 480])
                        bot.clear()
                    else:
                        print("echo contains the caller's tone:", tone in bytes(bot))
                        break
    finally:
        await provider.stop()


if __name__ == "__main__":
    asyncio.run(main())

"""Real peers of the local provider: the openai SDK's own Realtime client, the `gateway
provider` command, and the docs example script."""

from __future__ import annotations

import asyncio
import audioop
import base64
import sys
from pathlib import Path
from typing import Any

import numpy as np

from gateway.media.format import PCMU_8K
from gateway.realtime.client import RealtimeClient
from gateway.realtime.events import SessionConfig, TurnDetection
from gateway.realtime.local.server import LocalProvider
from gateway.realtime.profiles import make_profile
from tests.support.harness import free_port

ROOT = Path(__file__).resolve().parents[2]


async def test_openai_sdk_client_drives_the_local_provider(conform: Any) -> None:
    from openai import AsyncOpenAI

    provider = LocalProvider(use_espeak=False, record_frames=True, speedup=20.0)
    await provider.start()
    try:
        client = AsyncOpenAI(api_key="x", websocket_base_url=provider.base_url)
        async with client.realtime.connect(model="gpt-realtime") as conn:
            first = await conn.recv()
            assert first.type == "session.created"
            await conn.session.update(
                session={
                    "type": "realtime",
                    "instructions": "echo",
                    "audio": {
                        "input": {
                            "format": {"type": "audio/pcmu"},
                            "turn_detection": {"type": "server_vad", "silence_duration_ms": 400},
                        },
                        "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"},
                    },
                }
            )
            updated = await conn.recv()
            assert updated.type == "session.updated"
            conform.server(updated.model_dump(exclude_unset=True))
            rng = np.random.default_rng(5)
            speech = audioop.lin2ulaw(
                np.clip(rng.standard_normal(6400) * 5000, -32768, 32767).astype("<i2").tobytes(), 2
            )
            turn = b"\xff" * 2400 + speech + b"\xff" * 5600
            for i in range(0, len(turn), 480):
                await conn.input_audio_buffer.append(
                    audio=base64.b64encode(turn[i : i + 480]).decode()
                )
            echo = bytearray()
            kinds = []
            async with asyncio.timeout(10):
                async for event in conn:
                    kinds.append(event.type)
                    conform.server(event.model_dump(exclude_unset=True))
                    if event.type == "response.output_audio.delta":
                        echo += base64.b64decode(event.delta)
                    if event.type == "response.done":
                        break
        assert kinds[:3] == [
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
        ]
        assert speech in bytes(echo)
        for frame in provider.sessions[0].received or []:
            conform.client(frame)
    finally:
        await provider.stop()


async def test_gateway_provider_runs_standalone() -> None:
    port = free_port()
    exe = Path(sys.executable).with_name("gateway")
    proc = await asyncio.create_subprocess_exec(
        str(exe),
        "provider",
        "--listen",
        f"127.0.0.1:{port}",
        "--log-format",
        "json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert f"ws://127.0.0.1:{port}/v1/realtime" in line
        config = SessionConfig(
            input_format=PCMU_8K, output_format=PCMU_8K, turn_detection=TurnDetection()
        )
        profile = make_profile("local", base_url=f"ws://127.0.0.1:{port}")
        async with RealtimeClient(profile, config) as rt:
            assert rt.output_format == PCMU_8K
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 0  # SIGTERM is a clean stop


async def test_docs_example_runs() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "docs" / "examples" / "realtime_session.py"),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = out.decode()
    assert proc.returncode == 0, text
    assert "session ready: in=pcmu/8000 out=pcmu/8000" in text
    assert "echo contains the caller's tone: True" in text

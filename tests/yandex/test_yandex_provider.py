"""The Yandex-flavoured local provider behaves as Yandex AI Studio documents it: handshake
(model URI, Api-Key/Bearer), PCM16 only, 44.1 kHz output, Yandex extras and SpeechKit voices,
no session.type, unsupported clears, the events it never sends, and the same VAD/echo/greeting/
tools as the default flavour. Every frame is checked with the Yandex profile of the schema."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from gateway.errors import ConnectError
from gateway.media.format import PCM16_24K, AudioFormat
from gateway.realtime import events as ev
from gateway.realtime.client import RealtimeClient, ReconnectPolicy
from gateway.realtime.dtmf import dtmf_text
from gateway.realtime.local.engine import FLAVORS, EngineOptions, LocalEngine
from gateway.realtime.local.server import LocalProvider
from gateway.realtime.profiles import make_profile
from gateway.secret import Secret
from tests.support.gateway import running_gateway
from tests.support.harness import free_port
from tests.support.realtime_schema import YandexConformance

RATE = 24000
NEVER_SENT = (
    "output_audio_buffer.started",
    "output_audio_buffer.stopped",
    "output_audio_buffer.cleared",
    "rate_limits.updated",
    "input_audio_buffer.dtmf_event_received",
    "conversation.item.input_audio_transcription.delta",
)
CONFIG = ev.SessionConfig(
    voice="marina",
    input_format=PCM16_24K,
    output_format=PCM16_24K,
    turn_detection=ev.TurnDetection(),
    input_languages=("ru-RU",),
)


def noise(ms: int, seed: int, rate: int = RATE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(rate * ms // 1000) * 32767 * 10 ** (-15 / 20)
    return np.clip(x, -32768, 32767).astype(np.int16)


def silence(ms: int) -> np.ndarray:
    return np.zeros(RATE * ms // 1000, np.int16)


class YandexPeer:
    """Drives a yandex-flavour LocalEngine on a fake clock; validates every frame both ways."""

    def __init__(self) -> None:
        self.schema = YandexConformance()
        self.now = 0.0
        self.engine = LocalEngine(EngineOptions(flavor=FLAVORS["yandex"]), self.now)
        self.events: list[dict[str, Any]] = []
        self._collect()

    def _collect(self) -> list[dict[str, Any]]:
        out = []
        for frame in self.engine.events_to_send():
            self.schema.server(frame)
            out.append(json.loads(frame))
        self.events += out
        return out

    def send(self, event: dict[str, Any], validate: bool = True) -> list[dict[str, Any]]:
        if validate:
            self.schema.client(event)
        self.engine.receive_text(json.dumps(event), self.now)
        return self._collect()

    def append(self, pcm: np.ndarray, chunk_ms: int = 60) -> list[dict[str, Any]]:
        out = []
        step = RATE * chunk_ms // 1000
        for i in range(0, len(pcm), step):
            data = pcm[i : i + step].astype("<i2").tobytes()
            audio = base64.b64encode(data).decode()
            out += self.send({"type": "input_audio_buffer.append", "audio": audio})
        return out

    def run(self, seconds: float = 30.0) -> list[dict[str, Any]]:
        out = []
        end = self.now + seconds
        while (t := self.engine.get_timer()) is not None and t <= end:
            self.now = max(self.now, t)
            self.engine.handle_timer(self.now)
            out += self._collect()
        return out


def update(**session: Any) -> dict[str, Any]:
    return {"type": "session.update", "session": session}


def audio_of(events: list[dict[str, Any]]) -> bytes:
    return b"".join(
        base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta"
    )


def test_session_objects_have_no_type_and_report_44k_output() -> None:
    p = YandexPeer()
    assert p.events[0]["type"] == "session.created"
    assert "type" not in p.events[0]["session"]
    out = p.send(
        update(
            audio={
                "input": {"format": {"type": "audio/pcm", "rate": 24000}, "languages": ["ru-RU"]},
                "output": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "voice": "alena",
                    "role": "friendly",
                },
            }
        )
    )
    assert [e["type"] for e in out] == ["session.updated"]
    session = out[0]["session"]
    assert "type" not in session
    assert session["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 44100}
    assert session["audio"]["input"]["languages"] == ["ru-RU"]
    assert session["audio"]["output"]["role"] == "friendly"
    assert session["audio"]["output"]["voice"] == "alena"
    assert p.engine.stats["errors"] == 0


@pytest.mark.parametrize("fmt", ["audio/pcmu", "audio/pcma"])
def test_g711_input_or_output_is_refused_with_an_error_event(fmt: str) -> None:
    p = YandexPeer()
    for side in ("input", "output"):
        out = p.send(update(audio={side: {"format": {"type": fmt}}}))
        assert [e["type"] for e in out] == ["error"]
        assert out[0]["error"]["code"] == "invalid_value"
        assert out[0]["error"]["param"] == f"session.audio.{side}.format.type"
    # the session is unchanged and still PCM16
    assert p.engine.input_format == AudioFormat("pcm16", 24000)


def test_openai_voice_is_refused_speechkit_voices_accepted() -> None:
    p = YandexPeer()
    out = p.send(update(audio={"output": {"voice": "marin"}}))
    assert out[0]["type"] == "error" and out[0]["error"]["param"] == "session.audio.output.voice"
    for voice in ("marina", "filipp", "dasha"):
        out = p.send(update(audio={"output": {"voice": voice}}))
        assert out[0]["type"] == "session.updated"


@pytest.mark.parametrize("kind", ["input_audio_buffer.clear", "output_audio_buffer.clear"])
def test_buffer_clears_are_unsupported(kind: str) -> None:
    p = YandexPeer()
    p.append(noise(300, seed=1))
    out = p.send({"type": kind, "event_id": "evt_c1"})
    assert [e["type"] for e in out] == ["error"]
    assert out[0]["error"]["code"] == "unsupported_event"
    assert out[0]["error"]["event_id"] == "evt_c1"
    # the buffered speech was not cleared: it is still echoed
    events = p.append(np.concatenate([noise(300, seed=1), silence(800)])) + p.run()
    assert len(audio_of(events)) > 0


def test_turn_echo_greeting_tools_and_the_events_never_sent() -> None:
    p = YandexPeer()
    tools = [{"type": "function", "name": "end_call", "parameters": {"type": "object"}}]
    p.send(
        update(
            tools=tools,
            audio={
                "input": {
                    "transcription": {"model": "gpt-4o-mini-transcribe"},
                    "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
                }
            },
        )
    )
    # greeting: response.create with nothing pending
    p.send({"type": "response.create"})
    greeting = p.run()
    assert next(e for e in greeting if e["type"] == "response.done")["response"]["status"] == (
        "completed"
    )
    assert len(audio_of(greeting)) > 44100  # > 0.5 s at 44.1 kHz
    # a caller turn: VAD, commit, transcription without usage, echo at 44.1 kHz
    said = noise(800, seed=4)
    events = p.append(np.concatenate([silence(200), said, silence(900)])) + p.run()
    types = [e["type"] for e in events]
    for kind in (
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.input_audio_transcription.completed",
        "response.done",
    ):
        assert kind in types, kind
    done = next(e for e in events if e["type"].endswith("transcription.completed"))
    assert "usage" not in done
    echo = np.frombuffer(audio_of(events), dtype="<i2").astype(np.float64)
    # the echo is the caller's audio resampled to 44.1 kHz: same length (in time) and content
    expected = np.interp(
        np.arange(int(len(said) * 44100 / RATE)) * RATE / 44100, np.arange(len(said)), said
    )
    # prefix padding (300 ms) and the VAD's silence (500 ms) ride along, nothing more
    assert 0 <= len(echo) / 44100 - len(said) / RATE < 0.9
    part = expected[4410:30000]
    corr = np.correlate(echo, part, mode="valid")
    norm = np.sqrt(np.sum(part**2) * np.convolve(echo**2, np.ones(len(part)), "valid"))
    assert float(np.max(corr / (norm + 1e-9))) > 0.9
    # DTMF '#' as text, then a function call to end_call
    p.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": dtmf_text("#")}],
            },
        }
    )
    out = p.send({"type": "response.create"}) + p.run()
    call = next(e for e in out if e["type"] == "response.function_call_arguments.done")
    assert call["name"] == "end_call"
    seen = {e["type"] for e in p.events}
    assert not seen & set(NEVER_SENT)
    assert p.schema.checked > 50


def test_retrieve_is_supported_there() -> None:
    p = YandexPeer()
    p.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "hi"}],
            },
        }
    )
    item_id = next(e for e in p.events if e["type"] == "conversation.item.added")["item"]["id"]
    out = p.send({"type": "conversation.item.retrieve", "item_id": item_id})
    assert out[0]["type"] == "conversation.item.retrieved"


# --- the handshake over real sockets ---------------------------------------------------------


async def test_handshake_needs_model_uri_and_credentials() -> None:
    provider = LocalProvider("yandex", use_espeak=False)
    url = await provider.start()
    try:
        good = make_profile(
            "yandex", base_url=url, yandex_folder_id="b1gfolder", yandex_api_key=Secret("k1")
        )
        assert "model=gpt://b1gfolder/speech-realtime-250923" in good.url
        cases = {
            "no credentials": (dataclasses.replace(good, credential=Secret("")), 401),
            "OpenAI-style model": (
                make_profile(
                    "yandex",
                    base_url=url,
                    model="gpt-realtime",
                    yandex_folder_id="b1gfolder",
                    yandex_api_key=Secret("k1"),
                ),
                403,
            ),
            "no model": (dataclasses.replace(good, url=url), 403),
            "wrong model": (
                dataclasses.replace(
                    good, url=good.url.replace("speech-realtime-250923", "yandexgpt")
                ),
                403,
            ),
        }
        for name, (profile, status) in cases.items():
            before = provider.rejected
            client = RealtimeClient(profile, CONFIG, reconnect=ReconnectPolicy(attempts=5))
            with pytest.raises(ConnectError) as info:
                await client.connect()
            assert info.value.status == status, name
            assert not info.value.retryable, name
            assert str(info.value).startswith(f"{status} "), name
            assert "from provider yandex" in str(info.value), name
            assert provider.rejected == before + 1, name  # asked once: not retried
            assert client.closed
        # both documented schemes are accepted
        iam = make_profile(
            "yandex", base_url=url, yandex_folder_id="b1gfolder", yandex_iam_token=Secret("t1")
        )
        for profile in (good, iam):
            async with RealtimeClient(profile, CONFIG) as rt:
                assert rt.output_format == AudioFormat("pcm16", 44100)
                assert rt.effective is not None and rt.effective.input_languages == ("ru-RU",)
    finally:
        await provider.stop()
    assert len(provider.sessions) == 2


async def test_reconnect_refused_with_401_is_not_retried() -> None:
    provider = LocalProvider("yandex", use_espeak=False, require_token="key-1")
    url = await provider.start()
    try:
        profile = make_profile(
            "yandex", base_url=url, yandex_folder_id="b1g", yandex_api_key=Secret("key-1")
        )
        rt = RealtimeClient(profile, CONFIG, reconnect=ReconnectPolicy(attempts=5, within_s=3))
        await rt.connect()
        provider.require_token = "key-2"  # the key was revoked
        provider.drop_connections()
        lost = None
        async for event in rt.events():
            if isinstance(event, ev.SessionLost):
                lost = event
        assert lost is not None and "401" in lost.reason
        assert provider.rejected == 1
        await rt.close()
    finally:
        await provider.stop()


async def test_standalone_provider_process_with_yandex_flavour() -> None:
    port = free_port()
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, stopped by PID below
        [sys.executable, "-m", "gateway", "provider", "--flavor", "yandex", "--listen",
         f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        url = f"ws://127.0.0.1:{port}/v1/realtime"
        profile = make_profile(
            "yandex", base_url=url, yandex_folder_id="b1g", yandex_api_key=Secret("any")
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while True:
            try:
                async with RealtimeClient(profile, CONFIG) as rt:
                    assert rt.output_format == AudioFormat("pcm16", 44100)
                    assert rt.effective is not None and rt.effective.voice == "marina"
                break
            except ConnectError as exc:
                assert exc.status is None, exc  # not up yet; never a refusal
                assert loop.time() < deadline, "provider did not start"
                await asyncio.sleep(0.2)
        with pytest.raises(ConnectError) as info:
            await RealtimeClient(
                dataclasses.replace(profile, credential=Secret("")), CONFIG
            ).connect()
        assert info.value.status == 401
    finally:
        proc.terminate()
        proc.wait(10)


async def test_gateway_local_flavor_yandex_uses_the_yandex_profile() -> None:
    async with running_gateway(provider="local", local_flavor="yandex") as gw:
        assert gw.profile is not None and gw.profile.name == "yandex"
        assert gw.profile.pcm_only and not gw.profile.supports("input_audio_buffer.clear")
        assert gw.local_provider is not None and gw.local_provider.require_token
        assert gw.calls is not None
        prepared = await gw.calls.open_session(leg="sip", direction="inbound", codec="pcmu")
        try:
            assert prepared.client.input_format == PCM16_24K
            assert prepared.client.output_format == AudioFormat("pcm16", 44100)
        finally:
            await gw.calls.abandon(prepared)
        assert gw.local_provider.rejected == 0

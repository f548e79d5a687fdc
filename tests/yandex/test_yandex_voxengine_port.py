"""The VoxEngine-style scenario of docs/voxengine.md (docs/examples/voxengine_port.py), loaded
with load_scenario and run against the Yandex-flavoured local provider: it greets, barges in
with clearMediaBuffer when the caller speaks, and hangs up on the model's function call."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.call.events import BotMediaEnded, DtmfReceived
from gateway.call.scenario import load_scenario
from gateway.realtime.local.server import LocalProvider
from tests.support.audio import speech_like
from tests.support.local_provider import client_frames
from tests.support.waiting import wait_for
from tests.support.yandex import YANDEX_KEY, start_yandex_call

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "voxengine_port.py"
DOC = ROOT / "docs" / "voxengine.md"


def doc_listing() -> str:
    """The Python listing of docs/voxengine.md's "ported line by line" section, as printed."""
    section = DOC.read_text().split("## A scenario, ported line by line", 1)[1]
    blocks = re.findall(r"^```python\n(.*?)^```", section, re.S | re.M)
    assert len(blocks) == 1, "expected one Python listing in the section"
    return str(blocks[0])


@pytest.fixture
async def provider() -> AsyncIterator[LocalProvider]:
    p = LocalProvider("yandex", use_espeak=False, record_frames=True, require_token=YANDEX_KEY)
    await p.start()
    yield p
    await p.stop()


@pytest.mark.parametrize("source", ["example", "doc_listing"])
async def test_voxengine_port_greets_barges_in_and_hangs_up(
    provider: LocalProvider, source: str, tmp_path: Path
) -> None:
    path = EXAMPLE
    if source == "doc_listing":  # the listing runs as printed (imports, constants and all)
        path = tmp_path / "listing.py"
        path.write_text(doc_listing())
    setup = load_scenario(path)
    c = await start_yandex_call(provider, setup, greeting=False)
    media_ended: list[BotMediaEnded] = []
    c.call.on(BotMediaEnded, media_ended.append)
    # greet: the scenario's own response.create, heard by the caller
    await wait_for(lambda: any(f is not None for _, f in c.leg.sent))
    updates = [f for f in client_frames(provider) if f["type"] == "session.update"]
    assert len(updates) == 2  # the gateway's session, then the scenario's sessionUpdate
    assert updates[1]["session"]["tools"][0]["name"] == "end_call"
    assert "type" not in updates[1]["session"]  # yandex: no session.type
    # barge-in: the caller talks over the greeting; clearMediaBuffer drops the bot's audio
    await asyncio.sleep(0.25)
    c.leg.say(speech_like(1.0, seed=51))
    await wait_for(lambda: c.call.stats["barge_ins"] == 1)
    greeting_id = next(iter(c.call.playout.items))
    played = c.call.playout.items[greeting_id].played_bytes
    assert 0 < c.call.item_played_ms(greeting_id) < c.call.item_audio_ms(greeting_id)  # cut short
    # the echo of the caller's turn plays, then WebSocketMediaEnded after 1 s of silence
    await wait_for(lambda: len(c.call.playout.items) >= 2, 10)
    echo_id = list(c.call.playout.items)[1]
    await wait_for(lambda: any(e.item_id == echo_id for e in media_ended), 10)
    assert media_ended[0].item_id == greeting_id  # the cut greeting ended first
    assert c.call.playout.items[greeting_id].played_bytes == played  # never resumed
    # hang up on a function call: DTMF # -> the model calls end_call -> the scenario hangs up
    c.call.leg_event(DtmfReceived("#", "rfc4733"))
    await asyncio.wait_for(c.task, 10)
    assert c.call.outcome == "completed" and c.leg.closed
    frames = client_frames(provider)
    outputs = [
        f
        for f in frames
        if f["type"] == "conversation.item.create" and f["item"]["type"] == "function_call_output"
    ]
    assert len(outputs) == 1 and json.loads(outputs[0]["item"]["output"]) == {"ok": True}
    assert provider.sessions[0].stats["function_calls"] == 1
    assert provider.sessions[0].stats["errors"] == 0
    assert not {f["type"] for f in frames} & {
        "input_audio_buffer.clear",
        "output_audio_buffer.clear",
    }

"""The Yandex profile of the schema check accepts exactly Yandex's documented differences from
the OpenAI models, and still rejects misspelt fields and undocumented differences."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from tests.support.realtime_schema import YandexConformance, YandexSchemaError

SESSION_CREATED: dict[str, Any] = {
    "type": "session.created",
    "event_id": "event_1",
    "session": {
        "model": "gpt://b1g/speech-realtime-250923",
        "output_modalities": ["audio"],
        "instructions": "",
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "turn_detection": {"type": "server_vad", "threshold": 0.5},
                "languages": ["ru-RU"],
            },
            "output": {
                "format": {"type": "audio/pcm", "rate": 44100},
                "voice": "marina",
                "role": "friendly",
            },
        },
    },
}
TRANSCRIPTION_DONE: dict[str, Any] = {
    "type": "conversation.item.input_audio_transcription.completed",
    "event_id": "event_2",
    "item_id": "item_1",
    "content_index": 0,
    "transcript": "привет",
}
SESSION_UPDATE: dict[str, Any] = {
    "type": "session.update",
    "session": {
        "audio": {
            "input": {"format": {"type": "audio/pcm", "rate": 24000}, "languages": ["ru-RU"]},
            "output": {"voice": "marina", "role": "neutral"},
        }
    },
}


def test_documented_differences_pass() -> None:
    schema = YandexConformance()
    schema.server(SESSION_CREATED)
    schema.server({**SESSION_CREATED, "type": "session.updated"})
    schema.server(TRANSCRIPTION_DONE)
    schema.client(SESSION_UPDATE)
    assert schema.checked == 4


def _changed(event: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(event)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


@pytest.mark.parametrize(
    ("event", "path", "value", "server"),
    [
        # misspelt fields
        (SESSION_CREATED, ("session", "audio", "input", "lanugages"), ["ru-RU"], True),
        (TRANSCRIPTION_DONE, ("transcrpit",), "x", True),
        (SESSION_UPDATE, ("session", "audio", "output", "rol"), "neutral", False),
    ],
)
def test_misspelt_fields_are_rejected(
    event: dict[str, Any], path: tuple[str, ...], value: Any, server: bool
) -> None:
    schema = YandexConformance()
    bad = _changed(event, path, value)
    with pytest.raises(YandexSchemaError, match=path[-1]):
        schema.server(bad) if server else schema.client(bad)


@pytest.mark.parametrize(
    ("event", "path", "value", "server"),
    [
        # output at a rate Yandex does not document
        (SESSION_CREATED, ("session", "audio", "output", "format"),
         {"type": "audio/pcm", "rate": 16000}, True),
        # 44.1 kHz is documented for output only
        (SESSION_CREATED, ("session", "audio", "input", "format"),
         {"type": "audio/pcm", "rate": 44100}, True),
        # the extras belong on one side each
        (SESSION_CREATED, ("session", "audio", "output", "languages"), ["ru-RU"], True),
        (SESSION_CREATED, ("session", "audio", "input", "role"), "friendly", True),
        # wrong types for the extras
        (SESSION_CREATED, ("session", "audio", "input", "languages"), "ru-RU", True),
        # a missing field other than usage
        (TRANSCRIPTION_DONE, ("item_id",), None, True),
        # an event type that exists nowhere
        (SESSION_UPDATE, ("type",), "session.updte", False),
    ],
)  # fmt: skip
def test_undocumented_differences_are_rejected(
    event: dict[str, Any], path: tuple[str, ...], value: Any, server: bool
) -> None:
    schema = YandexConformance()
    bad = _changed(event, path, value)
    with pytest.raises((YandexSchemaError, ValidationError)):
        schema.server(bad) if server else schema.client(bad)
    assert schema.checked == 0


def test_openai_traffic_passes_too() -> None:
    # nothing more than the differences: OpenAI-shaped events are still valid
    schema = YandexConformance()
    event = copy.deepcopy(SESSION_CREATED)
    event["session"]["type"] = "realtime"
    event["session"]["audio"]["output"]["format"]["rate"] = 24000
    schema.server(event)
    schema.server({**TRANSCRIPTION_DONE, "usage": {"type": "duration", "seconds": 1.0}})
    assert schema.checked == 2

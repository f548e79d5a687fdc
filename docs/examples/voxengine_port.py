"""A VoxEngine Yandex Realtime scenario, ported line by line (see docs/voxengine.md for the
original JavaScript next to it).

Greets the caller, stops the bot's audio the moment the caller starts speaking (barge-in with
clearMediaBuffer), passes DTMF to the model as text, and hangs up when the model calls the
`end_call` function.
"""

from __future__ import annotations

import json
from typing import Any

from gateway.call.call import Call
from gateway.call.voxengine import CallEvents, Yandex

INSTRUCTIONS = "You are a friendly phone assistant. Call end_call when the caller says goodbye."
END_CALL_TOOL = {
    "type": "function",
    "name": "end_call",
    "description": "End the phone call.",
    "parameters": {"type": "object", "properties": {}},
}


def setup(call: Call) -> None:
    client = Yandex.create_realtime_api_client(call)
    call.send_media_to("model")
    client.send_media_to()

    client.session_update({"instructions": INSTRUCTIONS, "tools": [END_CALL_TOOL]})
    client.response_create()

    def on_speech_started(event: Any) -> None:
        client.clear_media_buffer()

    async def on_function_call(event: Any) -> None:
        if event.name == "end_call":
            client.conversation_item_create(
                {
                    "type": "function_call_output",
                    "call_id": event.call_id,
                    "output": json.dumps({"ok": True}),
                }
            )
            await call.hangup()

    def on_tone(event: Any) -> None:
        client.conversation_item_create(
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": f"DTMF: {event.digit}"}],
            }
        )
        client.response_create()

    def on_media_ended(event: Any) -> None:
        call.log.info("bot_finished_speaking", item_id=event.item_id)

    def on_disconnected(event: Any) -> None:
        client.close()

    client.add_event_listener(
        Yandex.RealtimeAPIEvents.InputAudioBufferSpeechStarted, on_speech_started
    )
    client.add_event_listener(
        Yandex.RealtimeAPIEvents.ResponseFunctionCallArgumentsDone, on_function_call
    )
    client.add_event_listener(Yandex.Events.WebSocketMediaEnded, on_media_ended)
    call.on(CallEvents.ToneReceived, on_tone)
    call.on(CallEvents.Disconnected, on_disconnected)

"""CallService: per-call session settings reach the Realtime session (real local provider)."""

from __future__ import annotations

import json

from gateway.call.default_scenario import TOOLS, setup
from gateway.call.manager import CallManager
from gateway.call.service import CallService
from gateway.realtime.local.server import LocalProvider
from gateway.realtime.profiles import make_profile
from gateway.secret import Secret
from tests.support.gateway import settings


async def test_yandex_languages_and_caller_template_reach_the_session() -> None:
    provider = LocalProvider("yandex", use_espeak=False, record_frames=True, require_token="k-123")
    await provider.start()
    try:
        s = settings(
            languages=["ru-RU"], instructions="Caller {caller} dialled {called}.", voice="alena"
        )
        profile = make_profile(
            "yandex",
            base_url=provider.url,
            yandex_folder_id="local",
            yandex_api_key=Secret("k-123"),
        )
        service = CallService(s, profile, CallManager(2), setup, TOOLS)
        prepared = await service.open_session(
            leg="sip", direction="inbound", codec="pcmu", caller="+7900", called="100"
        )
        updates = [json.loads(f) for f in provider.sessions[0].received or []]
        session = next(u for u in updates if u["type"] == "session.update")["session"]
        assert session["audio"]["input"]["languages"] == ["ru-RU"]
        assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
        assert session["instructions"] == "Caller +7900 dialled 100."
        assert session["audio"]["output"]["voice"] == "alena"
        assert prepared.client.output_format.rate == 44100  # Yandex answers at 44.1 kHz
        await service.abandon(prepared)
        assert service.manager._reserved == 0
    finally:
        await provider.stop()

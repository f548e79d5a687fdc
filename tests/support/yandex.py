"""Calls with `--provider yandex` against the Yandex-flavoured local provider
(`LocalProvider("yandex", require_token=YANDEX_KEY)`), on an in-memory leg."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.call.call import Call
from gateway.call.default_scenario import TOOLS
from gateway.call.default_scenario import setup as default_setup
from gateway.call.manager import CallManager
from gateway.call.service import CallService
from gateway.media.clock import MediaClock
from gateway.media.format import PCMU_8K
from gateway.realtime.local.server import LocalProvider
from gateway.realtime.profiles import ProviderProfile, make_profile
from gateway.secret import Secret
from tests.support.gateway import settings
from tests.support.memory_call import MemoryLeg

YANDEX_KEY = "yc-api-key-for-tests-0042"


def yandex_profile(provider: LocalProvider) -> ProviderProfile:
    """The Yandex profile pointed at `provider` (folder b1gtest, `YANDEX_KEY`)."""
    return make_profile(
        "yandex",
        base_url=provider.url,
        yandex_folder_id="b1gtest",
        yandex_api_key=Secret(YANDEX_KEY),
    )


@dataclass
class RunningCall:
    """A call `start_yandex_call` started: the Call, its leg and clock, its task."""

    call: Call
    leg: MemoryLeg
    clock: MediaClock
    task: asyncio.Task[None]


async def start_yandex_call(
    provider: LocalProvider,
    scenario: Callable[[Call], Any] = default_setup,
    profile: ProviderProfile | None = None,
    greeting: bool = True,
) -> RunningCall:
    """A call with `--provider yandex` against `provider`, set up the gateway's way
    (CallService: format choice, session, tools), on a `MemoryLeg`."""
    s = settings(
        provider="yandex",
        provider_url=provider.url,
        yandex_folder_id="b1gtest",
        yandex_api_key=Secret(YANDEX_KEY),
        transcription_model="gpt-4o-mini-transcribe",
        vad_silence_ms=400,
    )
    manager = CallManager(4)
    service = CallService(s, profile or yandex_profile(provider), manager, scenario, TOOLS)
    prepared = await service.open_session(leg="sip", direction="inbound", codec="pcmu")
    prepared.options.greeting = greeting
    loop = asyncio.get_running_loop()
    clock = MediaClock(loop, 20, slots=1)
    leg = MemoryLeg(clock, PCMU_8K)
    call = service.start_call(prepared, leg)
    return RunningCall(call, leg, clock, manager._tasks[call.id])

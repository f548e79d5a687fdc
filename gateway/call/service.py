"""Creating calls: admission, the per-call Realtime session, and starting the Call.

A leg adapter (SIP or WebRTC) asks `CallService.open_session()` once it knows the call's codec
(before answering, so no caller hears dead air while the model connects), then hands the
answered leg to `start_call()`. Both are the same for every leg.

Every connect's outcome feeds the provider circuit breaker (`gateway.call.breaker`): after
`provider_breaker_failures` failures in a row new calls fail fast and the gateway reports not
ready (listeners of `on_readiness` hear it), a probe session is tried every
`provider_breaker_cooldown` seconds, and the first success makes it ready again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway import metrics
from gateway.call.breaker import ProviderBreaker
from gateway.call.call import Call, CallInfo, CallOptions
from gateway.call.incoming import IncomingCalls
from gateway.call.manager import CallManager
from gateway.call.routing import (
    CallProfile,
    build_session,
    render_instructions,
    resolve_profile,
)
from gateway.call.scenario import ScenarioSetup
from gateway.call.webhook import WebhookClient
from gateway.config import Settings
from gateway.errors import ProviderUnavailable, RealtimeError
from gateway.logs import bind_call, get_logger
from gateway.media.port import MediaPort
from gateway.realtime.client import RealtimeClient, ReconnectPolicy
from gateway.realtime.events import SessionConfig, function_tool
from gateway.realtime.profiles import ProviderProfile, choose_session_format
from gateway.webhooks import WebhookTool

log = get_logger("call.service")


def rt_function_tool(webhook: WebhookTool) -> dict[str, Any]:
    """A webhook tool's declaration in the session's `tools`."""
    return function_tool(webhook.name, webhook.description, webhook.parameters)


#: what an app's accepted session config may set (the audio formats stay the gateway's: they
#: follow the SIP codec; the model stays the configured provider's)
_ACCEPTED_FIELDS = (
    "instructions",
    "voice",
    "tools",
    "tool_choice",
    "transcription",
    "noise_reduction",
    "output_modalities",
    "speed",
    "max_output_tokens",
    "truncation",
    "prompt",
    "tracing",
    "include",
    "parallel_tool_calls",
)


def accepted_session(base: SessionConfig, session: Mapping[str, Any]) -> SessionConfig:
    """The call's session with an app's OpenAI session config (`/accept`) laid over it."""
    given = SessionConfig.parse(session)
    changes: dict[str, Any] = {
        name: getattr(given, name) for name in _ACCEPTED_FIELDS if getattr(given, name) is not None
    }
    if given.turn_detection_set:
        changes["turn_detection"] = given.turn_detection
    return base.replace(**changes)


def app_function_tools(session: Mapping[str, Any]) -> tuple[Mapping[str, Any], ...]:
    """The function tools of an app's `/accept` session: the app's, answered on its sideband."""
    tools = session.get("tools")
    if not isinstance(tools, list):
        return ()
    return tuple(
        t
        for t in tools
        if isinstance(t, Mapping) and t.get("type", "function") == "function" and t.get("name")
    )


ClientFactory = Callable[[ProviderProfile, SessionConfig], RealtimeClient]


def default_client_factory(
    profile: ProviderProfile,
    config: SessionConfig,
    yield_hook: Callable[[], Awaitable[None]] | None = None,
    settings: Settings | None = None,
) -> RealtimeClient:
    """A client with the call bridge's policy: one reconnect within 2 s, re-seeded, within the
    per-call reconnect budget; the stall watchdog from `settings`; between provider messages it
    yields to the media clock (`yield_hook`)."""
    s = settings or Settings()
    return RealtimeClient(
        profile,
        config,
        yield_hook=yield_hook,
        connect_timeout=5.0,
        setup_timeout=5.0,
        stall_timeout_s=s.provider_stall_timeout or None,
        stall_retries=s.provider_stall_retries,
        reconnect=ReconnectPolicy(
            attempts=1,
            within_s=2.0,
            backoff_s=0.1,
            max_per_call=s.provider_max_reconnects,
            max_per_minute=s.provider_max_reconnects_per_minute,
        ),
    )


@dataclass
class PreparedCall:
    """A call admitted and connected to its model, waiting for its leg to be answered."""

    call_id: str
    info: CallInfo
    client: RealtimeClient
    options: CallOptions
    created_at: float
    inband_dtmf: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class CallService:
    """Admits calls, opens their Realtime sessions and runs them under the CallManager."""

    def __init__(
        self,
        settings: Settings,
        profile: ProviderProfile,
        manager: CallManager,
        setup: ScenarioSetup,
        tools: Sequence[Mapping[str, Any]],
        client_factory: ClientFactory = default_client_factory,
    ) -> None:
        self.settings = settings
        self.profile = profile
        self.manager = manager
        self.setup = setup
        #: the `[tools.NAME]` webhook tools, declared with the built-in ones
        self.webhook_tools = settings.webhook_tools()
        self.webhooks = WebhookClient()
        self.tools = [*tools, *(rt_function_tool(w) for w in self.webhook_tools.values())]
        self.client_factory = client_factory
        self.breaker = ProviderBreaker(
            settings.provider_breaker_failures, settings.provider_breaker_cooldown
        )
        self.on_readiness: list[Callable[[bool], None]] = []
        #: inbound calls in webhook mode awaiting accept/reject (None: no call webhook)
        self.incoming: IncomingCalls | None = None
        self._probe: asyncio.Task[None] | None = None
        metrics.PROVIDER_AVAILABLE.set(1)

    async def open_session(
        self,
        *,
        leg: str,
        direction: str,
        codec: str,
        caller: str = "",
        called: str = "",
        headers: Mapping[str, str] | None = None,
        header_list: Sequence[tuple[str, str]] = (),
        source: str = "",
        trunk: str = "",
        created_at: float | None = None,
        ring: Callable[[], None] | None = None,
        session: Mapping[str, Any] | None = None,
    ) -> PreparedCall:
        """Admit a call and connect its Realtime session. Raises AdmissionError (503),
        or gateway.errors.RealtimeError when the provider cannot be reached. A call routed to
        `webhook` mode first rings (`ring`) and waits for its app's accept (CallDeclined: its
        reject, or the fallback's). `session`: an OpenAI session config laid over the route's
        (an outbound call's `POST /calls` body)."""
        call_id = self.manager.new_id()
        self.manager.reserve(call_id)
        loop = asyncio.get_running_loop()
        try:
            headers = dict(headers or {})
            profile = resolve_profile(self.settings, called, source, leg, header_list, trunk)
            config = self._session_config(profile, codec, caller, called, headers)
            app_tools: tuple[Mapping[str, Any], ...] = ()
            if session:  # POST /calls: its function tools are an app's, as /accept's are
                config = accepted_session(config, session)
                app_tools = app_function_tools(session)
            if profile.mode == "webhook" and self.incoming is not None:
                decision = await self.incoming.decide(call_id, header_list, ring)
                if decision.session is not None:
                    config = accepted_session(config, decision.session)
                    app_tools = app_function_tools(decision.session)
            if not self.breaker.try_acquire(loop.time()):
                wait = max(0.0, self.breaker.retry_at - loop.time())
                raise ProviderUnavailable(
                    f"provider {self.profile.name} unavailable ({wait:.0f} s)"
                )
            client = self.client_factory(self.profile, config)
            # the session's log lines (and its tasks') carry the call they belong to
            with bind_call(call_id, leg, self.profile.name):
                await self._connect(client)
        except BaseException:
            self.manager.release_reservation(call_id)
            raise
        info = CallInfo(
            leg=leg,
            direction=direction,
            caller=caller,
            called=called,
            headers=headers,
            source=source,
            provider=self.profile.name,
            header_list=tuple(header_list),
            trunk=trunk,
        )
        options = CallOptions(
            append_ms=self.settings.append_ms,
            greeting=profile.greeting,
            record_dir=self.settings.record_dir if profile.record else "",
            transfer_targets=dict(self.settings.transfer_targets),
            tool_names=profile.tool_names(),
            webhook_tools=tuple(self.webhooks.tool(w) for w in self.webhook_tools.values()),
            tool_hold_after_s=self.settings.tool_hold_after,
            app_tools=app_tools,
        )
        return PreparedCall(call_id, info, client, options, created_at or loop.time())

    def _session_config(
        self,
        profile: CallProfile,
        codec: str,
        caller: str,
        called: str,
        headers: Mapping[str, str],
    ) -> SessionConfig:
        fmt = choose_session_format(self.profile, profile.session_format, codec)
        config = build_session(
            profile,
            instructions=render_instructions(profile.instructions, caller, called, headers),
            input_format=fmt,
            output_format=fmt,
            default_voice=self.profile.default_voice,
            tools=self.tools,
            settings=self.settings,
        )
        if self.settings.languages and self.profile.name == "yandex":
            config = config.replace(input_languages=tuple(self.settings.languages))
        return config

    @property
    def retry_after(self) -> int:
        """Seconds a caller refused for the provider's sake is asked to wait."""
        return max(1, round(self.breaker.cooldown))

    async def _connect(self, client: RealtimeClient) -> None:
        """Connect, feeding the outcome to the breaker; closes the client on failure."""
        loop = asyncio.get_running_loop()
        try:
            await client.connect()
        except BaseException as exc:
            # CANCEL during set-up cancels the connect: close what it opened
            await asyncio.shield(client.close())
            if isinstance(exc, RealtimeError):
                self._readiness(self.breaker.failed(loop.time()), str(exc))
            else:
                self._readiness(self.breaker.abandoned(loop.time()))
            raise
        self._readiness(self.breaker.succeeded(loop.time()))

    def _readiness(self, changed: bool, error: str = "") -> None:
        if not changed:
            return
        ready = self.breaker.ready
        metrics.PROVIDER_AVAILABLE.set(1 if ready else 0)
        if ready:
            log.info("provider_available", provider=self.profile.name)
        else:
            log.warning(
                "provider_circuit_open",
                provider=self.profile.name,
                failures=self.breaker.failures,
                retry_in_s=self.breaker.cooldown,
                error=error,
            )
            if self._probe is None or self._probe.done():
                self._probe = asyncio.get_running_loop().create_task(self._probe_until_ready())
        for listener in self.on_readiness:
            listener(ready)

    async def _probe_until_ready(self) -> None:
        """While the breaker is open, try a session of our own after each cool-down (unless a
        call takes the trial), so an instance nobody routes calls to can still come back."""
        loop = asyncio.get_running_loop()
        while not self.breaker.ready:
            await asyncio.sleep(max(0.05, self.breaker.retry_at - loop.time()))
            if self.breaker.ready or not self.breaker.try_acquire(loop.time()):
                continue
            profile = resolve_profile(self.settings, "", "", "sip")
            config = self._session_config(profile, "pcmu", "", "", {})
            client = self.client_factory(self.profile, config)
            with contextlib.suppress(RealtimeError):
                await self._connect(client)
                await client.close()

    async def aclose(self) -> None:
        """Stop the provider probe, if one runs, and the webhook tools' HTTP client."""
        await self.webhooks.aclose()
        if self.incoming is not None:
            await self.incoming.aclose()
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(BaseException):
                await self._probe
            self._probe = None

    async def abandon(self, prepared: PreparedCall) -> None:
        """The leg never got answered (CANCEL, failure): close the session, free the slot."""
        self.manager.release_reservation(prepared.call_id)
        await prepared.client.close()

    def start_call(
        self,
        prepared: PreparedCall,
        leg: MediaPort,
        *,
        transfer: Callable[[str], Awaitable[None]] | None = None,
        early: int = 0,
    ) -> Call:
        """Run the answered call (or one in early media: `early` is its 18x status) under the
        manager; returns the Call."""
        call = Call(
            prepared.call_id,
            prepared.info,
            leg,
            prepared.client,
            prepared.options,
            created_at=prepared.created_at,
            transfer=transfer,
            early=early,
        )
        if prepared.inband_dtmf:
            call.enable_inband_dtmf()
        self.manager.start(call, self.setup)
        return call

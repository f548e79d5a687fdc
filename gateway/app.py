"""Wiring: the one place that builds the gateway's components and connects them.

    Settings ─┬─ LocalProvider (when provider = local) ── ProviderProfile
              ├─ CallManager ── CallService (admission, Realtime session per call, scenario)
              ├─ MediaClocks (one timer per packet time) ── PortPool (RTP)
              ├─ SipEndpoint (sans-I/O) ── SipTransport (UDP/TCP/TLS) ── SipCallService
              │    └─ SipRegistrations (the trunks with register = true)
              ├─ WebRtcCallService (aiortc legs) ── WebRtcService (the routes' state)
              └─ aiohttp: /healthz /readyz /metrics, /calls, /admin/drain, /v1/realtime/calls
                 (gateway.http.openai_calls), /webrtc/*, the page

`Gateway.run()` starts everything, serves until SIGTERM/SIGINT, drains (new calls refused with
503, live calls go on until they end or the drain timeout, then a goodbye prompt), and stops.
A second signal ends the remaining calls at once, still cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import secrets
import signal
import socket
import sqlite3
import ssl
from typing import Any, cast

from aiohttp import web

from gateway import banner, metrics
from gateway.call.default_scenario import TOOLS
from gateway.call.default_scenario import setup as default_setup
from gateway.call.history import History
from gateway.call.incoming import IncomingCalls
from gateway.call.manager import OVERLOAD_RETRY_AFTER, CallManager
from gateway.call.prompts import warm_prompts
from gateway.call.recorder import recover_recordings
from gateway.call.routing import validate_routes
from gateway.call.scenario import ScenarioSetup, load_scenario
from gateway.call.service import CallService, default_client_factory
from gateway.config import Settings, parse_hostport, parse_port_range
from gateway.errors import ConfigError, StartupError
from gateway.gcpolicy import GcPolicy
from gateway.http.calls import CallApi, add_call_routes
from gateway.http.client import parse_networks
from gateway.http.console import ConsoleApi, add_console_routes
from gateway.http.errors import error_middleware
from gateway.http.health import add_health_routes, add_metrics_route, metrics_guard
from gateway.http.openai_calls import add_openai_call_routes
from gateway.http.openapi import add_openapi_route
from gateway.http.sideband import SidebandApi, add_sideband_routes
from gateway.legs.sip.registrations import SipRegistrations, registrar_uri
from gateway.legs.sip.service import SipCallService
from gateway.legs.webrtc.service import WebRtcCallService
from gateway.logs import get_logger
from gateway.media.clock import MediaClocks, OverloadMonitor
from gateway.media.overload import OverloadGate
from gateway.realtime.client import RealtimeClient
from gateway.realtime.events import SessionConfig
from gateway.realtime.local.server import LocalProvider
from gateway.realtime.profiles import ProviderProfile, make_profile
from gateway.rtp.ports import PortPool
from gateway.secret import Secret
from gateway.sip.auth import DigestServer
from gateway.sip.policy import SourcePolicy, TrunkPolicy
from gateway.sip.resolver import SipResolver
from gateway.sip.sdp import MediaPolicy, SrtpMode, is_ip
from gateway.sip.tls import client_for_trunk, uses_tls
from gateway.sip.transport import SipTransport
from gateway.sip.trunk import Trunk
from gateway.sip.ua import SipEndpoint
from gateway.sip.ua_core import EndpointConfig
from gateway.webrtc.routes import WebRtcService, add_webrtc_routes

log = get_logger("app")


def _primary_address() -> str:
    """This host's address toward the outside (no packet is sent), for SDP and Contact."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: routing lookup only
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"


class Gateway:
    """The running gateway: build with settings, `await start()`, `await stop()`."""

    def __init__(self, settings: Settings, *, scenario: ScenarioSetup | None = None) -> None:
        self.settings = settings
        self._scenario = scenario
        self._runners: list[web.AppRunner] = []
        self._stop_requested = asyncio.Event()
        self._signals = 0
        #: `stop()` finished: every call ended and every component stopped
        self.stopped = False
        self.local_provider: LocalProvider | None = None
        self.profile: ProviderProfile | None = None
        self.manager = CallManager(settings.max_calls)
        self.calls: CallService | None = None
        self.clocks: MediaClocks | None = None
        self.sip_transport: SipTransport | None = None
        self.sip_endpoint: SipEndpoint | None = None
        self.sip_calls: SipCallService | None = None
        self.sip_registrations: SipRegistrations | None = None
        self.webrtc_calls: WebRtcCallService | None = None
        self.webrtc: WebRtcService | None = None
        self.http_port: int | None = None
        self.metrics_port: int | None = None
        self.sip_port: int | None = None
        self._drain_task: asyncio.Task[None] | None = None
        #: a person watches the terminal: print the banner and the Ctrl-C notices (issue 19)
        self.human = False
        self._sip_public_host = ""
        self.gc_policy = GcPolicy(lambda: len(self.manager.calls))
        #: the call history (issue 19, `--history-path`), None when turned off
        self.history: History | None = None

    @property
    def draining(self) -> bool:
        return self.manager.draining

    def _ready(self) -> tuple[bool, str]:
        if self.manager.draining:
            return False, "draining"
        if self.sip_transport is None:
            return False, "sip not listening"
        if self.manager.overloaded():
            return False, "overload"
        if self.calls is not None and not self.calls.breaker.ready:
            return False, "provider_unavailable"
        if self.sip_registrations is not None and self.sip_registrations.all_failed:
            # every trunk that registers has failed: no call can reach us through them
            return False, "registrations_failed"
        return True, "ok"

    def _ready_details(self) -> dict[str, Any]:
        """What /readyz reports beside the verdict: each registering trunk's state."""
        registrations = self.sip_registrations
        return (
            {"registrations": registrations.states}
            if registrations and registrations.trunks
            else {}
        )

    # --- start

    async def start(self) -> None:
        """Start every component; StartupError with one clear line on failure."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise
        self.gc_policy.start()
        facts = self.startup_facts()
        log.info(
            "gateway_started",
            http=self.settings.http_listen,
            sip=self.settings.sip_listen,
            **facts.log_fields(),  # never the token
        )
        if self.human:  # issue 19: what to dial and open, on the operator's own terminal
            banner.show(facts.lines())

    def startup_facts(self) -> banner.StartupFacts:
        """What the start-up banner and the `gateway_started` line say."""
        s = self.settings
        provider, why = s.provider_choice()
        http_host, _ = parse_hostport(s.http_listen, "http_listen")
        transport = self.sip_transport
        return banner.StartupFacts(
            sip_host=self._sip_public_host,
            sip_port=transport.port if transport else 0,
            tls_port=transport.tls_port if transport else 0,
            http_host=http_host,
            http_port=self.http_port or 0,
            token=s.api_token,
            provider=provider,
            provider_reason=why,
            model=self.profile.model if self.profile else "",
            warnings=banner.first_run_warnings(
                provider=provider,
                provider_setting=s.provider,
                metrics_listen=s.metrics_listen,
                sip_allow=s.sip_allow,
                inbound_trunks=any(_inbound_sources(t) for t in s.trunk_settings().values()),
            ),
        )

    async def _start(self) -> None:
        s = self.settings
        try:
            validate_routes(s.routes)
        except ConfigError as exc:
            raise StartupError(str(exc)) from None
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, warm_prompts)
        if s.record_dir:
            # recordings a killed process left as .part files: finished and renamed, one log
            # line each (files a live process on the same directory holds are left alone)
            await loop.run_in_executor(None, recover_recordings, s.record_dir)
        if s.history_path:
            self.history = History(s.history_path, s.history_retention_days)
            try:
                await self.history.start()
            except (OSError, sqlite3.Error) as exc:
                self.history = None
                raise StartupError(f"history_path {s.history_path}: {exc}") from None
            self.manager.on_call_ended = self.history.submit
        # --- the model side
        provider, why = s.provider_choice()
        log.info("provider_selected", setting=s.provider, provider=provider, reason=why)
        base_url = s.provider_url
        folder, api_key, iam_token = s.yandex_folder_id, s.yandex_api_key, s.yandex_iam_token
        if provider == "local":
            local_key = secrets.token_urlsafe(16) if s.local_flavor == "yandex" else None
            self.local_provider = LocalProvider(s.local_flavor, require_token=local_key)
            base_url = await self.local_provider.start("127.0.0.1", 0)
            if local_key is not None:
                # the yandex flavour: talk to it with the yandex profile (PCM only, no clears)
                provider, folder, api_key = "yandex", "local", Secret(local_key)
                iam_token = Secret("")
        try:
            self.profile = make_profile(
                provider,
                model=s.model,
                base_url=base_url,
                token=s.provider_token,
                openai_api_key=s.openai_api_key,
                yandex_folder_id=folder,
                yandex_api_key=api_key,
                yandex_iam_token=iam_token,
            )
        except ValueError as exc:
            raise StartupError(f"provider {provider}: {exc}") from None
        setup = self._scenario
        if setup is None and s.scenario:
            try:
                setup = load_scenario(s.scenario)
            except Exception as exc:
                raise StartupError(f"scenario {s.scenario}: {exc}") from None
        self.overload = overload = OverloadMonitor(
            loop,
            OverloadGate(
                s.overload_lateness_ms / 1000,
                hold_s=s.overload_hold_s,
                cpu_threshold=s.overload_cpu_pct / 100,
            ),
        )
        self.clocks = MediaClocks(loop, overload=overload)
        self.manager.overloaded = overload.overloaded
        self.manager.on_admitted = overload.admitted
        manager = self.manager
        overload.calls_in_progress = lambda: manager.in_progress
        clocks = self.clocks

        def client_factory(profile: ProviderProfile, config: SessionConfig) -> RealtimeClient:
            return default_client_factory(profile, config, clocks.yield_to_media, s)

        self.calls = CallService(
            s, self.profile, self.manager, setup or default_setup, TOOLS, client_factory
        )
        if s.call_webhook_url:
            try:
                key = s.call_webhook_key()
            except ConfigError as exc:
                raise StartupError(str(exc)) from None
            self.calls.incoming = IncomingCalls(
                s.call_webhook_url,
                key,
                timeout_s=s.call_webhook_timeout,
                fallback=s.call_webhook_fallback,
                reject_status=s.call_webhook_reject_status,
            )
        # --- SIP
        await self._start_sip()
        # --- WebRTC and HTTP
        http_host, _ = parse_hostport(s.http_listen, "http_listen")
        self.webrtc_calls = WebRtcCallService(self.calls, self.manager)
        self.webrtc = WebRtcService(
            s,
            self.webrtc_calls.create_call,
            self.webrtc_calls.hangup,
            admit=self.webrtc_calls.admit,
            # a browser on this machine (make run) connects over loopback, whatever the host has
            include_loopback_candidates=_is_loopback_host(http_host) or http_host in _ANY,
            udp_ports=parse_port_range(s.webrtc_ports) if s.webrtc_ports else None,
        )
        self.http_port = await self._listen(self._build_http_app(), s.http_listen, "http_listen")
        if s.metrics_listen:
            metrics_app = web.Application(middlewares=[error_middleware])
            add_metrics_route(metrics_app)
            self.metrics_port = await self._listen(metrics_app, s.metrics_listen, "metrics_listen")

    async def _start_sip(self) -> None:
        s = self.settings
        assert self.calls is not None and self.clocks is not None
        host, port = parse_hostport(s.sip_listen, "sip_listen")
        public = s.public_address or (host if host not in ("0.0.0.0", "::") else _primary_address())
        auth = None
        if s.sip_auth_user:
            auth = DigestServer(
                s.sip_realm,
                {s.sip_auth_user: s.sip_auth_password},
                algorithms=tuple(s.sip_digest_algorithms),
            )
        policy = sip_source_policy(s)
        trunks = s.trunk_settings()
        media = MediaPolicy(
            codecs=tuple(s.sip_codecs),
            ptime=s.ptime_ms,
            srtp=cast(SrtpMode, s.sip_srtp),
            comfort_noise=s.sip_comfort_noise,
        )
        trunk_media = {name: t.media_policy(media) for name, t in trunks.items()}
        self._sip_public_host = public
        config = EndpointConfig(host=public, port=port, media=media, trunk_media=trunk_media)
        endpoint = SipEndpoint(config, policy=policy, auth=auth)
        lo, hi = parse_port_range(s.rtp_ports)
        clocks = self.clocks
        tls_clients = {name: client_for_trunk(t) for name, t in trunks.items() if uses_tls(t)}
        for name, client in tls_clients.items():
            if not client.verifies:  # the trunk's explicit tls_verify = false
                log.warning("sip_tls_verify_disabled", trunk=name)
            if not s.sip_tls_listen:  # our Contact names no TLS port: RFC 5923 reuse only
                log.warning("sip_tls_trunk_without_listener", trunk=name)
        self.sip_endpoint = endpoint
        # RFC 3263 for trunks and next hops named by host: A records for an IPv4 listener,
        # AAAA for an IPv6 one, both when it listens on every address
        family = ("A", "AAAA") if host == "::" else ("AAAA",) if ":" in host else ("A",)
        resolver = SipResolver(
            [parse_hostport(server, "sip_dns_servers") for server in s.sip_dns_servers],
            address_types=family,
        )
        self.sip_registrations = SipRegistrations(endpoint, s.trunk_settings())
        self.sip_calls = SipCallService(
            endpoint,
            self.calls,
            PortPool(lo, hi),
            clocks.for_ptime,
            rtp_bind=host,
            public_address=public,
            ringing=s.sip_ringing,
            early_media=s.sip_early_media,
            trunks=trunks,
            tls_clients=tls_clients,
            rtp_timeout=s.rtp_timeout,
            rtp_strict_source=s.rtp_strict_source,
            resolver=resolver,
            registrations=self.sip_registrations,
            allow_direct_dial=s.allow_direct_dial,
        )
        transport = SipTransport(endpoint, self.sip_calls.on_event, resolver=resolver)
        tls_host = tls_port = None
        tls_ctx = None
        if s.sip_tls_listen:
            tls_host, tls_port = parse_hostport(s.sip_tls_listen, "sip_tls_listen")
            tls_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            try:
                tls_ctx.load_cert_chain(s.sip_tls_cert, s.sip_tls_key)
            except (OSError, ssl.SSLError) as exc:
                raise StartupError(f"sip_tls_cert/sip_tls_key: {exc}") from None
        try:
            await transport.start(
                host, port, tls_host=tls_host, tls_port=tls_port, tls_context=tls_ctx
            )
        except OSError as exc:
            raise StartupError(str(exc.strerror or exc)) from None
        # transport.start() put the ports actually bound (0 in tests) in the endpoint's config
        self.sip_transport = transport
        self.sip_calls.transport = transport
        self.sip_registrations.transport = transport
        self.sip_port = transport.port
        self.sip_calls.start_keepalives()
        self.sip_registrations.start()
        calls = self.calls
        overload = self.overload

        def sip_availability(_: bool = True) -> None:
            # OPTIONS answer 503 while the provider is down or the media clock runs late, so
            # Kamailio's dispatcher probing moves new calls elsewhere
            if overload.gate.enabled and overload.gate.overloaded:
                endpoint.set_unavailable("overload", retry_after=OVERLOAD_RETRY_AFTER)
            elif not calls.breaker.ready:
                endpoint.set_unavailable("provider_unavailable", retry_after=calls.retry_after)
            else:
                endpoint.set_unavailable(None)

        calls.on_readiness.append(sip_availability)
        overload.on_change.append(sip_availability)

    def _build_http_app(self) -> web.Application:
        app = web.Application(middlewares=[error_middleware], client_max_size=256 * 1024)
        add_health_routes(app, self._ready, self._ready_details)
        trusted_proxies = parse_networks(self.settings.trusted_proxies)
        if not self.settings.metrics_listen:
            # on a public HTTP listener /metrics needs the API token (docs/observability.md)
            http_host, _ = parse_hostport(self.settings.http_listen, "http_listen")
            public = not _is_loopback_host(http_host)
            add_metrics_route(
                app, metrics_guard(self.settings.api_token, trusted_proxies, public=public)
            )
            if public:
                log.info(
                    "metrics_access",
                    path="/metrics",
                    listen=self.settings.http_listen,
                    # no API token configured: loopback clients only, like the call API
                    allowed="api_token" if self.settings.api_token else "loopback_clients",
                )
        call_api = CallApi(
            manager=self.manager,
            token=self.settings.api_token,
            # with no outbound trunk, dial() refuses numbers and, unless allow_direct_dial,
            # sip: URIs, each with the reason
            dial=self.sip_calls.dial if self.sip_calls else None,
            drain=self.begin_drain,
            trusted_proxies=trusted_proxies,
        )
        add_call_routes(app, call_api)
        if self.calls is not None and self.calls.incoming is not None:
            add_openai_call_routes(app, call_api, self.calls.incoming)
        add_sideband_routes(
            app, SidebandApi(self.manager, self.settings.api_token, trusted_proxies)
        )
        add_console_routes(
            app,
            ConsoleApi(self.manager, self.history, self.settings.api_token, trusted_proxies),
        )
        assert self.webrtc is not None
        add_webrtc_routes(app, self.webrtc)
        add_openapi_route(app)  # issue 19: every route above is in gateway.http.openapi.PATHS
        return app

    async def _listen(self, app: web.Application, listen: str, name: str) -> int:
        host, port = parse_hostport(listen, name)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise StartupError(f"{name} {listen}: {exc.strerror or exc}") from None
        self._runners.append(runner)
        server: Any = site._server
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else port

    # --- drain and stop

    def begin_drain(self) -> None:
        """Start a graceful drain (SIGTERM or POST /admin/drain); the process exits after it."""
        if self._drain_task is not None:
            return
        if self.sip_endpoint is not None:
            self.sip_endpoint.set_draining(True)
        if self.sip_registrations is not None:
            # the registrar stops sending us calls (another instance may hold the same AOR)
            self.sip_registrations.unregister_all()
        self.manager.draining = True
        metrics.DRAINING.set(1)
        self._drain_task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        await self.manager.drain(self.settings.drain_timeout)
        self._stop_requested.set()

    def _on_signal(self) -> None:
        self._signals += 1
        live = len(self.manager.calls)
        if self._signals == 1:
            log.info("signal_drain", live_calls=live, hint="a second signal ends them now")
            if self.human and live:
                banner.show([banner.drain_notice(live, self.settings.drain_timeout)])
            self.begin_drain()
        else:
            log.info("signal_stop_now", live_calls=live)
            if self.human and live and self._signals == 2:
                banner.show([banner.stop_now_notice(live)])
            self._stop_requested.set()

    async def stop(self) -> None:
        """End every call and stop every component; safe to call twice."""
        await self.gc_policy.stop()
        if self._drain_task is not None and not self._drain_task.done():
            self._drain_task.cancel()
            with contextlib.suppress(BaseException):
                await self._drain_task
        if self.manager.calls:
            await self.manager.end_all("shutdown")
        if self.sip_calls is not None:
            await self.sip_calls.aclose()
        if self.calls is not None:
            await self.calls.aclose()
        if self.webrtc is not None:
            await self.webrtc.aclose()
        if self.sip_registrations is not None and self.sip_transport is not None:
            await self.sip_registrations.aclose()  # Expires: 0, answered before the socket closes
        if self.sip_transport is not None:
            transport, self.sip_transport = self.sip_transport, None
            await transport.aclose()
        runners, self._runners = self._runners, []
        for runner in reversed(runners):
            await runner.cleanup()
        if self.clocks is not None:
            self.clocks.close()
        if self.local_provider is not None:
            provider, self.local_provider = self.local_provider, None
            await provider.stop()
        if self.history is not None:  # after the calls: their records are queued
            history, self.history = self.history, None
            self.manager.on_call_ended = None
            await history.aclose()
        self.stopped = True

    async def run(self) -> None:
        """Start, serve until a signal or a finished drain, then stop."""
        await self.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, self._on_signal)
        try:
            await self._stop_requested.wait()
        finally:
            log.info("gateway_stopping", live_calls=len(self.manager.calls))
            await self.stop()


_ANY = ("0.0.0.0", "::")


def _inbound_sources(trunk: Trunk) -> tuple[str, ...]:
    """Where a trunk's INVITEs come from: its `inbound_sources`, else, for a trunk that
    registers, its registrar (an IP literal; a registrar named by a host name needs
    `inbound_sources`), which forwards the calls to our binding."""
    if trunk.inbound_sources or not trunk.register:
        return trunk.inbound_sources
    host = registrar_uri(trunk).host
    return (host,) if is_ip(host) else ()


def sip_source_policy(s: Settings) -> SourcePolicy:
    """The SIP source policy: `sip_allow`, the rate limits, and one call budget per trunk that
    lists `inbound_sources` or registers (its own `calls_per_second`/`calls_burst`, else the
    defaults)."""
    trunks = [
        TrunkPolicy.of(
            trunk.name,
            sources,
            s.sip_calls_per_second if trunk.calls_per_second is None else trunk.calls_per_second,
            s.sip_calls_burst if trunk.calls_burst is None else trunk.calls_burst,
        )
        for trunk in s.trunk_settings().values()
        if (sources := _inbound_sources(trunk))
    ]
    return SourcePolicy(
        s.sip_allow,
        rate=s.sip_rate_limit,
        burst=float(s.sip_rate_burst),
        calls_per_second=s.sip_calls_per_second,
        calls_burst=float(s.sip_calls_burst),
        trunks=trunks,
        reply_rate=s.sip_overload_reply_rate,
    )


def _is_loopback_host(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"

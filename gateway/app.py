"""Wiring: the one place that builds the gateway's components and connects them.

`Gateway` owns the listeners (HTTP, SIP, metrics), the call manager and the embedded local
provider when it is in use. `run()` starts it, waits for SIGTERM/SIGINT, drains and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

from aiohttp import web

from gateway.config import Settings, parse_hostport
from gateway.http.errors import error_middleware
from gateway.http.health import add_health_routes, add_metrics_route
from gateway.logs import get_logger

log = get_logger("app")


class StartupError(RuntimeError):
    """A listener or component could not start; the message is one line for the operator."""


class Gateway:
    """The running gateway: build with settings, `await start()`, `await stop()`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._runners: list[web.AppRunner] = []
        self._stopping = asyncio.Event()
        self.draining = False
        self.http_port: int | None = None

    def _ready(self) -> tuple[bool, str]:
        if self.draining:
            return False, "draining"
        return True, "ok"

    def _build_http_app(self) -> web.Application:
        app = web.Application(middlewares=[error_middleware], client_max_size=256 * 1024)
        add_health_routes(app, self._ready)
        if not self.settings.metrics_listen:
            add_metrics_route(app)
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
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else port

    async def start(self) -> None:
        """Start every listener; raise StartupError with one clear line on failure."""
        try:
            self.http_port = await self._listen(
                self._build_http_app(), self.settings.http_listen, "http_listen"
            )
            if self.settings.metrics_listen:
                metrics_app = web.Application(middlewares=[error_middleware])
                add_metrics_route(metrics_app)
                await self._listen(metrics_app, self.settings.metrics_listen, "metrics_listen")
        except BaseException:
            await self.stop()
            raise
        log.info(
            "gateway_started",
            http=self.settings.http_listen,
            provider=self.settings.resolved_provider(),
        )

    async def stop(self) -> None:
        """Stop listeners and free everything; safe to call twice."""
        runners, self._runners = self._runners, []
        for runner in reversed(runners):
            await runner.cleanup()

    async def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT, then stop."""
        await self.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, self._stopping.set)
        try:
            await self._stopping.wait()
        finally:
            log.info("gateway_stopping")
            await self.stop()

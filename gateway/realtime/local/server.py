"""The local Realtime provider's WebSocket server: `ws://HOST:PORT/v1/realtime`.

`LocalProvider` runs in-process (`--provider local`, tests); `run_standalone()` backs
`gateway provider --listen HOST:PORT`. Each connection gets a sans-I/O `LocalEngine`; this module
only moves frames and arms the engine's timer. Test hooks: `require_token` (answer 401 without
it), `session_limit_s` (close with 1001 like OpenAI's 60-minute limit), `substitute_formats`
(emulate a provider that swaps pcmu for pcm), `drop_connections()` (abort sockets mid-call), and
`sessions` (every engine, for its `stats`).

The `yandex` flavour checks the upgrade as Yandex AI Studio does: the query must carry
`model=gpt://<folder>/speech-realtime-250923` (else 403) and an `Authorization: Api-Key <key>` or
`Bearer <IAM token>` header (else 401); with `require_token` that credential must match it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from gateway.config import parse_hostport
from gateway.logs import get_logger
from gateway.realtime.local.engine import FLAVORS, EngineOptions, LocalEngine
from gateway.realtime.local.tts import render_prompts

__all__ = ["LocalProvider", "run_standalone"]

log = get_logger("local_provider")
_PATHS = ("/v1/realtime", "/realtime")
#: Yandex model URI: gpt://<folder id>/speech-realtime-250923 (optionally /latest)
YANDEX_MODEL_URI = re.compile(r"gpt://[a-z0-9][a-z0-9_-]{0,62}/speech-realtime-250923(/latest)?")


class LocalProvider:
    """An in-process local Realtime provider. `url = await start()`, `await stop()`."""

    def __init__(
        self,
        flavor: str = "openai",
        *,
        model: str = "gpt-realtime",
        use_espeak: bool = True,
        speedup: float = 4.0,
        delta_ms: int = 100,
        max_event_bytes: int = 15 * 1024 * 1024,
        substitute_formats: Mapping[str, Mapping[str, Any]] | None = None,
        require_token: str | None = None,
        session_limit_s: float | None = None,
        record_frames: bool = False,
    ) -> None:
        if flavor not in FLAVORS:
            raise ValueError(f"unknown local provider flavor {flavor!r}")
        self.flavor = flavor
        self.options = EngineOptions(
            flavor=FLAVORS[flavor],
            model=model,
            speedup=speedup,
            delta_ms=delta_ms,
            max_event_bytes=max_event_bytes,
            substitute_formats=dict(substitute_formats or {}),
            record_frames=record_frames,
        )
        self.use_espeak = use_espeak
        self.require_token = require_token
        self.session_limit_s = session_limit_s
        self.sessions: list[LocalEngine] = []
        self.rejected = 0
        #: the path and query of every upgrade request (the `model` asked for), in order
        self.request_paths: list[str] = []
        self._server: Server | None = None
        self._connections: set[ServerConnection] = set()
        self.url = ""
        self.base_url = ""

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen; return the URL `ws://HOST:PORT/v1/realtime`."""
        self.options.prompts = await render_prompts(self.use_espeak)
        self._server = await serve(
            self._handle,
            host,
            port,
            process_request=self._process_request,
            max_size=self.options.max_event_bytes + 1024 * 1024,
            compression=None,
            ping_interval=20,
            ping_timeout=20,
            close_timeout=2,
        )
        sock = next(iter(self._server.sockets))
        bound_host, bound_port = sock.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.base_url = f"ws://{shown}:{bound_port}/v1"
        self.url = self.base_url + "/realtime"
        log.info("local_provider_started", url=self.url, flavor=self.flavor)
        return self.url

    async def stop(self) -> None:
        """Close every session and the listener; safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close(close_connections=True)
        await server.wait_closed()

    def drop_connections(self) -> int:
        """Test hook: abort every open socket without a close frame; returns how many."""
        n = 0
        for ws in list(self._connections):
            ws.transport.abort()
            n += 1
        return n

    @property
    def active_sessions(self) -> int:
        return len(self._connections)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.request_paths.append(request.path)
        path = request.path.split("?", 1)[0].rstrip("/")
        if path not in _PATHS:
            self.rejected += 1
            return connection.respond(HTTPStatus.NOT_FOUND, "no such path; use /v1/realtime\n")
        token = self.require_token
        if self.options.flavor.yandex_handshake:
            return self._yandex_handshake(connection, request)
        if token is not None and request.headers.get("Authorization") != f"Bearer {token}":
            self.rejected += 1
            return connection.respond(HTTPStatus.UNAUTHORIZED, "invalid credentials\n")
        return None

    def _yandex_handshake(self, connection: ServerConnection, request: Request) -> Response | None:
        auth = request.headers.get("Authorization") or ""
        scheme, _, credential = auth.partition(" ")
        if scheme not in ("Api-Key", "Bearer") or not credential.strip():
            self.rejected += 1
            return connection.respond(
                HTTPStatus.UNAUTHORIZED,
                "Authorization: Api-Key <key> or Bearer <IAM token> required\n",
            )
        if self.require_token is not None and credential != self.require_token:
            self.rejected += 1
            return connection.respond(HTTPStatus.UNAUTHORIZED, "invalid credentials\n")
        models = parse_qs(urlsplit(request.path).query).get("model", [])
        if len(models) != 1 or not YANDEX_MODEL_URI.fullmatch(models[0]):
            self.rejected += 1
            return connection.respond(
                HTTPStatus.FORBIDDEN,
                "model must be gpt://<folder id>/speech-realtime-250923\n",
            )
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        loop = asyncio.get_running_loop()
        engine = LocalEngine(self.options, loop.time())
        self.sessions.append(engine)
        self._connections.add(ws)
        wake = asyncio.Event()
        timer: asyncio.TimerHandle | None = None
        timer_at: float | None = None

        def on_timer() -> None:
            nonlocal timer, timer_at
            timer = timer_at = None
            engine.handle_timer(loop.time())
            wake.set()

        async def writer() -> None:
            nonlocal timer, timer_at
            while True:
                await wake.wait()
                wake.clear()
                for frame in engine.events_to_send():
                    await ws.send(frame)
                at = engine.get_timer()
                if at != timer_at:
                    if timer is not None:
                        timer.cancel()
                    timer, timer_at = (loop.call_at(at, on_timer), at) if at else (None, None)

        writer_task = asyncio.create_task(writer())
        limit: asyncio.TimerHandle | None = None
        closing: set[asyncio.Task[None]] = set()
        if self.session_limit_s is not None:

            def expire() -> None:
                task = loop.create_task(ws.close(1001, "session limit reached"))
                closing.add(task)
                task.add_done_callback(closing.discard)

            limit = loop.call_later(self.session_limit_s, expire)
        wake.set()
        try:
            async for message in ws:
                engine.receive_text(message, loop.time())
                wake.set()
        except ConnectionClosed:
            pass
        except Exception:  # pragma: no cover - never let one session take the server down
            log.error("local_provider_session_failed", exc_info=True)
        finally:
            self._connections.discard(ws)
            if timer is not None:
                timer.cancel()
            if limit is not None:
                limit.cancel()
            writer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await writer_task
            engine.close()


async def run_standalone(listen: str, flavor: str = "openai") -> None:
    """Serve the local provider on `listen` (HOST:PORT) until SIGINT/SIGTERM."""
    host, port = parse_hostport(listen, "listen")
    provider = LocalProvider(flavor)
    url = await provider.start(host, port)
    print(f"local Realtime provider ({flavor}) on {url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await provider.stop()

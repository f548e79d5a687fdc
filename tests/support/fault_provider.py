"""A fault-injecting Realtime server, for the faults no real peer produces on demand: a provider
that stalls mid-call, fails responses, or closes every connection after a few seconds.

`FaultyProvider` is a WebSocket proxy in front of a real Realtime server (the local provider):
every frame is relayed both ways, and per connection (`Fault`, by connection index) it

* `stall_after`: stops sending anything once it has sent a server event of that type (the
  socket stays open and answers pings, like a provider whose model hangs); `stall_at` records
  when;
* `fail_responses`: ends the first N responses `failed` at once (`response.created`, then a
  `response.done` with `status_details.error`), cancelling them upstream and dropping their
  content, like a provider that has a server error;
* `close_after_s`: closes the connection (1011) that long after it opened;
* `connect_delay_s`: opens the session that late (nothing relayed until then), like a slow
  provider.

Every server event it sends is checked against the official openai SDK models (`Conformance`);
`invalid` lists what failed the check (tests assert it stays empty). Client events are recorded
per connection without their audio.

    proxy = FaultyProvider(local.url, [Fault(stall_after="input_audio_buffer.committed"), Fault()])
    url = await proxy.start()
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from tests.support.realtime_schema import Conformance

FAILED_DETAILS: dict[str, Any] = {
    "type": "failed",
    "error": {
        "type": "server_error",
        "code": "server_error",
        "message": "The server had an error while processing your request.",
    },
}


@dataclass(frozen=True)
class Fault:
    """What one connection does wrong (nothing by default)."""

    stall_after: str | None = None
    fail_responses: int = 0
    close_after_s: float | None = None
    connect_delay_s: float = 0.0  # nothing is relayed (no session.created) for this long


@dataclass
class Connection:
    """One client connection as the proxy saw it."""

    index: int
    opened_at: float
    fault: Fault
    received: list[dict[str, Any]] = field(default_factory=list)  # client events, no audio
    sent: list[str] = field(default_factory=list)  # server event types sent to the client
    appends: int = 0
    stall_at: float | None = None
    failed: list[str] = field(default_factory=list)  # response ids ended `failed`
    closed_at: float | None = None

    def client_events(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.received if e.get("type") == kind]


class FaultyProvider:
    """A fault-injecting proxy in front of the Realtime server at `upstream`."""

    def __init__(
        self, upstream: str, faults: Sequence[Fault] | Callable[[int], Fault] = ()
    ) -> None:
        self.upstream = upstream
        self._faults = faults
        self.conform = Conformance()
        self.invalid: list[str] = []
        self.connections: list[Connection] = []
        self._server: Server | None = None
        self._open: set[ServerConnection] = set()
        self.url = ""

    def fault(self, index: int) -> Fault:
        if callable(self._faults):
            return self._faults(index)
        return self._faults[index] if index < len(self._faults) else Fault()

    @property
    def active(self) -> int:
        return len(self._open)

    async def start(self) -> str:
        self._server = await serve(self._handle, "127.0.0.1", 0, compression=None, max_size=None)
        port = next(iter(self._server.sockets)).getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/v1/realtime"
        return self.url

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close(close_connections=True)
            await server.wait_closed()

    async def _handle(self, client: ServerConnection) -> None:
        loop = asyncio.get_running_loop()
        conn = Connection(len(self.connections), loop.time(), self.fault(len(self.connections)))
        self.connections.append(conn)
        self._open.add(client)
        try:
            if conn.fault.connect_delay_s:  # a provider slow to open its session
                await asyncio.sleep(conn.fault.connect_delay_s)
            async with ws_connect(self.upstream, compression=None, max_size=None) as upstream:
                tasks = [
                    asyncio.create_task(self._to_upstream(conn, client, upstream)),
                    asyncio.create_task(self._to_client(conn, client, upstream)),
                ]
                if conn.fault.close_after_s is not None:
                    tasks.append(asyncio.create_task(self._close_later(conn, client)))
                try:
                    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for task in tasks:
                        task.cancel()
                    for task in tasks:
                        with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                            await task
        finally:
            conn.closed_at = loop.time()
            self._open.discard(client)

    async def _to_upstream(
        self, conn: Connection, client: ServerConnection, upstream: ClientConnection
    ) -> None:
        async for message in client:
            event = json.loads(message)
            if event.get("type") == "input_audio_buffer.append":
                conn.appends += 1
            else:
                conn.received.append(event)
            await upstream.send(message)

    async def _to_client(
        self, conn: Connection, client: ServerConnection, upstream: ClientConnection
    ) -> None:
        loop = asyncio.get_running_loop()
        failing: set[str] = set()
        async for message in upstream:
            if conn.stall_at is not None:
                continue  # stalled: the model went quiet, the socket did not
            event = json.loads(message)
            kind = event.get("type", "")
            rid = event.get("response_id") or (event.get("response") or {}).get("id")
            if rid in failing:
                continue  # content (and the upstream's own end) of a response we failed
            if kind == "error" and str(event["error"].get("event_id") or "").startswith("proxy_"):
                continue  # the upstream's answer to our own cancel
            await self._send(conn, client, event)
            if kind == "response.created" and len(conn.failed) < conn.fault.fail_responses:
                failing.add(rid)
                conn.failed.append(rid)
                await upstream.send(
                    json.dumps(
                        {"type": "response.cancel", "event_id": f"proxy_{rid}", "response_id": rid}
                    )
                )
                done = {**event["response"], "status": "failed", "status_details": FAILED_DETAILS}
                await self._send(conn, client, {"type": "response.done", "response": done})
            if kind == conn.fault.stall_after:
                conn.stall_at = loop.time()

    async def _send(
        self, conn: Connection, client: ServerConnection, event: dict[str, Any]
    ) -> None:
        event.setdefault("event_id", f"event_proxy_{conn.index}_{len(conn.sent)}")
        try:
            self.conform.server(event)
        except Exception as exc:  # recorded, asserted empty by the tests
            self.invalid.append(f"{event.get('type')}: {exc}"[:500])
        conn.sent.append(event.get("type", ""))
        await client.send(json.dumps(event))

    async def _close_later(self, conn: Connection, client: ServerConnection) -> None:
        assert conn.fault.close_after_s is not None
        await asyncio.sleep(conn.fault.close_after_s)
        await client.close(1011, "internal error")

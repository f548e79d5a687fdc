"""The asyncio adapter for `SipEndpoint`: UDP and TCP on one port, optional TLS on another.

It only moves bytes: every datagram (or Content-Length framed stream message) goes to the
endpoint, then `flush()` sends what the endpoint queued, hands its events to `on_event`, and
re-arms one `loop.call_at` for the endpoint's next timer. Call `flush()` after issuing endpoint
commands outside `on_event` too. Metrics are counted here, never in the core.

That one timer drives every SIP transaction of every call, so `flush()` never raises and always
re-arms it: a message that cannot be sent (a name no resolver knows, a refused connection, an
address of the other IP family) is logged and counted in `gateway_sip_send_errors_total`,
reported to the endpoint (`SipEndpoint.transport_error`, RFC 3261 §17.1.4: the transaction
sending there ends, and an INVITE moves to its next target), and the others go on. Both event
loops are supported: uvloop (what `gateway serve` runs) has transports that are not
`asyncio.Transport` subclasses and refuses `sendto` to anything but an IP literal of the
socket's family, so transports are used by their methods only, and a host name never reaches
`sendto` or `connect`: it is resolved first by the `SipResolver` (DNS, RFC 3263 §4.2 A/AAAA,
its TTLs honoured).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import ssl
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, cast

from gateway import metrics
from gateway.errors import SipParseError
from gateway.logs import get_logger
from gateway.refusals import RefusalLogger
from gateway.sip import transaction
from gateway.sip.call_state import CallInput
from gateway.sip.events import (
    MACHINES,
    REJECT_REASONS,
    KeepAliveResult,
    OutboundCallFailedOver,
    RequestRejected,
    SipEvent,
    UnexpectedInput,
)
from gateway.sip.keepalive import RESULTS as KEEPALIVE_RESULTS
from gateway.sip.message import SipStreamParser
from gateway.sip.registration import RegInput
from gateway.sip.resolver import SipResolver
from gateway.sip.sdp import is_ip
from gateway.sip.tls import TlsClient, default_client
from gateway.sip.transaction import Address
from gateway.sip.ua import SipEndpoint

log = get_logger("sip.transport")

METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "UPDATE", "NOTIFY", "REFER")
TRANSPORTS = ("udp", "tcp", "tls")
MAX_CONNECTIONS = 1024
IDLE_TIMEOUT = 600.0
CONNECT_TIMEOUT = 10.0
#: a send error is logged once per destination and reason in this many seconds (then counted)
SEND_ERROR_LOG_INTERVAL = 10.0
#: the input names of every state table (bounded labels of gateway_sip_unexpected_inputs)
STATE_INPUTS = (
    *(i.value for i in CallInput),
    *(i.value for i in RegInput),
    *transaction.INPUTS,
)


class _StreamTransport(Protocol):
    """What `_Stream` uses of its transport. asyncio's and uvloop's TCP and TLS transports all
    have these methods, but uvloop's are not `asyncio.Transport` subclasses: never isinstance."""

    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...
    def is_closing(self) -> bool: ...
    def get_extra_info(self, name: str, default: Any = None) -> Any: ...


class _Datagram(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransport) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.owner._received(data, Address("udp", str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        log.debug("sip_udp_error", error=str(exc))


class _Stream(asyncio.Protocol):
    def __init__(self, owner: SipTransport, kind: str) -> None:
        self.owner = owner
        self.kind = kind
        self.conn = 0
        self.peer: tuple[str, int] = ("", 0)
        self.transport: _StreamTransport | None = None
        self.parser = SipStreamParser(owner.max_size)
        self.last_used = 0.0
        #: destinations as dialled (a host name) that map to this connection, besides its peer
        self.aliases: list[tuple[str, str, int]] = []
        #: the destination we dialled (None: the peer connected to us); nothing heard on it yet
        self.dialled: tuple[str, str, int] | None = None
        self.heard = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream protocol always gets a stream transport (duck-typed: see _StreamTransport)
        self.transport = cast(_StreamTransport, transport)
        peer = transport.get_extra_info("peername") or ("", 0)
        self.peer = (str(peer[0]), int(peer[1]))
        if not self.owner._register(self):
            transport.close()

    def data_received(self, data: bytes) -> None:
        self.last_used = self.owner.loop.time()
        self.heard = True
        try:
            messages = self.parser.feed(data)
        except SipParseError as exc:
            # a stream we cannot frame is unusable: count it and close (§18.3)
            metrics.SIP_REJECTED.labels(reason="malformed").inc()
            log.info("sip_stream_closed", reason=exc.reason, peer=self.peer[0])
            if self.transport is not None:
                self.transport.close()
            return
        addr = Address(self.kind, self.peer[0], self.peer[1], self.conn)
        for message in messages:
            self.owner._received_message(message, addr)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._unregister(self)
        if exc is not None and self.dialled is not None and not self.heard:
            # e.g. TLS 1.3: the server refuses our certificate (or its absence) after the
            # handshake: what we sent on it is lost, a transport error like a refused connect
            self.owner._dial_failed(self.dialled, exc)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.last_used = self.owner.loop.time()
            self.transport.write(data)


class SipTransport:
    """Serves one `SipEndpoint` over UDP+TCP (same port) and optionally TLS."""

    def __init__(
        self,
        endpoint: SipEndpoint,
        on_event: Callable[[SipEvent], None],
        *,
        max_size: int = 65536,
        resolver: SipResolver | None = None,
    ) -> None:
        self.endpoint = endpoint
        #: host names of destinations (a next hop named by host): the system's resolver unless
        #: the application gives the one `sip_dns_servers` configures
        self.resolver = resolver or SipResolver()
        self.on_event = on_event
        self.max_size = max_size
        self.loop = asyncio.get_running_loop()
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_family = socket.AF_INET
        self._servers: list[asyncio.Server] = []
        self._streams: dict[int, _Stream] = {}
        self._by_peer: dict[tuple[str, str, int], int] = {}
        self._next_conn = 1
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: messages waiting for a connection being made, by destination (sent in order on it)
        self._connecting: dict[tuple[str, str, int], list[bytes]] = {}
        self._error_logged: dict[tuple[str, str, str, int], float] = {}
        self._unexpected_logged: dict[tuple[str, str, str], float] = {}
        self._flushing = False
        self._tls_context: ssl.SSLContext | None = None
        #: how to connect over TLS to an address (a trunk's context), else `default_client()`
        self._tls_clients: dict[tuple[str, int], TlsClient] = {}
        self._default_tls: TlsClient | None = None
        self.refusals = RefusalLogger(log, "sip_request")
        self.port = 0
        self.tls_port = 0

    async def start(
        self,
        host: str,
        port: int,
        *,
        tls_host: str | None = None,
        tls_port: int | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        """Bind UDP and TCP on host:port (port 0: pick one free for both), TLS if asked.

        Raises OSError whose message names the listener, e.g. "sip_listen 0.0.0.0:5060:
        Address already in use"."""
        try:
            for _ in range(20 if port == 0 else 1):
                udp, _proto = await self.loop.create_datagram_endpoint(
                    lambda: _Datagram(self), local_addr=(host, port)
                )
                bound = int(udp.get_extra_info("sockname")[1])
                try:
                    server = await self.loop.create_server(
                        lambda: _Stream(self, "tcp"), host, bound, reuse_address=True
                    )
                except OSError:
                    udp.close()
                    if port != 0:
                        raise
                    continue
                self._udp, self.port = udp, bound
                self._udp_family = udp.get_extra_info("socket").family
                self._servers.append(server)
                break
            else:
                raise OSError(98, "no port free for both UDP and TCP")
        except OSError as exc:
            await self.aclose()
            # uvloop wraps the bind error: the errno is on __cause__
            root = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
            why = os.strerror(root.errno) if root.errno else (root.strerror or str(root))
            raise OSError(root.errno, f"sip_listen {host}:{port}: {why}") from None
        if tls_port is not None and tls_context is not None:
            self._tls_context = tls_context
            try:
                server = await self.loop.create_server(
                    lambda: _Stream(self, "tls"),
                    tls_host or host,
                    tls_port,
                    ssl=tls_context,
                    reuse_address=True,
                )
            except OSError as exc:
                await self.aclose()
                raise OSError(
                    exc.errno, f"sip_tls_listen {tls_host or host}:{tls_port}: {exc.strerror}"
                ) from None
            self._servers.append(server)
            self.tls_port = int(server.sockets[0].getsockname()[1])
        config = self.endpoint.config
        if config.port == 0:  # advertise the ports really bound in Via/Contact
            config = dataclasses.replace(config, port=self.port)
        if self.tls_port and config.tls_port == 0:
            config = dataclasses.replace(config, tls_port=self.tls_port)
        self.endpoint.config = config
        log.info("sip_listening", host=host, port=self.port, tls_port=self.tls_port or None)

    async def aclose(self) -> None:
        """Close sockets, connections, the timer and tasks; safe to call twice."""
        self.refusals.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        for server in self._servers:
            server.close()
        for stream in list(self._streams.values()):
            if stream.transport is not None:
                stream.transport.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers.clear()
        self._connecting.clear()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    # --- input

    def _received(self, data: bytes, addr: Address) -> None:
        try:
            method = self.endpoint.receive(data, addr, self.loop.time())
        except Exception:  # a core bug must not stop the listener; the input is dropped
            log.exception("sip_receive_failed", peer=addr.host)
        else:
            _count_request(method)
        self.flush()

    def _received_message(self, message: object, addr: Address) -> None:
        from gateway.sip.message import SipRequest, SipResponse

        assert isinstance(message, SipRequest | SipResponse)
        if isinstance(message, SipRequest):
            _count_request(message.method)
        try:
            self.endpoint.receive_message(message, addr, self.loop.time())
        except Exception:
            log.exception("sip_receive_failed", peer=addr.host)
        self.flush()

    # --- output

    def flush(self) -> None:
        """Send queued messages, deliver events, re-arm the timer. Re-entrant safe; never
        raises: whatever happens, the one timer of all SIP transactions is re-armed."""
        if self._flushing:
            return
        self._flushing = True
        try:
            while True:
                out = self.endpoint.messages_to_send()
                for data, addr in out:
                    self._send(data, addr)
                event = self.endpoint.next_event()
                if event is None and not out:
                    break
                while event is not None:
                    if isinstance(event, RequestRejected):
                        self._refused(event)
                    elif isinstance(event, UnexpectedInput):
                        self._unexpected(event)
                    elif isinstance(event, OutboundCallFailedOver):
                        self._failed_over(event)
                    elif isinstance(event, KeepAliveResult):
                        self._keepalive(event)
                    try:
                        self.on_event(event)
                    except Exception:
                        log.exception("sip_event_handler_failed", event=type(event).__name__)
                    event = self.endpoint.next_event()
        except Exception:  # a core bug: the messages and events still queued wait for the next
            log.exception("sip_flush_failed")
        finally:
            self._flushing = False
            self._arm()

    def _refused(self, event: RequestRejected) -> None:
        """Count a refusal and log it (floods summarised per source, gateway.refusals)."""
        reason = metrics.bounded(event.reason, REJECT_REASONS)
        metrics.SIP_REJECTED.labels(reason=reason).inc()
        if reason != "auth_required":  # a digest challenge is the first step of a call
            method = metrics.bounded(event.method, METHODS) if event.method else "-"
            self.refusals.refused(event.source.host, reason, method=method, status=event.status)

    def _failed_over(self, event: OutboundCallFailedOver) -> None:
        """An INVITE moved to the next target of its trunk (RFC 3263 §4.3): counted, logged."""
        reason = metrics.bounded(event.reason, ("timeout", "503", "transport"))
        metrics.SIP_FAILOVERS.labels(reason=reason).inc()
        failed, dest = event.failed, event.destination
        log.info(
            "sip_failover",
            call=event.call,
            reason=reason,
            failed=f"{failed.transport}:{failed.host}:{failed.port}",
            next=f"{dest.transport}:{dest.host}:{dest.port}",
        )

    def _keepalive(self, event: KeepAliveResult) -> None:
        """Count a keep-alive; log when a trunk stops answering them, or starts again."""
        metrics.SIP_KEEPALIVES.labels(result=metrics.bounded(event.result, KEEPALIVE_RESULTS)).inc()
        if not event.changed:
            return
        if event.result in ("error", "timeout"):
            log.warning(
                "sip_keepalive_failed", trunk=event.trunk, result=event.result, status=event.status
            )
        else:
            log.info("sip_keepalive_recovered", trunk=event.trunk, status=event.status)

    def _unexpected(self, event: UnexpectedInput) -> None:
        """A state table met an input it has no entry for (a core bug, never a peer's fault):
        counted, and logged once per machine, state and input every 10 s."""
        machine = metrics.bounded(event.machine, MACHINES)
        name = metrics.bounded(event.input, STATE_INPUTS)
        metrics.SIP_UNEXPECTED_INPUTS.labels(machine=machine, input=name).inc()
        now = self.loop.time()
        key = (machine, event.state, name)
        last = self._unexpected_logged.get(key)
        if last is not None and now - last < SEND_ERROR_LOG_INTERVAL:
            return
        if len(self._unexpected_logged) >= 1024:
            self._unexpected_logged.clear()
        self._unexpected_logged[key] = now
        log.error(
            "sip_unexpected_input",
            machine=machine,
            state=event.state,
            input=event.input,
            call=event.call,
        )

    def _send(self, data: bytes, addr: Address) -> None:
        """Send one message, or start the task that resolves or connects first. An error is
        the message's own: logged, counted, and never raised into `flush()`."""
        if data.startswith(b"SIP/2.0 ") and len(data) > 9:
            metrics.SIP_RESPONSES.labels(code_class=chr(data[8]) + "xx").inc()
        try:
            if addr.transport == "udp":
                if self._udp is None:
                    return
                if not is_ip(addr.host):
                    self._spawn(self._resolve_and_send(data, addr))
                else:
                    self._udp.sendto(data, (addr.host, addr.port))
                return
            stream = self._streams.get(addr.conn) if addr.conn is not None else None
            if stream is None:
                conn = self._by_peer.get((addr.transport, addr.host, addr.port))
                stream = self._streams.get(conn) if conn is not None else None
            if stream is not None:
                stream.write(data)
                return
            key = (addr.transport, addr.host, addr.port)
            waiting = self._connecting.get(key)
            if waiting is not None:  # in order, on the connection already being made
                waiting.append(data)
                return
            self._connecting[key] = [data]
            self._spawn(self._connect_and_send(key))
        except Exception as exc:  # uvloop: ValueError for an address of the other family
            self._undeliverable("send", addr, exc)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, addr: Address) -> str | None:
        """The IP literal of a destination named by host (RFC 3263 §4.2: A/AAAA, the port
        given); None, counted, logged and reported, if the name leads nowhere."""
        family = "AAAA" if self._udp_family == socket.AF_INET6 else "A"
        targets = [
            t
            for t in await self.resolver.addresses(addr.transport, addr.host, addr.port)
            if addr.transport != "udp" or (":" in t.host) == (family == "AAAA")
        ]
        if not targets:
            self._undeliverable("resolve", addr, "no address")
            return None
        return targets[0].host

    async def _resolve_and_send(self, data: bytes, addr: Address) -> None:
        """UDP to a host name: resolved first (sendto takes IP literals only on uvloop)."""
        ip = await self._resolve(addr)
        if ip is None or self._udp is None:
            return
        try:
            self._udp.sendto(data, (ip, addr.port))
        except Exception as exc:
            self._undeliverable("send", addr, exc)

    def use_tls_client(self, host: str, port: int, client: TlsClient) -> None:
        """Connections made over TLS to host:port use `client` (a trunk's context and name)."""
        self._tls_clients[(host, port)] = client

    def _tls_client(self, host: str, port: int) -> TlsClient:
        client = self._tls_clients.get((host, port))
        if client is None:
            if self._default_tls is None:
                self._default_tls = default_client()
            client = self._default_tls
        return client

    async def _connect_and_send(self, key: tuple[str, str, int]) -> None:
        transport, host, port = key
        ssl_ctx: ssl.SSLContext | None = None
        server_name: str | None = None
        if transport == "tls":
            client = self._tls_client(host, port)
            ssl_ctx, server_name = client.context, client.server_name or host
        ip = host if is_ip(host) else await self._resolve(Address(transport, host, port))
        if ip is None:
            self._connecting.pop(key, None)
            return
        try:
            _, proto = await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: _Stream(self, transport),
                    ip,
                    port,
                    ssl=ssl_ctx,
                    server_hostname=server_name,
                ),
                timeout=CONNECT_TIMEOUT,
            )
        except Exception as exc:  # OSError, TimeoutError, ssl errors
            self._connecting.pop(key, None)
            self._dial_failed(key, exc)
            return
        waiting = self._connecting.pop(key, [])
        if not proto.conn:  # refused by _register (too many connections): closed already
            self._undeliverable("connect", Address(transport, host, port), "too many connections")
            return
        proto.dialled = key
        if (transport, host, port) != (proto.kind, *proto.peer):
            # dialled by name: later messages to that name use this connection too
            proto.aliases.append(key)
            self._by_peer[key] = proto.conn
        for data in waiting:
            proto.write(data)

    def _undeliverable(self, reason: str, addr: Address, exc: object) -> None:
        """A message to `addr` could not be sent: counted and logged, and reported to the
        endpoint (§17.1.4), whose transactions sending there end (an INVITE fails over)."""
        self._send_failed(reason, addr.transport, addr.host, addr.port, exc)
        try:
            self.endpoint.transport_error(addr, self.loop.time(), _os_reason(exc))
        except Exception:  # a core bug must not stop the sender
            log.exception("sip_transport_error_failed")
        self.flush()  # re-entrant safe: inside flush() its loop sends what this queued

    def _dial_failed(self, key: tuple[str, str, int], exc: BaseException) -> None:
        """A connection we made failed (refused, timed out, TLS handshake or certificate
        check): counted by its reason (`tls_verify`, `tls_handshake`, `connect`), and its
        client transactions end now with OpenSSL's or the socket's verdict (§17.1.4)."""
        reason, why = _dial_error(exc)
        self._undeliverable(reason, Address(*key), why)

    def _send_failed(self, reason: str, transport: str, host: str, port: int, exc: object) -> None:
        metrics.SIP_SEND_ERRORS.labels(
            transport=metrics.bounded(transport, TRANSPORTS), reason=reason
        ).inc()
        now = self.loop.time()
        key = (reason, transport, host, port)
        last = self._error_logged.get(key)
        if last is not None and now - last < SEND_ERROR_LOG_INTERVAL:
            return
        if len(self._error_logged) >= 1024:
            self._error_logged.clear()
        self._error_logged[key] = now
        log.warning(
            "sip_send_failed",
            reason=reason,
            transport=transport,
            host=host,
            port=port,
            error=str(exc) or type(exc).__name__,
        )

    def _register(self, stream: _Stream) -> bool:
        if len(self._streams) >= MAX_CONNECTIONS:
            self._reap_idle()
            if len(self._streams) >= MAX_CONNECTIONS:  # counted and logged like any refusal
                peer = Address(stream.kind, stream.peer[0], stream.peer[1])
                self._refused(RequestRejected("capacity", "", 0, peer))
                return False
        stream.conn = self._next_conn
        self._next_conn += 1
        stream.last_used = self.loop.time()
        self._streams[stream.conn] = stream
        self._by_peer[(stream.kind, *stream.peer)] = stream.conn
        return True

    def _unregister(self, stream: _Stream) -> None:
        self._streams.pop(stream.conn, None)
        for key in [(stream.kind, *stream.peer), *stream.aliases]:
            if self._by_peer.get(key) == stream.conn:
                del self._by_peer[key]

    def _reap_idle(self) -> None:
        cutoff = self.loop.time() - IDLE_TIMEOUT
        for stream in list(self._streams.values()):
            if stream.last_used < cutoff and stream.transport is not None:
                stream.transport.close()
                self._unregister(stream)

    def _arm(self) -> None:
        try:
            when = self.endpoint.get_timer()
        except Exception:  # a core bug: retry in a second rather than never
            log.exception("sip_timer_failed")
            when = self.loop.time() + 1.0
        if when == self._timer_at and (self._timer is not None or when is None):
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = when
        if when is not None:
            self._timer = self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        try:
            self.endpoint.handle_timer(self.loop.time())
        except Exception:
            log.exception("sip_timer_failed")
        self.flush()


def _dial_error(exc: BaseException) -> tuple[str, str]:
    """The bounded reason (metrics label) and the text of a failed connection. The text is
    OpenSSL's verdict or the socket error: nothing of a key or a certificate's content."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "tls_verify", f"TLS certificate not accepted: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return "tls_handshake", f"TLS handshake failed: {exc.reason or exc}"
    if isinstance(exc, TimeoutError):
        return "connect", "connect timed out"
    return "connect", _os_reason(exc)


def _os_reason(exc: object) -> str:
    """An error as an operator reads it: "Connection refused", not the errno and address."""
    if isinstance(exc, OSError):
        root = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
        if root.errno:
            return os.strerror(root.errno)
    return str(exc) or type(exc).__name__


def _count_request(method: str | None) -> None:
    """Count a request that parsed (a malformed one is counted as rejected, not here)."""
    if method:
        metrics.SIP_REQUESTS.labels(method=metrics.bounded(method, METHODS)).inc()

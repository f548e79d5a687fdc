"""`RtpEndpoint`: the thin asyncio adapter that gives an `RtpSession` its two UDP sockets.

It binds RTP on an even port from the `PortPool` and RTCP on port+1 (trying the next pair when
one is busy), feeds received datagrams to the session, runs the session's one timer with
`loop.call_at`, sends the session's RTCP, and exports the session's counters to
`gateway.metrics` (as deltas, on each timer and at close, never per packet; packets refused for
their source also give one `rtp_source_refused` warning per export). Outgoing media is
paced by the shared media clock: the SIP leg packetizes on its tick and queues `send` with the
datagram in the clock's Outbox, which sends the slot's packets together (`send_frame()` does
both at once, outside a clock). This adapter has no pacing of its own. `aclose()` sends RTCP
BYE, closes both sockets and releases the ports; it is safe twice.

rtcp-mux (RFC 5761): `open(..., rtcp_mux=True)` binds no RTCP socket (an offer with a=rtcp-mux
we will answer with it), and `release_rtcp()` closes it once an answer agreed to mux. Then RTCP
is sent from the RTP socket, and the session takes RTCP arriving there apart from RTP (§4).
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable
from typing import Any, Final

from gateway import metrics
from gateway.errors import PortsExhausted
from gateway.logs import get_logger
from gateway.rtp.ports import PortPool
from gateway.rtp.session import DROP_REASONS, Address, RtpEventType, RtpSession

__all__ = ["RtpEndpoint"]

_log = get_logger(__name__)
_BUSY: Final = (errno.EADDRINUSE, errno.EACCES)
#: what export_metrics adds to, in the order of its tuple: packets in, out, lost, drops by reason
#: (children bound once: a labels() lookup per export and counter was measurable at 300 calls)
_EXPORTED_COUNTERS: Final = (
    metrics.RTP_PACKETS.labels(direction="in"),
    metrics.RTP_PACKETS.labels(direction="out"),
    metrics.RTP_LOST,
    *[metrics.RTP_DROPPED.labels(reason=reason) for reason in DROP_REASONS],
)
#: drop reasons that mean "a source we take no media from" (logged, at most once per export)
_SOURCE_REASONS: Final = ("wrong_source", "competing_source", "probation", "rtcp_wrong_source")
_SOURCE_INDEXES: Final = tuple(3 + DROP_REASONS.index(reason) for reason in _SOURCE_REASONS)


def _bind_udp(host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to (`host`, `port`); `host` is an address literal."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _close_unowned(rtp: asyncio.DatagramTransport | None, socks: list[socket.socket]) -> None:
    """After a failed open: close the RTP transport if it was made (it owns the first socket)
    and every socket no transport owns."""
    if rtp is not None:
        rtp.close()
    for sock in socks[1:] if rtp is not None else socks:
        sock.close()


def _hostport(addr: Address | None) -> str | None:
    return None if addr is None else f"{addr[0]}:{addr[1]}"


class _Protocol(asyncio.DatagramProtocol):
    """Drops datagrams until `RtpEndpoint.open` has built the endpoint; then `open` sets the
    instance's `datagram_received` to the endpoint's handler, which the loop calls directly."""

    def datagram_received(self, data: bytes, addr: Any) -> None:
        pass  # between the two binds: no endpoint yet

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP unreachable from a far end that went away: the media timeout handles it


class RtpEndpoint:
    """One call leg's RTP and RTCP sockets around a sans-I/O `RtpSession`."""

    def __init__(
        self,
        pool: PortPool,
        port: int,
        session: RtpSession,
        rtp: asyncio.DatagramTransport,
        rtcp: asyncio.DatagramTransport | None,
        on_event: Callable[[RtpEventType], None] | None,
    ) -> None:
        self._pool = pool
        self.port = port
        self.rtcp_port: int | None = port + 1 if rtcp is not None else None
        self.session = session
        self._rtp = rtp
        self._rtcp = rtcp
        self.on_event = on_event
        self._loop = asyncio.get_running_loop()
        self._time = self._loop.time
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0  # uvloop's call_at may return a Handle without when()
        self._closed = False
        self._unsendable_logged = False
        self._exported: tuple[int, ...] = (0,) * len(_EXPORTED_COUNTERS)
        self._protocols: tuple[_Protocol, ...] = ()
        self._arm()

    @classmethod
    async def open(
        cls,
        pool: PortPool,
        bind_host: str,
        session: RtpSession,
        *,
        on_event: Callable[[RtpEventType], None] | None = None,
        attempts: int = 16,
        rtcp_mux: bool = False,
    ) -> RtpEndpoint:
        """Bind an RTP/RTCP pair from `pool` on `bind_host`, skipping busy pairs.

        Raises PortsExhausted when the pool is empty or `attempts` pairs were busy; any other
        OSError (a bad address) propagates. Nothing stays bound or acquired on failure.
        `on_event` receives the session's events as they happen; without it, the owner
        drains `session.next_event()`. `rtcp_mux`: bind RTP only (RFC 5761).
        """
        loop = asyncio.get_running_loop()
        for _ in range(attempts):
            port = pool.acquire()
            rtp: asyncio.DatagramTransport | None = None
            socks: list[socket.socket] = []
            try:
                # Bound here, synchronously: given `local_addr`, the loop resolves the address
                # (uvloop through its executor), and under load call set-ups waited for it.
                socks.append(_bind_udp(bind_host, port))
                if not rtcp_mux:
                    socks.append(_bind_udp(bind_host, port + 1))
                rtp, rtp_protocol = await loop.create_datagram_endpoint(_Protocol, sock=socks[0])
                rtcp: asyncio.DatagramTransport | None = None
                rtcp_protocol: _Protocol | None = None
                if not rtcp_mux:
                    rtcp, rtcp_protocol = await loop.create_datagram_endpoint(
                        _Protocol, sock=socks[1]
                    )
            except OSError as exc:
                _close_unowned(rtp, socks)
                pool.release(port)
                # uvloop wraps the bind error; its errno is on __cause__
                code = exc.errno if exc.errno is not None else getattr(exc.__cause__, "errno", None)
                if code not in _BUSY:
                    raise
                _log.debug("rtp_port_busy", port=port)
                continue
            except BaseException:
                _close_unowned(rtp, socks)
                pool.release(port)
                raise
            endpoint = cls(pool, port, session, rtp, rtcp, on_event)
            # Both loops (asyncio, uvloop) look up protocol.datagram_received per datagram: the
            # endpoint's bound handlers as instance attributes save a call on every packet.
            # (endpoint -> transport -> protocol -> endpoint: `aclose` breaks that ring.)
            rtp_protocol.datagram_received = endpoint._on_rtp  # type: ignore[method-assign]
            endpoint._protocols = (rtp_protocol,)
            if rtcp_protocol is not None:
                rtcp_protocol.datagram_received = endpoint._on_rtcp  # type: ignore[method-assign]
                endpoint._protocols += (rtcp_protocol,)
            return endpoint
        raise PortsExhausted(f"no free RTP/RTCP pair after {attempts} busy ports")

    @property
    def local_addr(self) -> Address:
        host, port = self._rtp.get_extra_info("sockname")[:2]
        return host, port

    # --- receive

    def _on_rtp(self, data: bytes, addr: Any) -> None:
        """The RTP socket's `datagram_received` (installed by `open`)."""
        if len(addr) != 2:
            addr = (addr[0], addr[1])  # IPv6: (host, port, flowinfo, scope_id)
        session = self.session
        session.receive_datagram(data, addr, self._time())
        if session.pending_events or session.timer_dirty:  # else _after_input has nothing to do
            self._after_input()

    def _on_rtcp(self, data: bytes, addr: Any) -> None:
        """The RTCP socket's `datagram_received` (installed by `open`)."""
        if len(addr) != 2:
            addr = (addr[0], addr[1])
        self.session.receive_rtcp(data, addr, self._time())
        self._after_input()

    def _after_input(self) -> None:
        session = self.session
        if self.on_event is not None and session.pending_events:
            self._drain_events()
        if session.timer_dirty:  # per packet, the timer only ever moves later: skip get_timer
            session.timer_dirty = False
            when = session.get_timer()
            if when is not None and (self._timer is None or when < self._timer_at):
                self._arm()

    def session_changed(self) -> None:
        """Call after changing the session other than by input (`set_media_timeout`,
        `update_remote`): its timer may have moved earlier, and it may have events."""
        self._after_input()

    def _drain_events(self) -> None:
        assert self.on_event is not None
        session = self.session
        while (event := session.next_event()) is not None:
            self.on_event(event)

    # --- send

    def send(self, datagram: bytes) -> None:
        """Send one RTP datagram to the session's current remote address (latched or SDP)."""
        addr = self.session.remote_addr
        if addr is not None and not self._closed:
            try:
                self._rtp.sendto(datagram, addr)
            except ValueError as exc:  # uvloop: not an IP of the socket's family
                self._unsendable(addr, exc)

    def send_frame(self, payload: bytes | None, now: float) -> None:
        """Packetize one ptime (`payload` None: silence/CN) and send it: the media clock's call."""
        datagram = self.session.packetize(payload, now)
        if datagram is not None:
            self.send(datagram)

    def release_rtcp(self) -> None:
        """rtcp-mux was agreed (RFC 5761): close the RTCP socket; RTCP now goes out of, and
        comes in on, the RTP port. Safe to call again."""
        rtcp, self._rtcp = self._rtcp, None
        if rtcp is None:
            return
        self.rtcp_port = None
        rtcp.close()
        for protocol in self._protocols[1:]:
            protocol.__dict__.pop("datagram_received", None)
        self._protocols = self._protocols[:1]

    def _flush_rtcp(self) -> None:
        transport = self._rtcp if self._rtcp is not None else self._rtp
        for data, addr in self.session.rtcp_datagrams_to_send():
            try:
                transport.sendto(data, addr)
            except ValueError as exc:  # as in send(); the timer is re-armed all the same
                self._unsendable(addr, exc)

    def _unsendable(self, addr: Address, exc: ValueError) -> None:
        """The SDP named an address the socket cannot send to (an IPv6 address, or a name, on
        the IPv4 socket): uvloop raises where asyncio's loop calls `error_received`. Logged
        once per endpoint; the packets are dropped as on the default loop."""
        if not self._unsendable_logged:
            self._unsendable_logged = True
            _log.warning("rtp_send_failed", remote=str(addr[0]), port=addr[1], error=str(exc))

    # --- timer

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        when = self.session.get_timer()
        if when is not None and not self._closed:
            self._timer = self._loop.call_at(when, self._on_timer)
            self._timer_at = when

    def _on_timer(self) -> None:
        self._timer = None
        if self._closed:
            return
        rtcp_before = self.session.stats.rtcp_out
        self.session.handle_timer(self._loop.time())
        self._flush_rtcp()
        if self.session.stats.rtcp_out != rtcp_before:
            self.export_metrics(jitter_sample=True)
        if self.on_event is not None:
            self._drain_events()
        self._arm()

    # --- metrics

    def export_metrics(self, jitter_sample: bool = False) -> None:
        """Add the session's counter increments since the last export to gateway.metrics."""
        stats = self.session.stats
        dropped = stats.dropped
        current = (
            stats.packets_in,
            stats.packets_out,
            stats.lost,
            *[dropped[reason] for reason in DROP_REASONS],
        )
        for counter, value, before in zip(_EXPORTED_COUNTERS, current, self._exported, strict=True):
            if value > before:
                counter.inc(value - before)
        refused = {
            reason: current[i] - self._exported[i]
            for reason, i in zip(_SOURCE_REASONS, _SOURCE_INDEXES, strict=True)
            if current[i] > self._exported[i]
        }
        # At most one line per export (each RTCP interval), however many packets; probation
        # alone (a phone behind NAT being learned) is normal and not worth a warning.
        if refused.keys() - {"probation"}:
            last = self.session.last_refused
            _log.warning(
                "rtp_source_refused",
                port=self.port,
                source=_hostport(self.session.latched),
                last_refused=_hostport(last),
                **refused,
            )
        self._exported = current
        if jitter_sample and stats.packets_in:
            metrics.RTP_JITTER.observe(stats.jitter_seconds)

    # --- close

    async def aclose(self) -> None:
        """Send RTCP BYE, close both sockets, release the ports. Safe to call twice."""
        if self._closed:
            return
        try:
            self.session.close(self._loop.time())
            self._flush_rtcp()
            self.export_metrics()
        finally:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._rtp.close()
            if self._rtcp is not None:
                self._rtcp.close()
            self._pool.release(self.port)
            # No reference ring outlives the call: freed by reference counting, not the GC.
            for protocol in self._protocols:
                protocol.__dict__.pop("datagram_received", None)
            self._protocols = ()
            self.on_event = None

"""`RtpEndpoint`: the thin asyncio adapter that gives an `RtpSession` its two UDP sockets.

It binds RTP on an even port from the `PortPool` and RTCP on port+1 (trying the next pair when
one is busy), feeds received datagrams to the session, runs the session's one timer with
`loop.call_at`, sends the session's RTCP, and exports the session's counters to
`gateway.metrics` (as deltas, on each timer and at close, never per packet; packets refused for
their source also give one `rtp_source_refused` warning per export). Outgoing media is
paced by the shared media clock: the SIP leg packetizes on its tick and queues `send` with the
datagram in the clock's Outbox, which sends the slot's packets together (`send_frame()` does
both at once, outside a clock). This adapter has no pacing of its own.

Receiving (issue 20): the sockets are plain non-blocking sockets, no datagram transports. While
the call's leg is on a media clock, the loop does not watch the RTP socket: the leg's tick calls
`poll(now)` first, which reads what waits (at most `POLL_LIMIT` datagrams) with the kernel's
arrival time of each (SO_TIMESTAMPNS; A.8 jitter needs it), so the loop is not woken once per
packet. Before and after (and for an endpoint no clock serves) the loop reads it with
`add_reader`. RTCP on its own port is always read by the loop (a packet every few seconds).
`aclose()` sends RTCP BYE, closes both sockets and releases the ports; it is safe twice.

rtcp-mux (RFC 5761): `open(..., rtcp_mux=True)` binds no RTCP socket (an offer with a=rtcp-mux
we will answer with it), and `release_rtcp()` closes it once an answer agreed to mux. Then RTCP
is sent from the RTP socket, and the session takes RTCP arriving there apart from RTP (§4).
"""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import Final

from gateway import metrics
from gateway.errors import PortsExhausted
from gateway.logs import get_logger
from gateway.rtp.ports import PortPool
from gateway.rtp.session import DROP_REASONS, Address, RtpEventType, RtpSession

__all__ = ["RtpEndpoint"]

_log = get_logger(__name__)
_BUSY: Final = (errno.EADDRINUSE, errno.EACCES)
#: datagrams one `poll()` (one clock tick) reads at most from one RTP socket: a call gets one
#: or two per tick; more is a burst or a flood, and the other calls of the tick come first
POLL_LIMIT: Final = 32
_RECV_SIZE: Final = 4096  # RTP stays under the path MTU; a larger datagram is cut (and refused)
_CMSG_SIZE: Final = socket.CMSG_SPACE(16)  # one struct timespec


def _probe_kernel_stamps(option: int) -> bool:
    """True when a loopback datagram read with `option` on comes with its struct timespec."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx,
    ):
        try:
            rx.bind(("127.0.0.1", 0))
            rx.setsockopt(socket.SOL_SOCKET, option, 1)
            tx.sendto(b"\x80", rx.getsockname())
            rx.settimeout(1.0)
            _data, ancillary, _flags, _addr = rx.recvmsg(16, _CMSG_SIZE)
        except OSError:
            return False
    return any(
        level == socket.SOL_SOCKET and kind == option and len(raw) == 16
        for level, kind, raw in ancillary
    )


def _kernel_stamp_option() -> int | None:
    """The socket option for kernel receive times (SO_TIMESTAMPNS), or None if the kernel will
    not stamp. Python's `socket` lacks the name before 3.12 (the polled read then stamped every
    packet with its tick's time, and A.8 jitter saw the 20 ms grid: the CN test's defect);
    on Linux its value is 35 (asm-generic/socket.h), confirmed by a loopback probe."""
    option: int | None = getattr(socket, "SO_TIMESTAMPNS", None)
    if option is None and sys.platform == "linux":
        option = 35
    if option is None or not _probe_kernel_stamps(option):
        return None
    return option


#: SO_TIMESTAMPNS where the kernel stamps datagrams (probed once, at import)
_SO_TIMESTAMPNS: Final[int | None] = _kernel_stamp_option()
_TIMESPEC: Final = struct.Struct("@qq").unpack  # struct timespec on 64-bit Linux
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


def _close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.close()


def _hostport(addr: Address | None) -> str | None:
    return None if addr is None else f"{addr[0]}:{addr[1]}"


def _is_literal(family: int, host: str) -> bool:
    """True when `host` is an address literal of `family` (a name would make sendto resolve it,
    blocking the loop)."""
    try:
        socket.inet_pton(family, host)
    except (OSError, TypeError, ValueError):
        return False
    return True


class RtpEndpoint:
    """One call leg's RTP and RTCP sockets around a sans-I/O `RtpSession`.

    The RTP socket is read by the event loop (`loop.add_reader`) until `start_polling()`; from
    then on its owner (the SIP leg's clock tick) reads it with `poll(now)`, and the loop no
    longer wakes up per packet. `stop_polling()` hands it back to the loop."""

    def __init__(
        self,
        pool: PortPool,
        port: int,
        session: RtpSession,
        rtp: socket.socket,
        rtcp: socket.socket | None,
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
        self._family = rtp.family
        self._sendto = rtp.sendto
        self._recvmsg = rtp.recvmsg
        # kernel arrival times (SO_TIMESTAMPNS): a polled packet waited up to a tick in the
        # socket, and RFC 3550 A.8 jitter (which sizes the jitter buffer) needs when it came
        self._stamped = _SO_TIMESTAMPNS is not None
        self._cmsg_size = _CMSG_SIZE if self._stamped else 0
        if _SO_TIMESTAMPNS is not None:
            rtp.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        self._send_checked: Address | None = None  # the last remote address found sendable
        self.polling = False
        #: polls that stopped at `POLL_LIMIT` with datagrams left (a flood on this port)
        self.poll_backlogs = 0
        self._backlogs_exported = 0
        self._loop.add_reader(rtp, self._on_readable)
        if rtcp is not None:
            self._loop.add_reader(rtcp, self._on_rtcp_readable)
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
        for _ in range(attempts):
            port = pool.acquire()
            socks: list[socket.socket] = []
            try:
                # Bound here, synchronously, and read with add_reader (no datagram transport):
                # the clock's tick reads the RTP socket itself while the call has media.
                socks.append(_bind_udp(bind_host, port))
                if not rtcp_mux:
                    socks.append(_bind_udp(bind_host, port + 1))
                return cls(pool, port, session, socks[0], socks[1] if socks[1:] else None, on_event)
            except OSError as exc:
                _close_all(socks)
                pool.release(port)
                if exc.errno not in _BUSY:
                    raise
                _log.debug("rtp_port_busy", port=port)
                continue
            except BaseException:
                _close_all(socks)
                pool.release(port)
                raise
        raise PortsExhausted(f"no free RTP/RTCP pair after {attempts} busy ports")

    @property
    def local_addr(self) -> Address:
        host, port = self._rtp.getsockname()[:2]
        return host, port

    # --- receive

    @property
    def stamped(self) -> bool:
        """The kernel stamps this socket's datagrams with their arrival time (SO_TIMESTAMPNS)."""
        return self._stamped

    def start_polling(self) -> None:
        """The owner reads the RTP socket from now on with `poll()` (once per clock tick); the
        event loop stops watching it. Not without kernel arrival times: a packet waits up to a
        tick in the socket, and RFC 3550 A.8 jitter (which sizes the jitter buffer) must see
        when it came, not the tick's grid; the loop goes on reading it then."""
        if not self.polling and not self._closed and self._stamped:
            self.polling = True
            self._loop.remove_reader(self._rtp)

    def stop_polling(self) -> None:
        """Give the RTP socket back to the event loop (what waits in it is read at once)."""
        if self.polling and not self._closed:
            self.polling = False
            self._loop.add_reader(self._rtp, self._on_readable)

    def poll(self, now: float) -> int:
        """Read what waits on the RTP socket, at most `POLL_LIMIT` datagrams (a flood on one
        port cannot hold up the other calls of the tick: the rest waits for the next tick or is
        dropped by the kernel). Returns how many were read."""
        if self._closed:
            return 0
        read = self._drain(now, POLL_LIMIT)
        if read == POLL_LIMIT:
            self.poll_backlogs += 1
        return read

    def _on_readable(self) -> None:
        """The loop's reader while nobody polls (before the clock, after it, or no clock)."""
        self._drain(self._time(), POLL_LIMIT)  # level-triggered: called again if more wait

    def _drain(self, now: float, limit: int) -> int:
        session = self.session
        receive = session.receive_datagram
        recvmsg = self._recvmsg
        read = 0
        # CLOCK_REALTIME stamps to the loop's monotonic clock (both are vDSO reads)
        offset = time.monotonic() - time.time() if self._stamped else 0.0
        cmsg_size = self._cmsg_size
        while read < limit:
            try:
                data, ancillary, _flags, addr = recvmsg(_RECV_SIZE, cmsg_size)
            except BlockingIOError:
                break
            except OSError:
                # ICMP unreachable from a far end that went away (reported on the next read):
                # the media timeout handles it, as asyncio's error_received did
                read += 1
                continue
            read += 1
            arrival = now
            if ancillary:
                sec, nsec = _TIMESPEC(ancillary[0][2])
                arrival = sec + nsec * 1e-9 + offset
                if arrival > now:  # noqa: PLR1730 (min() costs a call per packet)
                    # uvloop's time() is cached per loop pass, in ms
                    arrival = now
            if len(addr) != 2:
                addr = (addr[0], addr[1])  # IPv6: (host, port, flowinfo, scope_id)
            receive(data, addr, arrival)
        if read and (session.pending_events or session.timer_dirty):
            self._after_input()
        return read

    def _on_rtcp_readable(self) -> None:
        rtcp = self._rtcp
        if rtcp is None:
            return
        for _ in range(POLL_LIMIT):
            try:
                data, addr = rtcp.recvfrom(_RECV_SIZE)
            except BlockingIOError:
                return
            except OSError:
                continue  # as on the RTP socket
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
        if addr is None or self._closed:
            return
        if addr is not self._send_checked and not self._sendable(addr):
            return
        try:
            self._sendto(datagram, addr)
        except OSError:
            pass  # a full buffer, or ICMP unreachable reported: lost like any UDP packet

    def _sendable(self, addr: Address) -> bool:
        """A new remote address: sendable when it is an address literal of the socket's family
        (else logged once; its packets are dropped)."""
        if _is_literal(self._family, addr[0]):
            self._send_checked = addr
            return True
        self._unsendable(addr, "not an address of the socket's family")
        return False

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
        self._loop.remove_reader(rtcp)
        rtcp.close()

    def _flush_rtcp(self) -> None:
        sock = self._rtcp if self._rtcp is not None else self._rtp
        for data, addr in self.session.rtcp_datagrams_to_send():
            if not _is_literal(sock.family, addr[0]):
                self._unsendable(addr, "not an address of the socket's family")
                continue
            try:
                sock.sendto(data, addr)
            except OSError:
                pass  # as in send(); the timer is re-armed all the same

    def _unsendable(self, addr: Address, error: str) -> None:
        """The SDP named an address the socket cannot send to (an IPv6 address, or a name, on
        the IPv4 socket). Logged once per endpoint; the packets are dropped."""
        if not self._unsendable_logged:
            self._unsendable_logged = True
            _log.warning("rtp_send_failed", remote=str(addr[0]), port=addr[1], error=error)

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
        if self.poll_backlogs != self._backlogs_exported:  # at most one line per export
            _log.warning(
                "rtp_poll_backlog",
                port=self.port,
                ticks=self.poll_backlogs - self._backlogs_exported,
                limit=POLL_LIMIT,
            )
            self._backlogs_exported = self.poll_backlogs
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
            if not self.polling:
                self._loop.remove_reader(self._rtp)
            self._rtp.close()
            if self._rtcp is not None:
                self._loop.remove_reader(self._rtcp)
                self._rtcp.close()
            self._pool.release(self.port)
            # No reference ring outlives the call: freed by reference counting, not the GC.
            self.on_event = None

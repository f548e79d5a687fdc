"""ICE for the WebRTC leg: servers from settings, and how host candidates are gathered.

aiortc's own gathering (through aioice) has three gaps for a gateway:

* it leaves 127.0.0.1 out of the host candidates, so a browser on the same machine that only
  offers loopback candidates (tests, loopback-only deployments) cannot connect;
* it binds ephemeral ports, so there is no UDP port range to open in a firewall or publish from
  a container;
* it has no NAT 1:1 mapping (a fixed public address in front of a container);
* its consent freshness (RFC 7675) checks every 5 s and gives up after 6 failed checks, so a
  browser that vanished (killed, network gone, no hang-up) keeps its call for about 33 s.

`pregather()` fills that in. It is the one place that reaches into aioice's `Connection`
internals: it gathers a connection's candidates itself before aiortc asks, so aiortc's later
`gather()` finds the work done. Gathering is still complete before the answer is sent (no
trickle ICE). It also gives each connection its own consent check (`_query_consent`): a check
every `CONSENT_INTERVAL` s (randomised ±20 %, RFC 7675 §5.1), consent lost when no check has
been answered for `CONSENT_TIMEOUT` s (RFC 7675 §5.1 allows an expiry shorter than 30 s). aioice
then closes the connection, aiortc reports the peer connection `failed`, and the leg ends
(`ice_failed`) within about CONSENT_TIMEOUT + one check.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import random
import socket
from dataclasses import dataclass, field
from typing import Any

from aioice import stun
from aioice.candidate import Candidate, candidate_foundation, candidate_priority
from aioice.ice import StunProtocol, get_host_addresses, server_reflexive_candidate
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection

from gateway.errors import NoFreePort
from gateway.logs import get_logger
from gateway.secret import Secret

log = get_logger("webrtc.ice")

_STUN_TIMEOUT = 3.0
_BIND_ATTEMPTS = 64
#: seconds between consent checks (each randomised to 0.8-1.2 times this, RFC 7675 §5.1)
CONSENT_INTERVAL = 0.5
#: consent expires when no check was answered for this long (aioice's own: about 30 s)
CONSENT_TIMEOUT = 3.0


@dataclass(frozen=True, slots=True)
class IcePolicy:
    """How the gateway's side of ICE is set up.

    `servers`: STUN/TURN URLs (aiortc uses the first STUN and the first TURN URL).
    `include_loopback`: add a 127.0.0.1 host candidate.
    `port_range`: (lo, hi) inclusive UDP ports for host candidates; None: ephemeral ports.
    `public_address`: NAT 1:1 address; each host candidate gets a server-reflexive twin on it.
    `host_addresses`: bind host candidates on these addresses only; None: every interface.
    """

    servers: tuple[str, ...] = ()
    username: str = ""
    credential: Secret = field(default_factory=lambda: Secret(""))
    include_loopback: bool = False
    port_range: tuple[int, int] | None = None
    public_address: str = ""
    host_addresses: tuple[str, ...] | None = None

    def configuration(self) -> RTCConfiguration:
        """The RTCConfiguration, always with an explicit server list (aiortc's default is a
        public STUN server, and nothing may leave the machine unless configured)."""
        servers = [
            RTCIceServer(
                urls=url,
                username=self.username or None,
                credential=self.credential.reveal() or None,
            )
            if url.startswith("turn")
            else RTCIceServer(urls=url)
            for url in self.servers
        ]
        return RTCConfiguration(iceServers=servers)


def _connections(pc: RTCPeerConnection) -> list[Any]:
    """aioice Connections of the transports that survived BUNDLE, after setRemoteDescription."""
    seen: dict[int, Any] = {}
    transports = [t.receiver.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        transports.append(pc.sctp.transport)
    for dtls in transports:
        gatherer = dtls.transport.iceGatherer
        if gatherer.state == "new":
            seen[id(gatherer)] = gatherer._connection
    return list(seen.values())


def consent_expired(pc: RTCPeerConnection) -> bool:
    """Whether one of `pc`'s ICE connections was closed by `_query_consent` (consent lost)."""
    transports = [t.receiver.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        transports.append(pc.sctp.transport)
    return any(
        getattr(dtls.transport._connection, "_gateway_consent_expired", False)
        for dtls in transports
        if dtls is not None
    )


async def pregather(pc: RTCPeerConnection, policy: IcePolicy) -> None:
    """Gather every ICE transport's local candidates per `policy`, ahead of aiortc."""
    for conn in _connections(pc):
        await _gather_connection(conn, policy)


async def _bind(conn: Any, address: str, policy: IcePolicy) -> StunProtocol | None:
    loop = asyncio.get_running_loop()
    if policy.port_range is None:
        ports = [0]
    else:
        lo, hi = policy.port_range
        count = hi - lo + 1
        start = random.randrange(count)
        ports = [lo + (start + i) % count for i in range(min(count, _BIND_ATTEMPTS))]
    for port in ports:
        try:
            _, protocol = await loop.create_datagram_endpoint(
                lambda: StunProtocol(conn), local_addr=(address, port)
            )
        except OSError:
            continue
        sock = protocol.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024 * 1024)
        return protocol
    if policy.port_range is not None:
        raise NoFreePort(f"no free UDP port in {policy.port_range[0]}-{policy.port_range[1]}")
    return None


async def _gather_connection(conn: Any, policy: IcePolicy) -> None:
    # aioice internals touched here: _local_candidates_start/_end, _local_candidates,
    # _protocols (as Connection.gather_candidates and get_component_candidates use them).
    conn._local_candidates_start = True
    # connect() starts `self.query_consent()`: an instance attribute takes the method's place
    conn.query_consent = functools.partial(_query_consent, conn)
    if policy.host_addresses is not None:
        addresses = list(policy.host_addresses)
    else:
        addresses = get_host_addresses(use_ipv4=True, use_ipv6=True)
    if policy.include_loopback and "127.0.0.1" not in addresses:
        addresses.insert(0, "127.0.0.1")
    candidates: list[Candidate] = []
    try:
        for component in sorted(conn._components):
            protocols: list[StunProtocol] = []
            for address in addresses:
                protocol = await _bind(conn, address, policy)
                if protocol is None:
                    continue
                host, port = protocol.transport.get_extra_info("sockname")[:2]
                protocol.local_candidate = Candidate(
                    foundation=candidate_foundation("host", "udp", host),
                    component=component,
                    transport="udp",
                    priority=candidate_priority(component, "host"),
                    host=host,
                    port=port,
                    type="host",
                )
                protocols.append(protocol)
                conn._protocols.append(protocol)
                candidates.append(protocol.local_candidate)
            candidates += _nat_candidates(protocols, policy.public_address)
            candidates += await _stun_candidates(conn, protocols)
            if conn.turn_server:
                # aioice's own TURN allocation (no host addresses: those are done above)
                candidates += await conn.get_component_candidates(component, addresses=[])
    finally:
        conn._local_candidates += candidates
        conn._local_candidates_end = True


def _nat_candidates(protocols: list[StunProtocol], public_address: str) -> list[Candidate]:
    """NAT 1:1: the public address with each host candidate's port, as srflx (RFC 8445 §5.1.1.2:
    what a STUN server would have reported, known in advance)."""
    if not public_address:
        return []
    out = []
    for protocol in protocols:
        local = protocol.local_candidate
        if ipaddress.ip_address(local.host).is_loopback or local.host == public_address:
            continue
        if ipaddress.ip_address(local.host).version != ipaddress.ip_address(public_address).version:
            continue
        out.append(
            Candidate(
                foundation=candidate_foundation("srflx", "udp", local.host),
                component=local.component,
                transport="udp",
                priority=candidate_priority(local.component, "srflx"),
                host=public_address,
                port=local.port,
                type="srflx",
                related_address=local.host,
                related_port=local.port,
            )
        )
    return out


async def _stun_candidates(conn: Any, protocols: list[StunProtocol]) -> list[Candidate]:
    if not conn.stun_server:
        return []
    tasks = [
        asyncio.ensure_future(server_reflexive_candidate(p, conn.stun_server))
        for p in protocols
        if ipaddress.ip_address(p.local_candidate.host).version == 4
        and not ipaddress.ip_address(p.local_candidate.host).is_loopback
    ]
    if not tasks:
        return []
    done, pending = await asyncio.wait(tasks, timeout=_STUN_TIMEOUT)
    for task in pending:
        task.cancel()
    out = []
    for task in done:
        if task.exception() is None:
            out.append(task.result()[0])
        else:
            log.info("stun_failed", error=type(task.exception()).__name__)
    return out


async def _query_consent(conn: Any) -> None:
    """RFC 7675 consent freshness for one aioice Connection, with a short expiry.

    Replaces aioice's `Connection.query_consent` (same internals: `_nominated`,
    `build_request`, `remote_password`, `close()`), timed by the loop clock.
    """
    loop = asyncio.get_running_loop()
    key = conn.remote_password.encode("utf8")
    answered = loop.time()
    while True:
        await asyncio.sleep(CONSENT_INTERVAL * (0.8 + 0.4 * random.random()))
        for pair in list(conn._nominated.values()):
            request = conn.build_request(pair, nominate=False)
            try:
                # one transmission: aioice's transaction gives up after its RTO (0.5 s)
                await pair.protocol.request(
                    request, pair.remote_addr, integrity_key=key, retransmissions=0
                )
                answered = loop.time()
            except stun.TransactionError:
                pass
        if loop.time() - answered >= CONSENT_TIMEOUT:
            log.info("webrtc_consent_expired", silent_s=round(loop.time() - answered, 2))
            conn._gateway_consent_expired = True
            conn._query_consent_task = None
            await conn.close()
            return

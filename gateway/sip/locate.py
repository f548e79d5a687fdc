"""Locating SIP servers (RFC 3263 §4): from a SIP URI and DNS answers to an ordered list of
targets, sans-I/O.

Theory of operation: a `Lookup` is one resolution. It asks for DNS records one query at a time
(`next_query(now)` → `(name, type)`, or None when done) and is told each answer (`answer()`, or
`failed()` for a timeout or server failure); `targets()` is the result: (transport, IP, port)
in the order to try them, each with the URI's host name (what TLS verifies, RFC 5922 §4). A
query whose answer is in the `DnsCache` is never asked: answers live for their TTL, read against
the `now` passed in. The adapter (`resolver.py`) only runs the queries:

    lookup = Lookup(uri, cache, rng)
    while (query := lookup.next_query(now)) is not None:
        lookup.answer(*query, records, ttl, now)   # from the DNS
    targets = lookup.targets()

The steps (§4.1 transport, §4.2 port and address):
- a numeric IP is the target, with the URI's port (default 5060, 5061 for TLS); no query;
- a host name with an explicit port: A/AAAA of the host, with that port; UDP unless
  `transport=` says otherwise (TLS for `sips:`);
- `transport=` (or `sips:`, which is TLS) without a port: SRV `_sip._udp`, `_sip._tcp` or
  `_sips._tcp` of the host, else A/AAAA;
- neither: NAPTR of the host (services `SIP+D2U`, `SIP+D2T`, `SIPS+D2T` by order and
  preference, only `SIPS+D2T` for `sips:`) to the SRV names; without usable NAPTR records, SRV
  for each transport we support; without SRV records, A/AAAA with UDP (TLS for `sips:`).
SRV records are ordered by priority, then by a weighted random choice within a priority
(RFC 2782); a target "." means the service is not offered there. Every address of every
record is a target: `fail_over` (RFC 3263 §4.3) moves to the next on a timeout, a 503 or a
transport error. No I/O, no clock, no logging.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Generator, Sequence
from dataclasses import dataclass

from gateway.sip.message import SipUri
from gateway.sip.routing import DEFAULT_PORTS, uri_transport
from gateway.sip.sdp import is_ip
from gateway.sip.transaction import Address

TRANSPORTS = ("udp", "tcp", "tls")
#: RFC 3263 §4.1 NAPTR services and SRV prefixes, by transport
NAPTR_SERVICES = {"SIP+D2U": "udp", "SIP+D2T": "tcp", "SIPS+D2T": "tls"}
SRV_PREFIX = {"udp": "_sip._udp.", "tcp": "_sip._tcp.", "tls": "_sips._tcp."}
RECORD_TYPES = ("NAPTR", "SRV", "A", "AAAA")
#: at most this many targets per lookup (a name with 300 addresses must not make 300 attempts)
MAX_TARGETS = 16


@dataclass(frozen=True)
class Naptr:
    """One NAPTR record (RFC 3403), the fields RFC 3263 uses."""

    order: int
    preference: int
    flags: str
    service: str
    replacement: str


@dataclass(frozen=True)
class Srv:
    """One SRV record (RFC 2782)."""

    priority: int
    weight: int
    port: int
    target: str


Record = Naptr | Srv | str  # an A or AAAA record is its address
Query = tuple[str, str]  # (name, record type)


@dataclass(frozen=True)
class Target:
    """Where to send: an IP literal, a port and a transport. `server_name` is the URI's host,
    the name a TLS server's certificate must carry (RFC 5922 §4), whatever SRV pointed to."""

    transport: str
    host: str
    port: int
    server_name: str

    @property
    def address(self) -> Address:
        return Address(self.transport, self.host, self.port)


def _name(name: str) -> str:
    return name.rstrip(".").lower()


class DnsCache:
    """DNS answers by (name, type), each kept until its TTL runs out (an empty tuple: the name
    has no such records). Bounded: the oldest entry goes first."""

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[Query, tuple[float, tuple[Record, ...]]] = OrderedDict()

    def get(self, name: str, rdtype: str, now: float) -> tuple[Record, ...] | None:
        """The records, or None if unknown or expired."""
        key = (_name(name), rdtype)
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, records = entry
        if now >= expires:
            del self._entries[key]
            return None
        return records

    def put(
        self, name: str, rdtype: str, records: Sequence[Record], ttl: float, now: float
    ) -> None:
        if ttl <= 0:
            return
        key = (_name(name), rdtype)
        self._entries[key] = (now + ttl, tuple(records))
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


def srv_order(records: Sequence[Srv], rng: random.Random) -> list[Srv]:
    """RFC 2782: lowest priority first; within a priority, a weighted random choice, repeated
    (weight-0 records first in the running sum, so they are picked rarely but can be)."""
    ordered: list[Srv] = []
    for priority in sorted({r.priority for r in records}):
        group = sorted((r for r in records if r.priority == priority), key=lambda r: r.weight)
        while group:
            total = sum(r.weight for r in group)
            pick = rng.randint(0, total)
            running = 0
            for i, record in enumerate(group):
                running += record.weight
                if running >= pick:
                    ordered.append(group.pop(i))
                    break
    return ordered


def naptr_order(records: Sequence[Naptr], sips: bool, transports: Sequence[str]) -> list[Naptr]:
    """§4.1: the NAPTR records that lead to an SRV name of a transport we support (and TLS only
    for a sips: URI), by order then preference."""
    usable = [
        r
        for r in records
        if r.flags.lower() == "s"
        and NAPTR_SERVICES.get(r.service.upper()) in transports
        and (not sips or r.service.upper() == "SIPS+D2T")
        and r.replacement not in ("", ".")
    ]
    return sorted(usable, key=lambda r: (r.order, r.preference))


class Lookup:
    """One RFC 3263 resolution of `uri` (see the module's docstring for the protocol)."""

    def __init__(
        self,
        uri: SipUri,
        cache: DnsCache,
        rng: random.Random | None = None,
        *,
        transports: Sequence[str] = TRANSPORTS,
        address_types: Sequence[str] = ("A", "AAAA"),
    ) -> None:
        self.uri = uri
        self.cache = cache
        self.rng = rng or random.Random()
        self.transports = tuple(transports)
        self.address_types = tuple(address_types)
        self.queries: list[Query] = []  # those asked of the DNS (not answered from the cache)
        self._targets: list[Target] = []
        self._steps = self._run()
        self._pending: Query | None = next(self._steps, None)
        self._done = self._pending is None

    # --- the protocol

    def next_query(self, now: float) -> Query | None:
        """The next query to ask the DNS, None when the targets are known. Answers still in the
        cache are used without asking."""
        while self._pending is not None:
            cached = self.cache.get(*self._pending, now)
            if cached is None:
                if not self.queries or self.queries[-1] != self._pending:
                    self.queries.append(self._pending)
                return self._pending
            self._feed(cached)
        return None

    def answer(
        self, name: str, rdtype: str, records: Sequence[Record], ttl: float, now: float
    ) -> None:
        """The DNS's answer to the pending query (no records: NXDOMAIN or no data), cached for
        `ttl` seconds."""
        self._check(name, rdtype)
        self.cache.put(name, rdtype, records, ttl, now)
        self._feed(tuple(records))

    def failed(self, name: str, rdtype: str) -> None:
        """The pending query got no answer (timeout, SERVFAIL): taken as no records, not
        cached, so the next lookup asks again."""
        self._check(name, rdtype)
        self._feed(())

    def targets(self) -> list[Target]:
        """Where to send, in order; empty if the name leads nowhere."""
        if not self._done:
            raise RuntimeError("lookup not finished: call next_query() until it returns None")
        return list(self._targets)

    @property
    def done(self) -> bool:
        return self._done

    def _check(self, name: str, rdtype: str) -> None:
        pending = self._pending
        if pending is None or (_name(name), rdtype) != (_name(pending[0]), pending[1]):
            raise RuntimeError(f"no pending query {rdtype} {name}")

    def _feed(self, records: tuple[Record, ...]) -> None:
        try:
            self._pending = self._steps.send(records)
        except StopIteration:
            self._pending = None
            self._done = True

    # --- the steps, as a generator: each yield is a query, each send its records

    def _run(self) -> Generator[Query, tuple[Record, ...], None]:
        uri = self.uri
        host = uri.host
        sips = uri.scheme == "sips"
        explicit = uri.params.get("transport")
        transport = uri_transport(uri)  # §4.1: sips: is TLS (over TCP) whatever transport= says
        if is_ip(host):  # §4.1, §4.2: a numeric IP needs no lookup
            self._add(transport, host, uri.port or DEFAULT_PORTS[transport])
            return
        if uri.port is not None:  # §4.2: a port given: A/AAAA only
            yield from self._addresses(host, transport, uri.port)
            return
        if explicit is not None or sips:  # §4.2: SRV for that transport
            found = yield from self._srv(host, transport)
            if not found:
                yield from self._addresses(host, transport, DEFAULT_PORTS[transport])
            return
        answer = yield (host, "NAPTR")
        naptrs = naptr_order([r for r in answer if isinstance(r, Naptr)], sips, self.transports)
        found = False
        for naptr in naptrs:  # §4.1: the NAPTR records decide the transports, in their order
            t = NAPTR_SERVICES[naptr.service.upper()]
            found = (yield from self._srv(host, t, name=naptr.replacement)) or found
        if not naptrs:
            srv_transports = ("tls",) if sips else self.transports
            for t in srv_transports:  # §4.1: no NAPTR: SRV for each transport we support
                found = (yield from self._srv(host, t)) or found
        if not found:  # §4.2: no SRV either: A/AAAA with the default port
            yield from self._addresses(host, transport, DEFAULT_PORTS[transport])

    def _srv(
        self, host: str, transport: str, name: str | None = None
    ) -> Generator[Query, tuple[Record, ...], bool]:
        """The targets of one SRV name; True if it had records (even only ".")."""
        records = yield (name or SRV_PREFIX[transport] + host, "SRV")
        srvs = [r for r in records if isinstance(r, Srv)]
        for srv in srv_order(srvs, self.rng):
            if _name(srv.target) in ("", "."):
                continue  # RFC 2782: "." means the service is decidedly not available
            yield from self._addresses(srv.target, transport, srv.port)
        return bool(srvs)

    def _addresses(
        self, host: str, transport: str, port: int
    ) -> Generator[Query, tuple[Record, ...], None]:
        for rdtype in self.address_types:
            if len(self._targets) >= MAX_TARGETS:
                return
            for record in (yield (host, rdtype)):
                if isinstance(record, str) and is_ip(record):
                    self._add(transport, record, port)

    def _add(self, transport: str, host: str, port: int) -> None:
        target = Target(transport, host, port, self.uri.host)
        if target not in self._targets and len(self._targets) < MAX_TARGETS:
            self._targets.append(target)


def fail_over(targets: Sequence[Address], status: int | None) -> Address | None:
    """RFC 3263 §4.3: the next target after a timeout or transport error (`status` None) or a
    503; None when there is none left or the answer is another failure, which is final."""
    if status is not None and status != 503:
        return None
    return targets[0] if targets else None

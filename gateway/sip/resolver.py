"""The DNS adapter for RFC 3263 (`gateway/sip/locate.py`): runs a `Lookup`'s queries with
dnspython's asyncio resolver, on the running loop (uvloop or asyncio's), and feeds the answers
back. It only moves queries and answers; what to ask and what the answers mean is the core's.

Servers: `sip_dns_servers` (`HOST:PORT` each) if given, else the system's resolver
(/etc/resolv.conf, with its search list for host names); in the system mode a host name is
looked up in the hosts file first (/etc/hosts, as the C library's default `files dns` order
does), so `localhost` and names a container runtime writes there still work. Answers are cached
for their TTL (`DnsCache`), a name with no such records for `NEGATIVE_TTL`; a timeout or server
failure is not cached. The same query asked by many calls at once goes to the DNS once.
Queries are counted in `gateway_sip_dns_queries_total{type, result}`.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Sequence

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.resolver

from gateway import metrics
from gateway.errors import SipError
from gateway.logs import get_logger
from gateway.sip.locate import (
    RECORD_TYPES,
    TRANSPORTS,
    DnsCache,
    Lookup,
    Naptr,
    Record,
    Srv,
    Target,
)
from gateway.sip.message import SipUri
from gateway.sip.sdp import is_ip

log = get_logger("sip.resolver")

#: seconds a "no such name" or "no such records" answer is kept (RFC 2308 lets the zone's SOA
#: say; a fixed short time keeps a trunk that was just fixed from staying unknown for long)
NEGATIVE_TTL = 30.0
QUERY_TIMEOUT = 2.0  # per server
QUERY_LIFETIME = 4.0  # per query, all servers and retries
LOG_INTERVAL = 10.0  # a failing name is logged once per 10 s
HOSTS_FILE = "/etc/hosts"


class SipResolver:
    """RFC 3263 lookups over DNS. `servers`: `HOST:PORT` strings; empty: the system's."""

    def __init__(
        self,
        servers: Sequence[tuple[str, int]] = (),
        *,
        address_types: Sequence[str] = ("A", "AAAA"),
        rng: random.Random | None = None,
        hosts_file: str = HOSTS_FILE,
    ) -> None:
        self.cache = DnsCache()
        self.address_types = tuple(address_types)
        self.rng = rng or random.Random()
        self.system = not servers
        self._hosts_file = hosts_file if self.system else ""
        self._hosts: dict[str, tuple[str, ...]] = {}
        self._hosts_mtime: float | None = None
        try:
            resolver = dns.asyncresolver.Resolver(configure=self.system)
        except dns.resolver.NoResolverConfiguration:  # no /etc/resolv.conf: the hosts file only
            resolver = dns.asyncresolver.Resolver(configure=False)
        if servers:
            resolver.nameservers = [dns.nameserver.Do53Nameserver(h, p) for h, p in servers]
        resolver.timeout = QUERY_TIMEOUT
        resolver.lifetime = QUERY_LIFETIME
        self._resolver = resolver
        self._inflight: dict[tuple[str, str], asyncio.Future[tuple[list[Record], float]]] = {}
        self._logged: dict[tuple[str, str], float] = {}

    async def locate(self, uri: SipUri, transports: Sequence[str] = TRANSPORTS) -> list[Target]:
        """The targets of `uri` in the order to try them (RFC 3263 §4); empty if none."""
        lookup = Lookup(
            uri, self.cache, self.rng, transports=transports, address_types=self.address_types
        )
        loop = asyncio.get_running_loop()
        while (query := lookup.next_query(loop.time())) is not None:
            name, rdtype = query
            try:
                records, ttl = await self._query(name, rdtype)
            except _Failed:
                lookup.failed(name, rdtype)
            else:
                lookup.answer(name, rdtype, records, ttl, loop.time())
        return lookup.targets()

    async def addresses(self, transport: str, host: str, port: int) -> list[Target]:
        """A host name with a port (a next hop or a Via's sent-by): A/AAAA only (§4.2)."""
        if is_ip(host):
            return [Target(transport, host, port, host)]
        scheme = "sips" if transport == "tls" else "sip"
        params: dict[str, str | None] = {} if transport == "tls" else {"transport": transport}
        return await self.locate(SipUri(scheme, host, port=port, params=params))

    async def _query(self, name: str, rdtype: str) -> tuple[list[Record], float]:
        key = (name.rstrip(".").lower(), rdtype)
        running = self._inflight.get(key)
        if running is not None:  # asked already by another call: share its answer
            return await asyncio.shield(running)
        future: asyncio.Future[tuple[list[Record], float]] = (
            asyncio.get_running_loop().create_future()
        )
        self._inflight[key] = future
        try:
            result = await self._ask(name, rdtype)
        except BaseException as exc:
            future.set_exception(exc if isinstance(exc, _Failed) else _Failed())
            future.exception()  # retrieved: no "never retrieved" warning if nobody shares it
            raise
        else:
            future.set_result(result)
            return result
        finally:
            del self._inflight[key]

    async def _ask(self, name: str, rdtype: str) -> tuple[list[Record], float]:
        if rdtype in ("A", "AAAA") and self._hosts_file:
            known = self._from_hosts(name)
            if known is not None:
                wanted = [a for a in known if (":" in a) == (rdtype == "AAAA")]
                return list(wanted), 0.0  # the hosts file is read again when it changes
        label = metrics.bounded(rdtype, RECORD_TYPES)
        search = self.system and rdtype in ("A", "AAAA")
        try:
            answer = await self._resolver.resolve(
                name, rdtype, search=search, raise_on_no_answer=False
            )
        except dns.resolver.NXDOMAIN:
            metrics.SIP_DNS_QUERIES.labels(type=label, result="nxdomain").inc()
            return [], NEGATIVE_TTL
        except dns.exception.Timeout as exc:
            self._failed(name, rdtype, "timeout", exc)
            raise _Failed from None
        except (dns.exception.DNSException, OSError, ValueError) as exc:
            # no server answered usably (SERVFAIL, REFUSED), a name DNS cannot carry, ...
            self._failed(name, rdtype, "error", exc)
            raise _Failed from None
        if answer.rrset is None:
            metrics.SIP_DNS_QUERIES.labels(type=label, result="nodata").inc()
            return [], NEGATIVE_TTL
        metrics.SIP_DNS_QUERIES.labels(type=label, result="ok").inc()
        return [_record(rdata) for rdata in answer.rrset], float(answer.rrset.ttl)

    def _failed(self, name: str, rdtype: str, result: str, exc: BaseException) -> None:
        metrics.SIP_DNS_QUERIES.labels(
            type=metrics.bounded(rdtype, RECORD_TYPES), result=result
        ).inc()
        now = asyncio.get_running_loop().time()
        key = (name, rdtype)
        last = self._logged.get(key)
        if last is not None and now - last < LOG_INTERVAL:
            return
        if len(self._logged) >= 1024:
            self._logged.clear()
        self._logged[key] = now
        log.warning(
            "sip_dns_failed", name=name, type=rdtype, result=result, error=str(exc) or result
        )

    def _from_hosts(self, name: str) -> tuple[str, ...] | None:
        """The addresses the hosts file gives `name`, None if it does not name it."""
        try:
            mtime = os.stat(self._hosts_file).st_mtime
        except OSError:
            mtime = None
        if mtime != self._hosts_mtime:
            self._hosts_mtime = mtime
            self._hosts = _read_hosts(self._hosts_file) if mtime is not None else {}
        found = self._hosts.get(name.rstrip(".").lower())
        if found is None and name.rstrip(".").lower() == "localhost":
            return ("127.0.0.1", "::1")  # RFC 6761 §6.3: never asked of the DNS
        return found


class _Failed(SipError):
    """A query that got no usable answer (private: raised and caught here)."""


def _record(rdata: object) -> Record:
    """A dnspython rdata as the core's record."""
    kind = type(rdata).__name__
    if kind == "NAPTR":
        return Naptr(
            int(rdata.order),  # type: ignore[attr-defined]
            int(rdata.preference),  # type: ignore[attr-defined]
            rdata.flags.decode("ascii", "replace"),  # type: ignore[attr-defined]
            rdata.service.decode("ascii", "replace"),  # type: ignore[attr-defined]
            rdata.replacement.to_text(omit_final_dot=True),  # type: ignore[attr-defined]
        )
    if kind == "SRV":
        target = rdata.target  # type: ignore[attr-defined]
        return Srv(
            int(rdata.priority),  # type: ignore[attr-defined]
            int(rdata.weight),  # type: ignore[attr-defined]
            int(rdata.port),  # type: ignore[attr-defined]
            "." if target == dns.name.root else target.to_text(omit_final_dot=True),
        )
    return str(rdata.address)  # type: ignore[attr-defined]


def _read_hosts(path: str) -> dict[str, tuple[str, ...]]:
    hosts: dict[str, list[str]] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split("#", 1)[0].split()
                if len(fields) < 2 or not is_ip(fields[0].split("%", 1)[0]):
                    continue
                for host in fields[1:]:
                    hosts.setdefault(host.lower(), []).append(fields[0])
    except OSError:
        return {}
    return {name: tuple(addrs) for name, addrs in hosts.items()}

"""Access control for SIP sources: allow-list, trunks, rate limits, scanner detection.

No I/O; time is passed in. Three budgets, kept apart (token buckets in bounded LRU tables):

- **new calls**: a dialog-creating INVITE spends one token of its trunk's budget
  (`TrunkPolicy.calls_per_second`), or, for an allow-listed address outside every trunk, of that
  address's own budget (`calls_per_second`). Over budget, the endpoint answers `503` with
  Retry-After.
- **replies**: those 503s spend one global budget (`reply_rate`), so a flood of INVITEs cannot
  be turned into a flood of answers; beyond it they are dropped.
- **messages**: anything else that belongs to no call or transaction (OPTIONS, strays, unknown
  dialogs) spends the sending address's message budget (`rate`, `burst`). Sources outside the
  allow-list are charged before their datagram is even parsed, and share an aggregate budget as
  well, so a flood from many (spoofed) addresses can neither grow memory nor crowd out a trunk.

Messages of calls and transactions in progress (retransmissions, ACK, CANCEL, BYE, re-INVITE,
responses to our requests) are never charged: the endpoint knows them and does not ask.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

# User-Agent substrings of common SIP scanners (sipvicious, sipcli, sundayddr, ...).
SCANNER_AGENTS = (
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "sip-scan",
    "sipsak",
    "sundayddr",
    "iwar",
    "vaxsipuseragent",
    "pplsip",
    "smap",
    "nessus",
)

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class _Buckets:
    """Token buckets per key in an LRU table of at most `size` entries."""

    def __init__(self, rate: float, burst: float, size: int) -> None:
        self.rate = rate
        self.burst = burst
        self.size = size
        self._table: OrderedDict[str, list[float]] = OrderedDict()

    def _refilled(self, key: str, now: float) -> list[float]:
        entry = self._table.get(key)
        if entry is None:
            if len(self._table) >= self.size:
                self._table.popitem(last=False)
            entry = [self.burst, now]
            self._table[key] = entry
        else:
            self._table.move_to_end(key)
            entry[0] = min(self.burst, entry[0] + max(0.0, now - entry[1]) * self.rate)
            entry[1] = now
        return entry

    def take(self, key: str, now: float) -> bool:
        entry = self._refilled(key, now)
        if entry[0] >= 1.0:
            entry[0] -= 1.0
            return True
        return False

    def empty(self, key: str, now: float) -> bool:
        """True if `take` would fail now (nothing is spent)."""
        entry = self._table.get(key)
        if entry is None:
            return self.burst < 1.0
        return min(self.burst, entry[0] + max(0.0, now - entry[1]) * self.rate) < 1.0

    def __len__(self) -> int:
        return len(self._table)


@dataclass(frozen=True, slots=True)
class TrunkPolicy:
    """An inbound trunk: the networks it sends from and its budget of new calls."""

    name: str
    networks: tuple[IpNetwork, ...]
    calls_per_second: float
    calls_burst: float

    @classmethod
    def of(
        cls, name: str, sources: Sequence[str], calls_per_second: float, calls_burst: float
    ) -> TrunkPolicy:
        """Build from CIDR strings (ValueError for a bad one)."""
        nets = tuple(ipaddress.ip_network(c, strict=False) for c in sources)
        return cls(name, nets, calls_per_second, calls_burst)


class SourcePolicy:
    """Who may call, and how fast anyone may send."""

    def __init__(
        self,
        allow: Sequence[str] = ("127.0.0.0/8", "::1/128"),
        *,
        rate: float = 50.0,
        burst: float = 100.0,
        max_sources: int = 4096,
        unlisted_total_rate: float | None = None,
        calls_per_second: float = 50.0,
        calls_burst: float = 100.0,
        trunks: Sequence[TrunkPolicy] = (),
        reply_rate: float = 100.0,
    ) -> None:
        self.networks: list[IpNetwork] = [ipaddress.ip_network(c, strict=False) for c in allow]
        self.trunks = tuple(trunks)
        self._allowed = _Buckets(rate, burst, max_sources)
        self._unlisted = _Buckets(rate, burst, max_sources)
        total = unlisted_total_rate if unlisted_total_rate is not None else rate * 10
        self._unlisted_total = _Buckets(total, total * 2, 1)
        self._calls = _Buckets(calls_per_second, calls_burst, max_sources)
        self._trunk_calls = {t.name: _Buckets(t.calls_per_second, t.calls_burst, 1) for t in trunks}
        self._replies = _Buckets(reply_rate, reply_rate, 1)  # a burst of one second's worth
        # host -> (allowed, trunk name or None); bounded like the buckets
        self._sources: OrderedDict[str, tuple[bool, str | None]] = OrderedDict()

    def _classify(self, host: str) -> tuple[bool, str | None]:
        cached = self._sources.get(host)
        if cached is not None:
            return cached
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            result: tuple[bool, str | None] = (False, None)
        else:
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
                ip = ip.ipv4_mapped
            trunk = next((t.name for t in self.trunks if any(ip in n for n in t.networks)), None)
            result = (trunk is not None or any(ip in net for net in self.networks), trunk)
        if len(self._sources) >= 4096:
            self._sources.popitem(last=False)
        self._sources[host] = result
        return result

    def is_allowed(self, host: str) -> bool:
        """True if `host` is inside an allow-listed network or a trunk's sources."""
        return self._classify(host)[0]

    def trunk_of(self, host: str) -> str | None:
        """The name of the trunk `host` belongs to, None if none."""
        return self._classify(host)[1]

    def admit(self, host: str, now: float) -> bool:
        """Spend one token of `host`'s message budget; False means drop it unanswered."""
        if self.is_allowed(host):
            return self._allowed.take(host, now)
        return self._unlisted.take(host, now) and self._unlisted_total.take("*", now)

    def _call_bucket(self, host: str) -> tuple[_Buckets, str]:
        trunk = self.trunk_of(host)
        return (self._trunk_calls[trunk], trunk) if trunk is not None else (self._calls, host)

    def admit_call(self, host: str, now: float) -> bool:
        """Spend one token of the new-call budget of `host`'s trunk (or of `host` itself)."""
        buckets, key = self._call_bucket(host)
        return buckets.take(key, now)

    def calls_exhausted(self, host: str, now: float) -> bool:
        """True if a new INVITE from `host` would be neither admitted nor answered now, so it
        can be dropped before it is parsed (nothing is spent)."""
        buckets, key = self._call_bucket(host)
        return buckets.empty(key, now) and self._replies.empty("*", now)

    def admit_reply(self, now: float) -> bool:
        """Spend one token of the global budget of 503s to INVITEs over their call budget."""
        return self._replies.take("*", now)

    def retry_after(self, host: str) -> int:
        """Seconds a caller over its call budget is asked to wait (Retry-After, §20.33)."""
        buckets, _ = self._call_bucket(host)
        return max(1, math.ceil(1.0 / buckets.rate)) if buckets.rate > 0 else 60

    @property
    def tracked_sources(self) -> int:
        """Entries in the per-address tables (messages, and calls outside trunks)."""
        return len(self._allowed) + len(self._unlisted) + len(self._calls)


def is_scanner(user_agent: str | None) -> bool:
    """True for the User-Agent of a known SIP scanner."""
    if not user_agent:
        return False
    low = user_agent.lower()
    return any(s in low for s in SCANNER_AGENTS)

"""Access control for SIP sources: allow-list, per-source rate limits, scanner detection.

No I/O; time is passed in. Rate state is two bounded LRU tables of token buckets, one for
allow-listed sources and one for everyone else, plus an aggregate bucket for everyone else, so a
flood from many (spoofed) addresses can neither grow memory nor spend an allowed trunk's budget.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Sequence

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

    def take(self, key: str, now: float) -> bool:
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
        if entry[0] >= 1.0:
            entry[0] -= 1.0
            return True
        return False

    def __len__(self) -> int:
        return len(self._table)


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
    ) -> None:
        self.networks: list[IpNetwork] = [ipaddress.ip_network(c, strict=False) for c in allow]
        self._allowed = _Buckets(rate, burst, max_sources)
        self._unlisted = _Buckets(rate, burst, max_sources)
        total = unlisted_total_rate if unlisted_total_rate is not None else rate * 10
        self._unlisted_total = _Buckets(total, total * 2, 1)
        self._allowed_cache: OrderedDict[str, bool] = OrderedDict()

    def is_allowed(self, host: str) -> bool:
        """True if `host` is inside an allow-listed network."""
        cached = self._allowed_cache.get(host)
        if cached is not None:
            return cached
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            result = False
        else:
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
                ip = ip.ipv4_mapped
            result = any(ip in net for net in self.networks)
        if len(self._allowed_cache) >= 4096:
            self._allowed_cache.popitem(last=False)
        self._allowed_cache[host] = result
        return result

    def admit(self, host: str, now: float) -> bool:
        """Spend one token of `host`'s budget; False means drop the packet unanswered."""
        if self.is_allowed(host):
            return self._allowed.take(host, now)
        return self._unlisted.take(host, now) and self._unlisted_total.take("*", now)

    @property
    def tracked_sources(self) -> int:
        return len(self._allowed) + len(self._unlisted)


def is_scanner(user_agent: str | None) -> bool:
    """True for the User-Agent of a known SIP scanner."""
    if not user_agent:
        return False
    low = user_agent.lower()
    return any(s in low for s in SCANNER_AGENTS)

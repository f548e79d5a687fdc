"""`PortPool`: the even RTP ports of `--rtp-ports LO-HI`, with RTCP on port+1 (RFC 3550 §11).

Sans-I/O bookkeeping only; binding is the adapter's job (`RtpEndpoint.open`). Acquire and
release are O(1). Released ports go to the back of the queue, so a port is reused as late as
possible and stray packets of an ended call rarely reach the next one. Releasing a port that is
not in use is a no-op, counted in `double_releases` so tests can assert it never happens.
"""

from __future__ import annotations

from collections import deque

from gateway.errors import PortsExhausted

__all__ = ["PortPool"]


class PortPool:
    """Even RTP ports in [lo, hi] whose RTCP port (port+1) is also <= hi."""

    def __init__(self, lo: int, hi: int) -> None:
        if not 1 <= lo <= hi <= 65535:
            raise ValueError(f"bad RTP port range {lo}-{hi}")
        first = lo + (lo & 1)
        self.lo, self.hi = lo, hi
        self._free: deque[int] = deque(range(first, hi, 2))  # port+1 <= hi
        if not self._free:
            raise ValueError(f"RTP port range {lo}-{hi} holds no even/odd pair")
        self.size = len(self._free)
        self._in_use: set[int] = set()
        self.double_releases = 0
        self.exhausted = 0

    def acquire(self) -> int:
        """An even RTP port (RTCP is port+1). Raises PortsExhausted when none is free."""
        if not self._free:
            self.exhausted += 1
            raise PortsExhausted(f"all {self.size} RTP port pairs in {self.lo}-{self.hi} in use")
        port = self._free.popleft()
        self._in_use.add(port)
        return port

    def release(self, port: int) -> None:
        """Return a port. Safe to call twice (the second call only counts)."""
        if port in self._in_use:
            self._in_use.remove(port)
            self._free.append(port)
        else:
            self.double_releases += 1

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    @property
    def available(self) -> int:
        return len(self._free)

    def __contains__(self, port: object) -> bool:
        return port in self._in_use

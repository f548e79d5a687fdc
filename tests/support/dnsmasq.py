"""dnsmasq (Debian package dnsmasq-base) as a test peer: an authoritative DNS server on a
loopback port for the `test.` domain, serving the A, SRV and NAPTR records a test gives it.

    with Dnsmasq(tmp_path, srv=[("_sip._udp.trunk.test", "a.trunk.test", 5070, 10, 50)],
                 hosts=[("a.trunk.test", "127.0.0.1")]) as dns:
        dns.server  # "127.0.0.1:PORT", for sip_dns_servers

It runs in the foreground, stopped by its PID; nothing is read from or sent beyond loopback
(`--no-resolv --no-hosts`, `--local=/test/`: names under test. that it does not know get
NXDOMAIN rather than being forwarded)."""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import dns.message
import dns.query
import dns.rcode

from tests.support.binaries import require_binary
from tests.support.harness import ChildProcess, HarnessError, free_udp_port, start_process

#: (owner, target, port, priority, weight)
SrvRecord = tuple[str, str, int, int, int]
#: (owner, order, preference, flags, service, regexp, replacement)
NaptrRecord = tuple[str, int, int, str, str, str, str]


class Dnsmasq:
    def __init__(
        self,
        workdir: Path,
        *,
        hosts: Sequence[tuple[str, str]] = (),
        srv: Sequence[SrvRecord] = (),
        naptr: Sequence[NaptrRecord] = (),
        ttl: int = 60,
    ) -> None:
        self.binary = require_binary("dnsmasq", "dnsmasq-base")
        self.workdir = workdir
        self.port = free_udp_port()
        self.argv = [
            self.binary,
            "--no-daemon",
            "--conf-file=/dev/null",
            f"--port={self.port}",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--user=root",
            "--local=/test/",
            f"--local-ttl={ttl}",
            f"--auth-ttl={ttl}",
            "--log-queries",
            "--log-facility=-",
        ]
        for name, address in hosts:
            self.argv.append(f"--host-record={name},{address}")
        for owner, target, port, priority, weight in srv:
            self.argv.append(f"--srv-host={owner},{target},{port},{priority},{weight}")
        for owner, order, pref, flags, service, regexp, replacement in naptr:
            self.argv.append(
                f"--naptr-record={owner},{order},{pref},{flags},{service},{regexp},{replacement}"
            )
        self.proc: ChildProcess | None = None

    @property
    def server(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Dnsmasq:
        self.proc = start_process("dnsmasq", self.argv, self.workdir / f"dnsmasq_{self.port}.log")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not self.proc.alive():
                raise HarnessError(f"dnsmasq exited:\n{self.proc.tail()}")
            try:
                query = dns.message.make_query("probe.test.", "A")
                reply = dns.query.udp(query, "127.0.0.1", port=self.port, timeout=0.5)
            except (OSError, dns.exception.Timeout):
                time.sleep(0.05)
                continue
            if reply.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                return self
        raise HarnessError(f"dnsmasq not answering on {self.server}:\n{self.proc.tail()}")

    def queries(self) -> list[str]:
        """The queries it logged, as 'TYPE name' (what the gateway asked)."""
        assert self.proc is not None
        out = []
        for line in self.proc.tail(200_000).splitlines():
            if "query[" in line:
                kind = line.split("query[", 1)[1].split("]", 1)[0]
                name = line.split("] ", 1)[1].split(" from ", 1)[0]
                out.append(f"{kind} {name}")
        return out

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def __enter__(self) -> Dnsmasq:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def dead_udp_tcp_port() -> int:
    """A port nobody listens on (bound, read back, released): a dead SRV target."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])

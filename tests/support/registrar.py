"""Kamailio (Debian package kamailio) as the registrar and proxy of a PBX, for the outbound
registration tests: tests/peers/kamailio/registrar.cfg on a free loopback port, digest with one
fixed password, its location table read with `kamcmd ul.dump` through a ctl socket."""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from tests.support.binaries import require_binary
from tests.support.harness import ChildProcess, HarnessError, free_udp_tcp_port, start_process
from tests.support.sip_messages import sip_exchange, sip_request, status_code

REGISTRAR_CFG = Path(__file__).resolve().parents[1] / "peers" / "kamailio" / "registrar.cfg"


class KamailioRegistrar:
    """One Kamailio registrar on 127.0.0.1:<free port>, started and stopped by PID."""

    def __init__(self, workdir: Path, password: str, *, max_expires: int = 3600) -> None:
        self.binary = require_binary("kamailio", "kamailio")
        self.kamcmd = require_binary("kamcmd", "kamailio")
        self.workdir = Path(workdir)
        self.password = password
        self.max_expires = max_expires
        self.ctl = self.workdir / "kamailio.ctl"
        self.log_path = self.workdir / "kamailio.log"
        self.port = 0
        self.proc: ChildProcess | None = None

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def start(self, timeout: float = 15.0) -> KamailioRegistrar:
        """Start Kamailio and wait until it answers OPTIONS (404 or any final response)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "run").mkdir(exist_ok=True)
        self.port = free_udp_tcp_port()
        argv = [
            self.binary,
            "-DD",
            "-E",
            "-f",
            str(REGISTRAR_CFG),
            "-A",
            f"SIP_LISTEN=udp:127.0.0.1:{self.port}",
            "-A",
            f'PASSWORD="{self.password}"',
            "-A",
            f"MAX_EXPIRES={self.max_expires}",
            "-A",
            f'CTL_SOCKET="unix:{self.ctl}"',
            "-Y",
            str(self.workdir / "run"),
            "-m",
            "32",
            "-M",
            "4",
        ]
        proc = self.proc = start_process("kamailio", argv, self.log_path)
        deadline = time.monotonic() + timeout
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            local = sock.getsockname()
            while time.monotonic() < deadline:
                if not proc.alive():
                    self.stop()
                    raise HarnessError(f"kamailio exited with {proc.returncode}:\n{proc.tail()}")
                probe = sip_request("OPTIONS", f"sip:nobody@127.0.0.1:{self.port}", local)
                with contextlib.suppress(HarnessError, OSError, ValueError):
                    if status_code(sip_exchange(sock, probe, self.address, timeout=0.3)) >= 200:
                        return self
        self.stop()
        raise HarnessError(f"kamailio not answering in {timeout}s:\n{proc.tail()}")

    def contacts(self, user: str) -> list[str]:
        """The Contact URIs registered under `user` now (`kamcmd ul.dump`)."""
        out = subprocess.run(
            [self.kamcmd, "-s", f"unix:{self.ctl}", "ul.dump"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        contacts: list[str] = []
        # ul.dump lists each AoR, then its bindings' `Address: sip:...`
        for block in re.split(r"(?m)^\s*AoR:\s*", out)[1:]:
            aor = block.split()[0]
            if aor.split("@")[0] == user:
                contacts += re.findall(r"(?m)^\s*Address:\s*(\S+)", block)
        return contacts

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(timeout=10.0)
            self.proc = None

    def __enter__(self) -> KamailioRegistrar:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

"""sipp (Debian package sip-tester) as a test peer: `Sipp` runs one by PID with its own ports
and trace files, `SippResult` is how it ended, `TracedMessage` one message of its trace.
Scenario files live in tests/peers/sipp/."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.binaries import require_binary
from tests.support.harness import free_udp_port, free_udp_tcp_port

SCENARIOS = Path(__file__).resolve().parents[1] / "peers" / "sipp"


@dataclass
class SippResult:
    returncode: int
    stdout: str
    stderr: str
    errors: str
    stats: dict[str, str] = field(default_factory=dict)

    @property
    def successful_calls(self) -> int:
        return int(self.stats.get("SuccessfulCall(C)", "0") or 0)

    @property
    def failed_calls(self) -> int:
        return int(self.stats.get("FailedCall(C)", "0") or 0)

    def explain(self) -> str:
        return (
            f"sipp exit {self.returncode}; stats={self.stats}\n--- errors:\n{self.errors[-3000:]}"
            f"\n--- stderr:\n{self.stderr[-2000:]}"
        )


class Sipp:
    """One sipp process, started by PID with its own control/media ports and trace files.

    `Sipp(tmp_path, "127.0.0.1:5060", scenario="cancel.xml", extra=["-m", "1"]).start()`, then
    `wait()` / `await wait_async()`; `kill()` in cleanup. `scenario` is a file under
    tests/peers/sipp/, a path, or a built-in name given as `builtin="uac"`.
    """

    def __init__(
        self,
        workdir: Path,
        target: str,
        *,
        scenario: str | Path | None = None,
        builtin: str | None = None,
        extra: list[str] | None = None,
        local_ip: str = "127.0.0.1",
        transport: str = "u1",
        timeout: float = 30.0,
    ) -> None:
        self.binary = require_binary("sipp", "sip-tester")
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.timeout = timeout
        self.local_port = free_udp_tcp_port(local_ip)
        name = builtin or Path(str(scenario)).stem
        self.prefix = workdir / f"sipp_{name}_{self.local_port}"
        args = [self.binary, target]
        if builtin:
            args += ["-sn", builtin]
        elif scenario is not None:
            path = Path(scenario)
            if not path.is_absolute() and not path.exists():
                path = SCENARIOS / path
            args += ["-sf", str(path)]
        args += [
            "-i",
            local_ip,
            "-p",
            str(self.local_port),
            "-t",
            transport,
            "-cp",
            str(free_udp_port(local_ip)),
            "-mp",
            str(free_udp_port(local_ip)),
            "-timeout",
            f"{int(timeout)}s",
            "-timeout_error",
            "-nostdin",
            "-trace_err",
            "-error_file",
            f"{self.prefix}_errors.log",
            "-trace_stat",
            "-stf",
            f"{self.prefix}_stat.csv",
            "-trace_msg",
            "-message_file",
            f"{self.prefix}_messages.log",
            *(extra or []),
        ]
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Sipp:
        self.proc = subprocess.Popen(
            self.args,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=open(f"{self.prefix}_stdout.log", "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def wait(self, timeout: float | None = None) -> SippResult:
        assert self.proc is not None
        try:
            self.proc.wait(timeout or self.timeout + 10)
        except subprocess.TimeoutExpired:
            self.kill()
        return self._result()

    async def wait_async(self, timeout: float | None = None) -> SippResult:
        """Wait without blocking the event loop (the server under test runs on it)."""
        assert self.proc is not None
        try:
            await asyncio.to_thread(self.proc.wait, timeout or self.timeout + 10)
        except subprocess.TimeoutExpired:
            self.kill()
        return self._result()

    def kill(self) -> None:
        """Stop this sipp by its PID (SIGTERM, then SIGKILL). Safe to call twice."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(3)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            with_kill = self.proc.poll() is None
            if with_kill:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(3)

    def _result(self) -> SippResult:
        assert self.proc is not None
        rc = self.proc.returncode if self.proc.returncode is not None else -9
        return SippResult(
            rc,
            _read(Path(f"{self.prefix}_stdout.log")),
            "",
            _read(Path(f"{self.prefix}_errors.log")),
            _last_stats(Path(f"{self.prefix}_stat.csv")),
        )

    @property
    def messages(self) -> str:
        """sipp's -trace_msg log: every message it sent and received."""
        return _read(Path(f"{self.prefix}_messages.log"))

    def traced(self) -> list[TracedMessage]:
        """The -trace_msg log as messages, in order."""
        out = []
        for block in re.split(r"(?m)^-{20,} .*$", self.messages):
            head, _, text = block.strip("\n").partition("\n")
            if "message sent" not in head and "message received" not in head:
                continue
            text = text.lstrip("\n")
            call_id = re.search(r"(?im)^(?:Call-ID|i)\s*:\s*(\S+)", text)
            cseq = re.search(r"(?im)^CSeq\s*:\s*\d+\s+(\w+)", text)
            out.append(
                TracedMessage(
                    "sent" if "message sent" in head else "received",
                    text.split("\n", 1)[0].strip(),
                    call_id.group(1) if call_id else "",
                    cseq.group(1) if cseq else "",
                    text,
                )
            )
        return out


@dataclass(frozen=True)
class TracedMessage:
    """One message of sipp's trace: `direction` sent/received, its first line, Call-ID and
    CSeq method, and the whole text."""

    direction: str
    first_line: str
    call_id: str
    cseq_method: str
    text: str

    @property
    def status(self) -> int | None:
        """The status code of a response, None for a request."""
        if self.first_line.startswith("SIP/2.0 "):
            return int(self.first_line.split(" ", 2)[1])
        return None

    @property
    def method(self) -> str | None:
        """The method of a request, None for a response."""
        return None if self.status is not None else self.first_line.split(" ", 1)[0]


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _last_stats(path: Path) -> dict[str, str]:
    text = _read(path).strip().splitlines()
    if len(text) < 2:
        return {}
    head = text[0].rstrip(";").split(";")
    last = text[-1].rstrip(";").split(";")
    return dict(zip(head, last, strict=False))

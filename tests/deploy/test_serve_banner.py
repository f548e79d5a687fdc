"""`gateway serve` for a person (issue 19), as a real process in a pseudo-terminal and as a pipe.

- On a terminal: a block says what to dial, what to open (the `#token=` link: the one place
  the token is printed), the provider and model, and the first-run warnings.
- With a live sipp call, the first Ctrl-C (SIGINT) says how many calls are draining and that a
  second ends them now; the second ends the call at once (the caller gets its BYE), exit 0.
- As a pipe, or with `--log-format json`, nothing but JSON log lines: `gateway_started` carries
  the same facts, and the token appears nowhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.support.gateway import interrupt_twice, rtp_range
from tests.support.harness import free_port, free_udp_tcp_port
from tests.support.sipp import Sipp

ROOT = Path(__file__).resolve().parents[2]
WAIT_BYE = Path(__file__).parent / "sipp" / "uac_wait_bye.xml"
TOKEN = "banner-token-7f3a9c"


def _env() -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OPENAI_", "YANDEX_"))
    }
    return {**env, "GATEWAY_API_TOKEN": TOKEN, "TERM": "dumb"}


class Served:
    """`gateway serve` on free loopback ports, its output (terminal or pipe) collected."""

    def __init__(self, *args: str, tty: bool) -> None:
        self.http_port = free_port()
        self.sip_port = free_udp_tcp_port()
        argv = [
            sys.executable, "-m", "gateway", "serve",
            "--http-listen", f"127.0.0.1:{self.http_port}",
            "--sip-listen", f"127.0.0.1:{self.sip_port}",
            "--rtp-ports", rtp_range(), *args,
        ]  # fmt: skip
        self._chunks: list[bytes] = []
        if tty:
            master, slave = pty.openpty()
            self.proc = subprocess.Popen(
                argv, cwd=ROOT, env=_env(), stdin=slave, stdout=slave, stderr=slave,
                start_new_session=True,
            )  # fmt: skip
            os.close(slave)
            self._fd = master
        else:
            self.proc = subprocess.Popen(
                argv, cwd=ROOT, env=_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            assert self.proc.stdout is not None
            self._fd = self.proc.stdout.fileno()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self._fd, 65536)
            except OSError:  # the pty's other end closed (EIO)
                return
            if not data:
                return
            self._chunks.append(data)

    @property
    def output(self) -> str:
        return b"".join(self._chunks).decode(errors="replace").replace("\r\n", "\n")

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            assert self.proc.poll() is None or text in self.output, self.output[-3000:]
            assert time.monotonic() < deadline, f"no {text!r} in:\n{self.output[-3000:]}"
            time.sleep(0.05)

    def stop(self) -> int:
        interrupt_twice(self.proc, between=0.5)
        self._reader.join(5)
        if self.proc.stdout is None:  # the pty's master end is ours to close
            with contextlib.suppress(OSError):
                os.close(self._fd)
        return self.proc.returncode


def test_terminal_banner_and_ctrl_c_with_a_live_call(tmp_path: Path) -> None:
    gw = Served(tty=True)
    caller: Sipp | None = None
    try:
        gw.wait_for("  stop      Ctrl-C")
        banner = gw.output[gw.output.index("gateway is ready") :].splitlines()
        assert f"  dial      sip:agent@127.0.0.1:{gw.sip_port}" in banner
        assert f"  dial      sip:agent@127.0.0.1:{gw.sip_port};transport=tcp" in banner
        assert f"  open      http://127.0.0.1:{gw.http_port}/#token={TOKEN}" in banner
        provider = next(line for line in banner if line.startswith("  provider  "))
        assert "local, model gpt-realtime" in provider and "no OPENAI_API_KEY" in provider
        warnings = [line for line in banner if line.startswith("  warning   ")]
        assert any("local echo provider" in w for w in warnings), warnings
        assert any("sip_allow is loopback only" in w for w in warnings), warnings
        # a live call, then Ctrl-C twice
        caller = Sipp(
            tmp_path,
            f"127.0.0.1:{gw.sip_port}",
            scenario=WAIT_BYE,
            extra=["-m", "1", "-key", "rtp_sink", str(free_port())],
        ).start()
        gw.wait_for("sip_answered")  # the call's log line, on the terminal
        gw.proc.send_signal(signal.SIGINT)
        gw.wait_for("Stopping: 1 call is draining (up to 300 s). Press Ctrl-C again to end")
        time.sleep(0.5)
        assert gw.proc.poll() is None  # still draining: the call goes on
        started = time.monotonic()
        gw.proc.send_signal(signal.SIGINT)
        gw.wait_for("Ending 1 call now.")
        assert gw.proc.wait(timeout=10) == 0
        assert time.monotonic() - started < 5
        result = caller.wait(10)
        assert result.successful_calls == 1, result.explain()  # the caller got its BYE
    finally:
        if caller is not None:
            caller.kill()
        gw.stop()
    # the token link is printed once, in the banner, and in no log line
    assert gw.output.count(TOKEN) == 1, gw.output


def test_terminal_with_json_logs_gets_no_banner() -> None:
    gw = Served("--log-format", "json", tty=True)
    try:
        gw.wait_for('"gateway_started"')
    finally:
        assert gw.stop() == 0
    _assert_json_only(gw.output)


def test_a_pipe_gets_one_json_line_without_the_token() -> None:
    gw = Served(tty=False)  # log format auto, not a terminal: JSON
    try:
        gw.wait_for('"gateway_started"')
    finally:
        assert gw.stop() == 0
    started = _assert_json_only(gw.output)
    assert started["dial"] == [
        f"sip:agent@127.0.0.1:{gw.sip_port}",
        f"sip:agent@127.0.0.1:{gw.sip_port};transport=tcp",
    ]
    assert started["open"] == f"http://127.0.0.1:{gw.http_port}/"
    assert started["token_required"] is True
    assert started["provider"] == "local" and started["model"] == "gpt-realtime"
    assert any("local echo provider" in w for w in started["warnings"])
    # `auto` says which provider it picked and why
    events = [json.loads(line) for line in gw.output.splitlines() if line.strip()]
    (selected,) = [e for e in events if e.get("event") == "provider_selected"]
    assert selected["setting"] == "auto" and selected["provider"] == "local"
    assert "no OPENAI_API_KEY or YANDEX key set" in selected["reason"]


def _assert_json_only(output: str) -> dict[str, object]:
    assert "gateway is ready" not in output and "Ctrl-C" not in output
    assert TOKEN not in output
    events = [json.loads(line) for line in output.splitlines() if line.strip()]
    (started,) = [e for e in events if e.get("event") == "gateway_started"]
    return started

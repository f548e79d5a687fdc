"""`gateway serve` as a real process: /healthz, /metrics, and one-line start-up errors."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.support.harness import free_port

ROOT = Path(__file__).resolve().parents[2]


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "exited"
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                return bytes(resp.read())
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer")


def test_serve_answers_healthz_and_metrics(tmp_path: Path) -> None:
    http, sip = free_port(), free_port()
    env = {**os.environ, "GATEWAY_LOG_FORMAT": "json"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--http-listen",
            f"127.0.0.1:{http}",
            "--sip-listen",
            f"127.0.0.1:{sip}",
            "--rtp-ports",
            "31000-31100",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        body = _wait_http(f"http://127.0.0.1:{http}/healthz", proc)
        assert json.loads(body) == {"status": "ok"}
        text = _wait_http(f"http://127.0.0.1:{http}/metrics", proc).decode()
        assert "gateway_build_info" in text
        assert "process_cpu_seconds_total" in text
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0


def test_port_in_use_is_one_clear_line_and_nonzero_exit(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "gateway",
                "--http-listen",
                f"127.0.0.1:{port}",
                "--sip-listen",
                f"127.0.0.1:{free_port()}",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("gateway: error:")]
    assert len(lines) == 1, proc.stderr
    assert "http_listen" in lines[0]


def test_bad_flag_value_exits_nonzero_naming_the_setting(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--sip-allow", "300.1.2.3/8"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "sip_allow" in proc.stderr


def test_sip_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "gateway",
                "serve",
                "--http-listen",
                f"127.0.0.1:{free_port()}",
                "--sip-listen",
                f"127.0.0.1:{port}",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("gateway: error:")]
    assert len(lines) == 1, proc.stderr
    assert f"sip_listen 127.0.0.1:{port}" in lines[0] and "in use" in lines[0]


def test_missing_tls_certificate_is_named(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--sip-tls-listen",
            "127.0.0.1:5061",
            "--sip-tls-cert",
            str(tmp_path / "nope.pem"),
            "--sip-tls-key",
            str(tmp_path / "k.pem"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "sip_tls_cert: no such file" in proc.stderr

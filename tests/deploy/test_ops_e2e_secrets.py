"""Secrets kept off the command line of a real `gateway serve` process.

The API token comes from `--api-token-file`, the SIP digest password from
`GATEWAY_SIP_AUTH_PASSWORD_FILE`. Neither value is in the process's `/proc/PID/cmdline` (which
every local user can read) nor in its environment; both work: the call API answers 200 only
with the token, and sipp's call with the password gets through while a wrong one is refused.
No `secret_on_command_line` warning is logged, and neither value is in the log. (The warning
for secrets given as flags is checked in `test_ops_e2e_logs.py`.)
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path

from tests.support.gateway import GatewayProcess
from tests.support.sipp import Sipp


def _secret_file(path: Path, value: str) -> Path:
    path.write_text(value + "\n")  # as `echo value > file`, or a Kubernetes secret volume
    path.chmod(0o600)
    return path


def test_secrets_from_files_stay_off_the_command_line_and_work(tmp_path: Path) -> None:
    token = "tok-" + secrets.token_hex(16)
    password = "pw-" + secrets.token_hex(8)
    token_file = _secret_file(tmp_path / "api_token", token)
    password_file = _secret_file(tmp_path / "sip_password", password)
    gw = GatewayProcess(
        tmp_path,
        "--api-token-file", str(token_file),
        "--sip-auth-user", "alice",
        # sipp answers only MD5 challenges
        "--sip-digest-algorithms", "MD5,SHA-256",
        env={"GATEWAY_SIP_AUTH_PASSWORD_FILE": str(password_file)},
    )  # fmt: skip
    try:
        gw.start()
        cmdline = Path(f"/proc/{gw.pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{gw.pid}/environ").read_bytes()
        assert str(token_file).encode() in cmdline  # the right process
        for value in (token, password):
            assert value.encode() not in cmdline
            assert value.encode() not in environ
        # the token from the file guards the call API
        assert gw.http("GET", "/calls")[0] == 401
        assert gw.http("GET", "/calls", token="x" + token)[0] == 401
        assert gw.http("GET", "/calls", token=token) == (200, {"calls": []})
        # the password from the file answers the digest challenge; a wrong one is refused
        right = Sipp(
            tmp_path,
            f"127.0.0.1:{gw.sip_port}",
            scenario="auth.xml",
            extra=["-m", "1", "-au", "alice", "-ap", password],
        ).start()
        result = right.wait(20)
        assert result.successful_calls == 1, result.explain()
        wrong = Sipp(
            tmp_path / "wrong",
            f"127.0.0.1:{gw.sip_port}",
            scenario="e2e_auth_wrong.xml",
            extra=["-m", "1", "-au", "alice", "-ap", "x" + password],
        ).start()
        result = wrong.wait(20)
        assert result.successful_calls == 1, result.explain()
        assert re.search(r"SIP/2.0 (401|403)[^\n]*\n(?:[^\n]+\n)*?CSeq: 2 INVITE", wrong.messages)
    finally:
        assert gw.stop() == 0
    log = gw.log_path.read_text()
    assert "gateway_started" in log
    assert "secret_on_command_line" not in log
    assert token not in log and password not in log

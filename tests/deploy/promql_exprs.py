"""Every PromQL expression the deployment ships, and the metric names it may use.

Sources: the Grafana dashboard's panel targets, the Prometheus recording and alerting rules, and
the prometheus-adapter rules behind the HPA. ``all_exprs()`` returns them as ``(source, expr)``
pairs with template variables substituted, ready to send to a Prometheus:

- Grafana's ``$__rate_interval`` / ``$__interval`` become ``1m``, ``$__range`` ``5m``; the
  dashboard's own variables (``$model``, ``$instance``) become their "All" value (their
  ``allValue``: ``.*`` for model, ``.+`` for instance) unless ``values`` names a concrete one
  (``all_exprs({"model": "mobilenet_v2"})``).
- The adapter's Go templates become a per-pod query: ``<<.Series>>`` the series name,
  ``<<.LabelMatchers>>`` nothing, ``<<.GroupBy>>`` ``pod``.

The offline tests (tests/deploy/test_deploy_promql.py) check that each expression parses
(promtool) and names only metrics convserve exports; a live test can run the same list against a
Prometheus that scrapes a real server. Standard library + PyYAML; no pytest.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "convserve.json"
RULES_DIR = REPO / "deploy" / "prometheus" / "rules"
ADAPTER_CONFIGMAP = REPO / "deploy" / "k8s" / "prometheus-adapter" / "configmap.yaml"

# The metric contract (DESIGN.md, "Metrics"): names as convserve's /metrics exposes them.
COUNTERS = frozenset({"convserve_requests_total"})
HISTOGRAMS = frozenset(
    {
        "convserve_request_duration_seconds",
        "convserve_queue_wait_seconds",
        "convserve_preprocess_duration_seconds",
        "convserve_compute_duration_seconds",
        "convserve_batch_size",
    }
)
GAUGES = frozenset(
    {
        "convserve_queue_depth",
        "convserve_inflight_requests",
        "convserve_model_ready",
        "convserve_execution_provider",
        "convserve_requested_device_info",
        "convserve_gpu_memory_used_bytes",
        "convserve_gpu_memory_total_bytes",
        "convserve_gpu_utilization_ratio",
        "convserve_build_info",
    }
)
METRIC_NAMES = COUNTERS | HISTOGRAMS | GAUGES
# Series a scrape of convserve yields (a histogram is three series families).
SERIES_NAMES = (
    COUNTERS | GAUGES | {h + suffix for h in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}
)
# prometheus_client's default collectors.
CLIENT_PREFIXES = ("process_", "python_")
# Series Prometheus itself adds to every target.
PROMETHEUS_SERIES = frozenset({"up"})

GRAFANA_BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__range": "5m",
}

_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w.:])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"bool", "offset", "atan2", "inf", "nan"}
)


def metric_names_in(expr: str) -> set[str]:
    """Series names an expression selects (functions, keywords, labels and literals excluded)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _GROUPING.sub("", text)
    names = set()
    for m in _IDENT.finditer(text):
        name, call = m.group(1), m.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def recording_rule_names() -> set[str]:
    return {
        rule["record"]
        for path in sorted(RULES_DIR.glob("*.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    }


def is_known_series(name: str, recorded: set[str] | None = None) -> bool:
    """True for a series convserve, prometheus_client, Prometheus or our rules produce."""
    recorded = recording_rule_names() if recorded is None else recorded
    return (
        name in SERIES_NAMES
        or name in recorded
        or name in PROMETHEUS_SERIES
        or name.startswith(CLIENT_PREFIXES)
    )


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_variable_defaults() -> dict[str, str]:
    """Each dashboard variable's value for the "All" selection (its allValue)."""
    out = {}
    for var in _dashboard().get("templating", {}).get("list", []):
        if var.get("type") == "datasource":
            continue
        out[var["name"]] = var.get("allValue") or ".*"
    return out


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """Replace Grafana variables ($x, ${x}, ${x:fmt}, [[x]]); an unknown variable is an error."""

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in values:
            raise KeyError(f"unknown template variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(repl, expr)


def _walk_panels(panels: list[dict]) -> list[dict]:
    out = []
    for panel in panels:
        out.append(panel)
        out.extend(_walk_panels(panel.get("panels", [])))
    return out


def dashboard_panels() -> list[dict]:
    """Every panel of the dashboard, panels inside collapsed rows included."""
    return _walk_panels(_dashboard()["panels"])


def dashboard_exprs(values: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    env = {**GRAFANA_BUILTINS, **dashboard_variable_defaults(), **(values or {})}
    out = []
    for panel in dashboard_panels():
        for target in panel.get("targets", []):
            expr = target.get("expr", "")
            source = f"dashboard:{panel['title']}#{target.get('refId', '?')}"
            out.append((source, substitute(expr, env)))
    return out


def rule_exprs() -> list[tuple[str, str]]:
    out = []
    for path in sorted(RULES_DIR.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                name = rule.get("record") or rule.get("alert")
                out.append((f"rules:{path.name}:{name}", rule["expr"].strip()))
    return out


def adapter_rules() -> list[dict]:
    configmap = yaml.safe_load(ADAPTER_CONFIGMAP.read_text())
    return yaml.safe_load(configmap["data"]["config.yaml"])["rules"]


def adapter_exprs() -> list[tuple[str, str]]:
    out = []
    for rule in adapter_rules():
        series = metric_names_in(rule["seriesQuery"])
        if len(series) != 1:
            raise ValueError(f"seriesQuery must select one series name: {rule['seriesQuery']!r}")
        expr = (
            rule["metricsQuery"]
            .replace("<<.Series>>", series.pop())
            .replace("<<.LabelMatchers>>", "")
            .replace("<<.GroupBy>>", "pod")
        )
        out.append((f"prometheus-adapter:{rule['name']['as']}", expr))
    return out


def all_exprs(values: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """(source, expr) for every PromQL expression shipped in deploy/, variables substituted."""
    return [*dashboard_exprs(values), *rule_exprs(), *adapter_exprs()]

"""deploy/grafana: the dashboard JSON and its provisioning, checked offline.

Valid JSON; every panel queries something; every datasource reference resolves to the provisioned
datasource (directly or through the $datasource variable); every metric an expression names is
one convserve exports (or a recording rule, a prometheus_client default, or `up`); unique panel
ids, complete non-overlapping gridPos; and the provisioning files agree with docker-compose.yml.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from itertools import combinations
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML not installed (scripts/install_deploy_tools.sh)")

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "convserve.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "convserve.yml"


def _load_helper():
    name = "convserve_deploy_promql_exprs"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).with_name("promql_exprs.py")
        )
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


promql = _load_helper()


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


@pytest.fixture(scope="module")
def panels() -> list[dict]:
    return promql.dashboard_panels()


def _datasource_uid() -> str:
    (ds,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert ds["type"] == "prometheus"
    return ds["uid"]


def test_dashboard_identity(dashboard: dict) -> None:
    assert dashboard["uid"] == "convserve"
    assert dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    assert dashboard["refresh"], "a wall dashboard refreshes itself"


def test_panel_ids_unique_and_grid_complete(panels: list[dict]) -> None:
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    boxes = []
    for p in panels:
        grid = p["gridPos"]
        assert all(isinstance(grid[k], int) for k in ("x", "y", "w", "h")), p["title"]
        assert grid["w"] > 0 and grid["h"] > 0, p["title"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, p["title"]
        boxes.append((p["title"], grid))
    for (a, ga), (b, gb) in combinations(boxes, 2):
        overlap_x = ga["x"] < gb["x"] + gb["w"] and gb["x"] < ga["x"] + ga["w"]
        overlap_y = ga["y"] < gb["y"] + gb["h"] and gb["y"] < ga["y"] + ga["h"]
        assert not (overlap_x and overlap_y), f"{a!r} overlaps {b!r}"


def test_every_panel_has_a_query(panels: list[dict]) -> None:
    for p in panels:
        if p["type"] == "row":
            continue
        targets = p.get("targets", [])
        assert targets, p["title"]
        for t in targets:
            assert t.get("expr", "").strip(), f"{p['title']} {t.get('refId')}"
        refs = [t["refId"] for t in targets]
        assert len(refs) == len(set(refs)), p["title"]


def _datasource_refs(node: object, path: str = "") -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                out.append((f"{path}.{key}", value))
            out.extend(_datasource_refs(value, f"{path}.{key}"))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out.extend(_datasource_refs(value, f"{path}[{i}]"))
    return out


def test_every_datasource_reference_resolves(dashboard: dict) -> None:
    uid = _datasource_uid()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    ds_var = variables["datasource"]
    assert ds_var["type"] == "datasource"
    assert ds_var["query"] == "prometheus"
    assert ds_var["current"]["value"] == uid, "the variable's default must be the provisioned uid"
    allowed = {uid, "${datasource}", "$datasource"}
    refs = _datasource_refs(dashboard["panels"]) + _datasource_refs(dashboard["templating"])
    assert refs
    for where, ref in refs:
        assert isinstance(ref, dict), f"{where}: use {{type, uid}}, not a name"
        assert ref.get("type") == "prometheus", where
        assert ref.get("uid") in allowed, f"{where}: {ref}"


def test_every_metric_is_one_convserve_exports(panels: list[dict]) -> None:
    recorded = promql.recording_rule_names()
    for source, expr in promql.dashboard_exprs():
        names = promql.metric_names_in(expr)
        assert names, f"{source}: no metric in {expr!r}"
        unknown = sorted(n for n in names if not promql.is_known_series(n, recorded))
        assert unknown == [], f"{source}: {unknown}"


def test_the_dashboard_shows_every_contract_metric() -> None:
    used = set()
    for _, expr in promql.dashboard_exprs():
        used |= promql.metric_names_in(expr)
    families = {n.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count") for n in used}
    assert sorted(promql.METRIC_NAMES - families) == []


def test_model_scoped_panels_honour_the_model_variable(dashboard: dict) -> None:
    unscoped = {"convserve_build_info", *(n for n in promql.GAUGES if "_gpu_" in n)}
    for panel in promql.dashboard_panels():
        for target in panel.get("targets", []):
            names = promql.metric_names_in(target["expr"])
            if {n for n in names if n.startswith("convserve_")} - unscoped:
                assert 'model=~"$model"' in target["expr"], panel["title"]
    model = {v["name"]: v for v in dashboard["templating"]["list"]}["model"]
    # ".*", not ".+": requests for an unknown model are counted with model="" (NOT_FOUND), and
    # "All" must show them.
    assert model["includeAll"] and model["multi"] and model["allValue"] == ".*"
    assert "label_values(convserve_" in model["definition"]


def test_quantiles_and_batch_histogram_are_there() -> None:
    exprs = [e for _, e in promql.dashboard_exprs()]
    for q in ("0.50", "0.95", "0.99"):
        assert any(
            f"histogram_quantile({q}" in e and "convserve_request_duration_seconds_bucket" in e
            for e in exprs
        ), q
    batch = [
        p
        for p in promql.dashboard_panels()
        if any("convserve_batch_size_bucket" in t["expr"] for t in p.get("targets", []))
    ]
    assert {p["type"] for p in batch} & {"heatmap", "bargauge"}
    assert all(t.get("format") == "heatmap" for p in batch for t in p["targets"])


def test_provisioning_matches_compose() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    grafana = compose["services"]["grafana"]
    mounts = {}
    for volume in grafana["volumes"]:
        source, target = volume.split(":")[:2]
        mounts[target] = (REPO / source).resolve()
    (provider,) = yaml.safe_load(PROVIDERS.read_text())["providers"]
    assert mounts[provider["options"]["path"]] == DASHBOARD.parent.resolve()
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"
    (ds,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert ds["url"] == "http://prometheus:9090"
    assert "prometheus" in compose["services"]
    assert "9090:9090" in compose["services"]["prometheus"]["ports"]

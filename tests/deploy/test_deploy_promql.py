"""Every PromQL expression in deploy/ (tests/deploy/promql_exprs.py: all_exprs()) parses and names
only known series.

Parsing: promtool has no bare "parse this expression" command, but `promtool check rules` parses
every rule's expr with Prometheus' own parser; each expression becomes a recording rule in a
generated file. A deliberately broken expression makes that check fail.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML not installed (scripts/install_deploy_tools.sh)")


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

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package prometheus)"
)


def check_as_rules(
    exprs: list[tuple[str, str]], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    rules = [
        {"record": f"deploy_check:expr_{i}:parsed", "expr": expr}
        for i, (_, expr) in enumerate(exprs)
    ]
    path = tmp_path / "exprs.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "deploy_check", "rules": rules}]}))
    return subprocess.run(
        [PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=120
    )


def test_all_exprs_covers_every_source() -> None:
    exprs = promql.all_exprs()
    sources = {s.split(":", 1)[0] for s, _ in exprs}
    assert sources == {"dashboard", "rules", "prometheus-adapter"}
    targets = sum(len(p.get("targets", [])) for p in promql.dashboard_panels())
    assert sum(s.startswith("dashboard:") for s, _ in exprs) == targets
    for source, expr in exprs:
        assert expr.strip(), source
        assert "$" not in expr, f"{source}: unsubstituted variable in {expr!r}"
        assert "<<" not in expr, f"{source}: unsubstituted template in {expr!r}"


def test_concrete_values_substitute() -> None:
    exprs = dict(promql.all_exprs({"model": "mobilenet_v2"}))
    (rate,) = [e for s, e in exprs.items() if s == "dashboard:Request rate by model and status#A"]
    assert 'model=~"mobilenet_v2"' in rate
    assert "[1m]" in rate
    with pytest.raises(KeyError):
        promql.substitute("rate(x{a=~'$nope'}[5m])", {"model": ".+"})


def test_every_expr_names_known_series_only() -> None:
    recorded = promql.recording_rule_names()
    for source, expr in promql.all_exprs():
        names = promql.metric_names_in(expr)
        assert names, f"{source}: selects nothing: {expr!r}"
        unknown = sorted(n for n in names if not promql.is_known_series(n, recorded))
        assert unknown == [], f"{source}: {unknown}"


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'sum by (le, model) (rate(convserve_batch_size_bucket{model=~".+"}[1m]))',
            {"convserve_batch_size_bucket"},
        ),
        (
            "a_total / on (job, instance) group_left (version) b_info offset 5m",
            {"a_total", "b_info"},
        ),
        ('count(x{status=~"INTERNAL|up"} == 0) or vector(0) * 1e-9', {"x"}),
        (
            "model:convserve_requests:rate1m > 0.2 and on (model) up",
            {"model:convserve_requests:rate1m", "up"},
        ),
        ("histogram_quantile(0.99, sum(rate(h_bucket[5m:30s])) by (le))", {"h_bucket"}),
        ("vector(1)", set()),
    ],
)
def test_metric_name_extraction(expr: str, names: set[str]) -> None:
    assert promql.metric_names_in(expr) == names


def test_unknown_series_are_reported() -> None:
    recorded = promql.recording_rule_names()
    assert not promql.is_known_series("convserve_request_latency_seconds_bucket", recorded)
    # A histogram has no bare series, only _bucket, _sum and _count.
    assert not promql.is_known_series("convserve_batch_size", recorded)
    assert promql.is_known_series("convserve_batch_size_bucket", recorded)
    assert promql.is_known_series("process_cpu_seconds_total", recorded)


@needs_promtool
def test_every_expr_parses(tmp_path: Path) -> None:
    exprs = promql.all_exprs()
    result = check_as_rules(exprs, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(exprs)} rules found" in result.stdout


@needs_promtool
@pytest.mark.parametrize(
    "broken",
    [
        "sum by (model (rate(convserve_requests_total[1m]))",
        "rate(convserve_requests_total[1x])",
        'convserve_requests_total{status=~"("}',
    ],
)
def test_a_broken_expr_fails_the_parse_check(tmp_path: Path, broken: str) -> None:
    result = check_as_rules([*promql.all_exprs()[:3], ("broken", broken)], tmp_path)
    assert result.returncode != 0

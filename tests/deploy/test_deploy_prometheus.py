"""deploy/prometheus: promtool checks the config and the rules, and runs the rules' unit tests
(deploy/prometheus/tests/alerts_test.yml) on synthetic series. Mutated copies of the rules must
make those unit tests fail, which shows they pin the expressions down.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML not installed (scripts/install_deploy_tools.sh)")

REPO = Path(__file__).resolve().parents[2]
PROM = REPO / "deploy" / "prometheus"
CONFIG = PROM / "prometheus.yml"
RULE_FILES = sorted((PROM / "rules").glob("*.yml"))
UNIT_TESTS = PROM / "tests" / "alerts_test.yml"

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package prometheus)"
)


def promtool(*args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120
    )


@needs_promtool
def test_config_is_valid_and_loads_both_rule_files() -> None:
    result = promtool("check", "config", CONFIG)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    for rule_file in RULE_FILES:
        assert rule_file.name in out, f"{rule_file.name} not loaded by rule_files"


@needs_promtool
@pytest.mark.parametrize("rule_file", RULE_FILES, ids=lambda p: p.name)
def test_rules_are_valid(rule_file: Path) -> None:
    result = promtool("check", "rules", rule_file)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_alert_unit_tests_pass() -> None:
    result = promtool("test", "rules", UNIT_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


MUTATIONS = {
    # Joining on (model, version) only pairs one replica's cuda request with another's CPU.
    "fallback join ignores instance": (
        "convserve-alerts.yml",
        "and on (job, instance, model, version)",
        "and on (model, version)",
    ),
    "model ready inverted": (
        "convserve-alerts.yml",
        "convserve_model_ready == 0",
        "convserve_model_ready == 1",
    ),
    "client errors counted": (
        "convserve-recording.yml",
        'status=~"INTERNAL|',
        'status=~"INVALID_ARGUMENT|INTERNAL|',
    ),
    "streams in latency": (
        "convserve-recording.yml",
        'rate(convserve_request_duration_seconds_bucket{method!~"Stream.*|ModelStreamInfer"}[1m])',
        "rate(convserve_request_duration_seconds_bucket[1m])",
    ),
}


@needs_promtool
@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_unit_tests_catch_a_broken_rule(tmp_path: Path, mutation: str) -> None:
    file_name, old, new = MUTATIONS[mutation]
    shutil.copytree(PROM / "rules", tmp_path / "rules")
    shutil.copytree(PROM / "tests", tmp_path / "tests")
    target = tmp_path / "rules" / file_name
    text = target.read_text()
    assert old in text, "mutation no longer applies: update MUTATIONS"
    target.write_text(text.replace(old, new))
    assert promtool("check", "rules", target).returncode == 0, "mutant must still be valid PromQL"
    result = promtool("test", "rules", tmp_path / "tests" / UNIT_TESTS.name)
    assert result.returncode != 0, f"alerts_test.yml does not notice: {mutation}"


# --------------------------------------------------------------------------- structure


def _rules() -> list[dict]:
    return [
        rule
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


def test_every_alert_has_for_severity_and_annotations() -> None:
    alerts = [r for r in _rules() if "alert" in r]
    assert len(alerts) >= 6
    for alert in alerts:
        name = alert["alert"]
        assert alert.get("for"), name
        assert alert["labels"]["severity"] in {"warning", "critical"}, name
        assert alert["annotations"]["summary"].strip(), name
        assert alert["annotations"]["description"].strip(), name
    names = {a["alert"] for a in alerts}
    for required in (
        "ConvserveHighErrorRatio",
        "ConvserveHighP99Latency",
        "ConvserveModelNotReady",
        "ConvserveCudaFallbackToCPU",
        "ConvserveGPUMemoryNearFull",
    ):
        assert required in names
    assert any(n.startswith("ConvserveQueue") for n in names)


def test_recording_rules_follow_the_naming_convention() -> None:
    records = [r["record"] for r in _rules() if "record" in r]
    assert len(records) == len(set(records))
    for record in records:
        level, metric, operation = record.split(":")
        assert level and metric.startswith("convserve_") and operation, record
    for quantile in ("p50", "p95", "p99"):
        assert f"model:convserve_request_duration_seconds:{quantile}_1m" in records


def test_unit_tests_make_the_key_alerts_fire() -> None:
    tests = yaml.safe_load(UNIT_TESTS.read_text())
    rule_files = {(UNIT_TESTS.parent / f).resolve() for f in tests["rule_files"]}
    assert rule_files == {p.resolve() for p in RULE_FILES}
    firing = {
        case["alertname"]
        for test in tests["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert {"ConvserveCudaFallbackToCPU", "ConvserveModelNotReady"} <= firing


def test_scrape_config_targets_convserve() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "convserve"]
    assert job["scrape_interval"] == "5s"
    assert job["static_configs"] == [{"targets": ["convserve:8002"]}]
    matched = {p for pattern in config["rule_files"] for p in CONFIG.parent.glob(pattern)}
    assert matched == set(RULE_FILES)

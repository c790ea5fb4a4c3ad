"""Session fixtures for the end-to-end tests: a model repository built by export/ and a real
`convserve serve` process on 127.0.0.1, driven by real clients (ours, tritonclient, grpcurl,
perf_analyzer, Prometheus).

The repository is built once with `convserve build-defaults --quick` (the shipped weights of
weights/ exported, the real pretrained MobileNetV2, real training on small subsets for a default
that ships no weights) and cached under .cache/, keyed by a hash of export/'s sources and the
shipped cards, so a second test run reuses it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.serverproc import ROOT, ServerProcess, start_server, stop_server

DEFAULT_MODELS = ("lenet5_fashion", "mobilenet_v2", "resnet_fashion", "speech_cnn")


def _export_hash() -> str:
    h = hashlib.sha256()
    # The shipped weights are an input too: a re-shipped model changes its card's sha256.
    for p in sorted([*(ROOT / "export").rglob("*.py"), *(ROOT / "weights").rglob("card.json")]):
        h.update(p.relative_to(ROOT).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


@pytest.fixture(scope="session")
def model_repository() -> Path:
    """The four default models, built quickly by export/ (or CONVSERVE_TEST_REPOSITORY)."""
    given = os.environ.get("CONVSERVE_TEST_REPOSITORY")
    if given:
        return Path(given)
    repo = ROOT / ".cache" / f"test-repository-{_export_hash()}"
    cmd = [sys.executable, "-m", "convserve", "build-defaults", "--quick"]
    cmd += ["--repository", str(repo)]
    subprocess.run(cmd, check=True, cwd=ROOT, timeout=1200)
    for name in DEFAULT_MODELS:
        assert (repo / name / "config.pbtxt").is_file(), f"build-defaults did not write {name}"
    return repo


@pytest.fixture(scope="session")
def server(model_repository: Path) -> Iterator[ServerProcess]:
    srv = start_server(model_repository)
    yield srv
    code = stop_server(srv)
    assert code == 0, f"server exit code {code} after SIGTERM:\n{srv.log()}"

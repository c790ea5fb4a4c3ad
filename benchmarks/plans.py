"""What `benchmarks/run.py --quick` and `--full` measure, and the environment they record."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.bench_repo import MODEL_ORDER
from benchmarks.common import APP_PYTHON, ROOT, VENVS


@dataclass(frozen=True)
class Plan:
    name: str
    models: tuple[str, ...]
    concurrency: tuple[int, ...]  # closed-loop sweep of the default models (16 and 64: collapse)
    slow_concurrency: tuple[int, ...]  # resnet18, resnet50
    duration: float  # our clients' measured seconds
    warmup: float
    perf_interval_ms: int
    perf_models: tuple[str, ...]  # perf_analyzer sweeps (gRPC; HTTP for the http_models too)
    ort_seconds: float
    ort_min_runs: int
    ort_batches: tuple[int, ...]
    big_ort_batches: tuple[int, ...]  # ResNet-18/50, MobileNetV2: seconds per run
    pipeline_seconds: float  # per batch size
    pipeline_batches: tuple[int, ...]
    pipeline_cases: tuple[str, ...]  # MODEL:INPUT: a ceiling, and convserve's task API sweep
    long_audio_concurrency: tuple[int, ...]  # 60-s clips and streams
    stream_audio: tuple[str, ...]  # StreamDetectSpeech clips
    transport_models: tuple[str, ...]
    peer_models: tuple[str, ...]
    http_models: tuple[str, ...]
    http_concurrency: tuple[int, ...]
    http_peers: tuple[str, ...]
    half_load_models: tuple[str, ...]
    delay_models: tuple[str, ...]  # convserve-delay (Triton's batching rule) as well
    mlserver_pw1_models: tuple[str, ...]  # MLServer's default (one worker process) as well


TASK_CASES = (
    "lenet5_fashion:png",
    "lenet5_fashion:jpeg",
    "mobilenet_v2:jpeg",
    "mobilenet_v2:png",
    "speech_cnn:wav1s",
    "speech_cnn:wav10s",
)
QUICK = Plan(
    name="quick",
    models=MODEL_ORDER,
    concurrency=(1, 16, 64),
    slow_concurrency=(1, 4),
    duration=2.0,
    warmup=1.0,
    perf_interval_ms=1000,
    perf_models=("lenet5_fashion",),
    ort_seconds=0.3,
    ort_min_runs=1,
    ort_batches=(1, 8, 64),
    big_ort_batches=(1, 8),
    pipeline_seconds=1.0,
    pipeline_batches=(1, 8),
    pipeline_cases=TASK_CASES,
    long_audio_concurrency=(1, 4),
    stream_audio=("wav10s",),
    transport_models=("lenet5_fashion",),
    peer_models=("lenet5_fashion",),
    http_models=("lenet5_fashion", "resnet18"),
    http_concurrency=(1, 16),
    http_peers=("mlserver",),
    half_load_models=("lenet5_fashion",),
    delay_models=("lenet5_fashion",),
    mlserver_pw1_models=(),
)
FULL = Plan(
    name="full",
    models=MODEL_ORDER,
    concurrency=(1, 4, 16, 64),
    slow_concurrency=(1, 4, 16, 64),
    duration=8.0,
    warmup=2.0,
    perf_interval_ms=2500,
    perf_models=("lenet5_fashion", "resnet_fashion", "resnet18"),
    ort_seconds=3.0,
    ort_min_runs=3,
    ort_batches=(1, 2, 4, 8, 16, 32, 64),
    big_ort_batches=(1, 2, 4, 8, 16, 32, 64),
    pipeline_seconds=4.0,
    pipeline_batches=(1, 4, 16, 64),
    pipeline_cases=(*TASK_CASES, "speech_cnn:wav60s", "resnet_fashion:png"),
    long_audio_concurrency=(1, 4, 16),
    stream_audio=("wav60s",),
    transport_models=("lenet5_fashion", "resnet18"),
    peer_models=("lenet5_fashion", "resnet_fashion", "resnet18", "resnet50"),
    http_models=("lenet5_fashion", "resnet18"),
    http_concurrency=(1, 16, 64),
    http_peers=("mlserver", "pytriton"),
    half_load_models=("lenet5_fashion", "resnet18"),
    delay_models=("lenet5_fashion", "resnet18"),
    mlserver_pw1_models=("lenet5_fashion",),
)


def _version(python: Path, module: str) -> str:
    if not python.is_file():
        return "-"
    code = f"import importlib.metadata as m; print(m.version('{module}'))"
    proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    return proc.stdout.strip() or "-"


def environment() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    git = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpu": "none (no GPU on this machine; GPU targets not measurable)",
        "commit": git.stdout.strip() or "?",
        "python": sys.version.split()[0],
        "onnxruntime": _version(APP_PYTHON, "onnxruntime-gpu"),
        "grpcio": _version(APP_PYTHON, "grpcio"),
        "uvicorn": _version(APP_PYTHON, "uvicorn"),
        "aiohttp": _version(APP_PYTHON, "aiohttp"),
        "nvidia-pytriton": _version(VENVS / "pytriton" / "bin" / "python", "nvidia-pytriton"),
        "mlserver": _version(VENVS / "mlserver" / "bin" / "python", "mlserver"),
        "peer onnxruntime": _version(VENVS / "mlserver" / "bin" / "python", "onnxruntime"),
    }

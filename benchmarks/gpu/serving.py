"""convserve on CUDA under load: perf_analyzer (KServe v2 gRPC) and ClassifyImage (our loadgen).

One server per model (`--load-models`), `--device cuda`, every endpoint on a free loopback port,
started as a child process with its log kept; ready once ModelReady says so. Its Prometheus
endpoint must show the model on CUDAExecutionProvider before anything is measured, so a run that
silently fell back to the CPU cannot pass for a GPU figure. Each concurrency level is measured
only while the deadline leaves room for it.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.common import INPUTS_DIR, PERF_ANALYZER, TOOLS, wait_model_ready
from service.process import ServerProcess, loopback_env, serve_command

PERF_CONCURRENCY = (1, 16, 64, 128, 256)
CLASSIFY_CONCURRENCY = (1, 16, 64)
PERF_WINDOW_MS = 2000
PERF_LEVEL_S = 12  # a perf_analyzer level: 3-4 windows of 2 s plus its set-up
CLASSIFY_LEVEL_S = 12  # 1.5 s warm-up + 5 s measured + client start-up
_PROVIDER = re.compile(r'convserve_execution_provider\{[^}]*provider="(\w+)"[^}]*\}\s+1(\.0)?\b')


def jpegs() -> list[bytes]:
    files = sorted((INPUTS_DIR / "jpeg").glob("*.jpg"))
    if not files:
        raise FileNotFoundError(f"no JPEGs in {INPUTS_DIR / 'jpeg'} (run.sh puts them there)")
    return [f.read_bytes() for f in files]


@contextlib.contextmanager
def server(
    repo: Path, model: str, logs: Path, deadline: float, device: str = "cuda"
) -> Iterator[ServerProcess]:
    cmd = serve_command(repo, "--device", device, "--load-models", model)
    timeout = max(30.0, min(180.0, deadline - time.time()))
    proc = ServerProcess.start(
        cmd,
        timeout=timeout,
        name=f"convserve-{model}",
        env=loopback_env(),
        log_path=logs / f"convserve-{model}.log",
    )
    try:
        wait_model_ready(proc.endpoint("grpc").port, model, timeout=timeout)
        yield proc
    finally:
        proc.stop(30)


def provider(proc: ServerProcess, model: str) -> str:
    """The execution provider the server reports for `model` (its Prometheus gauge)."""
    with urllib.request.urlopen(proc.url("metrics", "/metrics"), timeout=10) as reply:
        text = reply.read().decode()
    found = [m.group(1) for m in _PROVIDER.finditer(text) if f'model="{model}"' in m.group(0)]
    return found[0] if found else "unknown"


def _checked_provider(proc: ServerProcess, model: str) -> str:
    used = provider(proc, model)
    if used != "CUDAExecutionProvider":
        raise RuntimeError(f"{model} is served on {used}, not CUDA: not a GPU measurement")
    return used


def perf_sweep(repo: Path, model: str, logs: Path, deadline: float) -> dict[str, Any]:
    rows = []
    with server(repo, model, logs, deadline) as proc:
        used = _checked_provider(proc, model)
        port = proc.endpoint("grpc").port
        for level in PERF_CONCURRENCY:
            if deadline - time.time() < PERF_LEVEL_S + 10:
                rows.append({"concurrency": level, "skipped": "deadline"})
                continue
            rows.append(perf_analyzer(port, model, level))
    return _sweep("perf_analyzer (KServe v2 gRPC, FP32 tensors, 1 row per request)", used, rows)


def perf_analyzer(port: int, model: str, concurrency: int) -> dict[str, Any]:
    """One level: 3+ windows of PERF_WINDOW_MS; stability loosened to 100% so that a level always
    reports (perf_analyzer writes nothing for a run it calls unstable)."""
    with tempfile.TemporaryDirectory() as tmp:
        report_csv = Path(tmp) / "perf.csv"
        cmd = [
            str(PERF_ANALYZER),
            "-m",
            model,
            "-u",
            f"127.0.0.1:{port}",
            "-i",
            "grpc",
            "-p",
            str(PERF_WINDOW_MS),
            "--max-trials",
            "4",
            "--stability-percentage",
            "100",
            "--concurrency-range",
            str(concurrency),
            "-f",
            str(report_csv),
        ]
        libraries = f"{TOOLS / 'lib'}:{os.environ.get('LD_LIBRARY_PATH', '')}"
        env = {**os.environ, "LD_LIBRARY_PATH": libraries}
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
        except subprocess.TimeoutExpired:
            return {"concurrency": concurrency, "error": "perf_analyzer timed out (60 s)"}
        if not report_csv.is_file():
            return {"concurrency": concurrency, "error": _last_lines(proc.stdout + proc.stderr)}
        row = next(csv.DictReader(report_csv.open()))
    return {
        "concurrency": concurrency,
        "rows_per_s": float(row["Inferences/Second"]),
        "p50_ms": float(row["p50 latency"]) / 1e3,
        "p99_ms": float(row["p99 latency"]) / 1e3,
    }


def classify_sweep(repo: Path, model: str, logs: Path, deadline: float) -> dict[str, Any]:
    rows = []
    with server(repo, model, logs, deadline) as proc:
        used = _checked_provider(proc, model)
        target = str(proc.endpoint("grpc"))
        for level in CLASSIFY_CONCURRENCY:
            if deadline - time.time() < CLASSIFY_LEVEL_S + 10:
                rows.append({"concurrency": level, "skipped": "deadline"})
                continue
            rows.append(loadgen(target, model, level))
    return _sweep("benchmarks/loadgen.py --mode classify (JPEG, top_k 5)", used, rows)


def loadgen(target: str, model: str, concurrency: int) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.loadgen",
        "--target",
        target,
        "--mode",
        "classify",
        "--model",
        model,
        "--concurrency",
        str(concurrency),
        "--channels",
        "4",
        "--duration",
        "5",
        "--warmup",
        "1.5",
        "--procs",
        "2" if concurrency > 1 else "1",
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return {"concurrency": concurrency, "error": "loadgen timed out (60 s)"}
    try:
        got = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"concurrency": concurrency, "error": _last_lines(proc.stdout + proc.stderr)}
    row = {
        "concurrency": concurrency,
        "rows_per_s": got["rows_per_s"],
        "p50_ms": got["p50_ms"],
        "p99_ms": got["p99_ms"],
    }
    if got.get("errors"):
        row["errors"] = got["errors"]
    return row


def _last_lines(output: str, count: int = 2) -> str:
    """What a failing tool said last, on one line (its final lines name the failure)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return " / ".join(lines[-count:])[-400:] or "no output"


def _sweep(client: str, used: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    measured = [r for r in rows if "rows_per_s" in r]
    best = max(measured, key=lambda r: r["rows_per_s"]) if measured else None
    return {"client": client, "provider": used, "sweep": rows, "best": best}

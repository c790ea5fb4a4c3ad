"""The load clients as child processes, each measurement one row of results.json.

* `perf_analyzer`: Triton's C++ client (KServe v2 over gRPC or, with `protocol="http"`, REST
  with binary tensors), one concurrency or one fixed rate, read from its CSV.
* `python_client`: benchmarks/loadgen.py (gRPC: KServe, ClassifyImage, DetectSpeech),
  benchmarks/http_load.py (REST: KServe JSON/binary, /v1/classify, /v1/detect-speech) or
  benchmarks/stream_speech.py (StreamDetectSpeech). They report the wall-clock window they
  measured; the server's process-tree CPU in that window (benchmarks/cputree.py) gives
  `server_cpu_us_per_request` and `server_cores`.

A client in its own process: its CPU is not the server's, and tritonclient-free stubs never meet
another generated copy of the same protos in one process.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import APP_PYTHON, PERF_ANALYZER, ROOT, TOOLS
from benchmarks.cputree import TreeCpu

MODULES = {
    "loadgen": "benchmarks.loadgen",
    "http_load": "benchmarks.http_load",
    "stream_speech": "benchmarks.stream_speech",
}


def perf_analyzer(
    port: int,
    model: str,
    concurrency: int,
    interval_ms: int,
    *,
    slow: bool = False,
    rate: float = 0.0,
    protocol: str = "grpc",
) -> dict[str, Any]:
    """One perf_analyzer measurement (3+ windows) at a fixed concurrency or rate.

    Windows are `interval_ms` long; for slow models (ResNet at tens of images/s, where a window
    of a second or two holds a handful of replies) they are counted in requests instead.
    Stability is loosened to 400% (the last three windows' max / min within 5×; the result is
    their mean): on a shared machine successive windows differ by far more than perf_analyzer's
    default 10%, and an "unstable" run writes no result at all.
    """
    if not PERF_ANALYZER.is_file():
        return {"concurrency": concurrency, "errors": {"perf_analyzer missing": 1}}
    with tempfile.TemporaryDirectory() as tmp:
        report_csv = Path(tmp) / "perf.csv"
        cmd = [
            str(PERF_ANALYZER), "-m", model, "-u", f"127.0.0.1:{port}", "-i", protocol,
            "-p", str(interval_ms), "--max-trials", "6", "--stability-percentage", "400",
            "-f", str(report_csv),
        ]  # fmt: skip
        if rate:  # open loop: requests sent on a schedule, whatever the replies do
            cmd += ["--request-rate-range", f"{rate:.0f}", "--request-distribution", "constant"]
        else:
            cmd += ["--concurrency-range", str(concurrency)]
        timeout = 60 + 12 * interval_ms / 1000
        if slow:
            count = max(2 * concurrency, 16 if interval_ms < 2000 else 32)
            cmd += [
                "--measurement-mode",
                "count_windows",
                "--measurement-request-count",
                str(count),
            ]
            timeout = 420
        env = {**os.environ, "LD_LIBRARY_PATH": str(TOOLS / "lib")}
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            return {"concurrency": concurrency, "errors": {"TIMEOUT": 1}}
        if not report_csv.is_file():
            tail = (proc.stdout + proc.stderr)[-300:]
            return {"concurrency": concurrency, "errors": {"perf_analyzer": tail}}
        row = next(csv.DictReader(report_csv.open()))
    throughput = float(row["Inferences/Second"])
    return {
        "concurrency": None if rate else concurrency,
        **({"rate": rate} if rate else {}),
        "throughput_rps": throughput,
        "rows_per_s": throughput,
        "p50_ms": float(row["p50 latency"]) / 1e3,
        "p90_ms": float(row["p90 latency"]) / 1e3,
        "p99_ms": float(row["p99 latency"]) / 1e3,
    }


def python_client(
    client: str, args: list[str], meter: TreeCpu | None, timeout: float
) -> dict[str, Any]:
    """Run one of our clients (MODULES) with `args`; its JSON summary plus the server's CPU in
    the measured window. On failure, a row with `errors` saying why."""
    cmd = [str(APP_PYTHON), "-m", MODULES[client], *args]
    if client == "loadgen":
        cmd.append("--wall-window")
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"errors": {"client timed out": 1}}
    lines = proc.stdout.strip().splitlines()
    if not lines:
        return {"errors": {f"{client} failed": proc.stderr.strip()[-400:]}}
    result: dict[str, Any] = json.loads(lines[-1])
    window = result.pop("window_wall", None)
    if meter is not None and window and result.get("requests"):
        meter.sample()  # one sample after the window for sure
        start, end = window
        if meter.covers(start, end):
            cpu = meter.between(start, end)
            result["server_cpu_s"] = cpu
            result["server_cores"] = cpu / (end - start)
            result["server_cpu_us_per_request"] = cpu / result["requests"] * 1e6
    return result

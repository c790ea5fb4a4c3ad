"""Server CPU per request under load, optionally with a py-spy profile: the "make it fast" loop.

    .venv/bin/python -m benchmarks.profile --model lenet5_fashion --concurrency 16 \
        [--repository .cache/bench-repo-delay] [--serve-arg=--intra-op-threads=1] \
        [--py-spy /tmp/profile.txt] [--repeat 3]

Starts `convserve serve` on one model, drives it with perf_analyzer (KServe v2, closed loop) for
`--seconds`, and reports throughput, latency and the server's CPU time per request (user +
system, all threads of its whole process tree, from /proc: benchmarks/cputree.py). CPU per
request is what an optimisation changes; on a machine shared with other work it is far steadier
than requests/s, which moves with whatever else is running. `--py-spy FILE` records a
collapsed-stack profile (py-spy, `--gil`: only the thread holding the GIL, i.e. what serialises
a Python server) of the server meanwhile.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import (
    APP_PYTHON,
    BENCH_REPO,
    PERF_ANALYZER,
    ROOT,
    TOOLS,
    free_port,
    model_stats,
    running,
    wait_model_ready,
)
from benchmarks.cputree import descendants, tree_cpu_seconds


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process tree (every thread) so far."""
    return tree_cpu_seconds(descendants(pid))


def measure(args: argparse.Namespace, port: int, pid: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "perf.csv"
        cmd = [
            str(PERF_ANALYZER), "-m", args.model, "-u", f"127.0.0.1:{port}", "-i", "grpc",
            "--concurrency-range", str(args.concurrency), "-p", str(int(args.seconds * 1000)),
            "--max-trials", "3", "-s", "400", "-f", str(report),
        ]  # fmt: skip
        env = {**os.environ, "LD_LIBRARY_PATH": str(TOOLS / "lib")}
        perf = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        time.sleep(min(2.0, args.seconds))  # past perf_analyzer's warm-up
        rows0, cpu0, t0 = model_stats(port, args.model)[0], cpu_seconds(pid), time.monotonic()
        spy = None
        if args.py_spy:
            spy = subprocess.Popen(
                [str(Path(APP_PYTHON).with_name("py-spy")), "record", "-p", str(pid), "-d",
                 str(int(args.seconds * 2)), "-r", "200", "--gil", "-f", "raw",
                 "-o", str(args.py_spy)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        time.sleep(args.seconds * 2)
        rows1, cpu1, t1 = model_stats(port, args.model)[0], cpu_seconds(pid), time.monotonic()
        perf.communicate(timeout=120 + 10 * args.seconds)
        if spy is not None:
            spy.wait(60)
        row = next(iter(csv.DictReader(report.open())), None) if report.is_file() else None
    # Throughput from the server's own counters over the same interval as the CPU time;
    # perf_analyzer's latencies when it produced a result (an unstable run writes none).
    served = max(rows1 - rows0, 1)
    nan = float("nan")
    return {
        "rps": served / (t1 - t0),
        "p50_ms": float(row["p50 latency"]) / 1e3 if row else nan,
        "p99_ms": float(row["p99 latency"]) / 1e3 if row else nan,
        "server_cpu_us_per_request": (cpu1 - cpu0) / served * 1e6,
        "server_cores": (cpu1 - cpu0) / (t1 - t0),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet5_fashion")
    parser.add_argument("--repository", type=Path, default=BENCH_REPO)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0, help="perf_analyzer window")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--serve-arg", action="append", default=[], help="extra serve flag")
    parser.add_argument("--py-spy", type=Path, help="write a py-spy collapsed profile here")
    parser.add_argument(
        "--transport", action="store_true", help="profile the no-model transport ceiling instead"
    )
    args = parser.parse_args(argv)
    port = free_port()
    transport = [
        str(APP_PYTHON), "-m", "benchmarks.transport_ceiling", "--repository",
        str(args.repository), "--model", args.model, "--port", str(port),
    ]  # fmt: skip
    cmd = transport if args.transport else [
        str(APP_PYTHON), "-m", "convserve", "serve", "--repository", str(args.repository),
        "--grpc-host", "127.0.0.1", "--grpc-port", str(port), "--metrics-port", "-1",
        "--load-models", args.model, "--device", "cpu", "--log-level", "WARNING",
        *args.serve_arg,
    ]  # fmt: skip
    ready = "transport serving" if args.transport else "convserve serving"
    with running("server", cmd, port=port, ready=ready, cwd=ROOT) as server:
        wait_model_ready(port, args.model)
        results = [measure(args, port, server.proc.pid) for _ in range(args.repeat)]
    summary = {k: statistics.median(r[k] for r in results) for k in results[0]}
    print(json.dumps({"runs": results, "median": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

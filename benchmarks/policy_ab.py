#!/usr/bin/env python3
"""Eager against Triton's delay rule, interleaved: which batching default is faster here.

    .venv/bin/python benchmarks/policy_ab.py [--rounds 3] [--model lenet5_fashion]

The full benchmark runs `convserve` (eager) and `convserve-delay` minutes apart, and this
machine's speed drifts by tens of percent over minutes, so a gap between them in results.md can
be drift. Here each round serves the model from the benchmark repository (eager) and from its
delay view (.cache/bench-repo-delay), back to back, alternating which goes first, and measures
KServe v2 at c = 1, 4, 16, 64 with our loadgen. The table gives each side's median and the
per-round paired ratio eager / delay (median and range). Results: benchmarks/results/policy_ab.md
and .json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import bench_repo
from benchmarks.clients import python_client
from benchmarks.common import (
    BENCH_REPO,
    RESULTS_DIR,
    free_port,
    interleaved,
    paired_ratios,
    running,
    save_results,
    wait_model_ready,
)
from benchmarks.cputree import TreeCpu
from benchmarks.plans import environment
from benchmarks.servers import convserve_command

SIDES = ("eager", "delay")
CONCURRENCY = (1, 4, 16, 64)


def measure(
    side: str, repo: Path, model: str, model_input: str, round_: int
) -> list[dict[str, Any]]:
    grpc = free_port()
    rows = []
    cmd = convserve_command(repo, model, grpc, free_port())
    with (
        running(
            f"{side}-{model}", cmd, port=grpc, ready=r"^convserve serving", timeout=600
        ) as proc,
        TreeCpu(proc.pid) as meter,
    ):
        wait_model_ready(grpc, model, timeout=300)
        for c in CONCURRENCY:
            args = ["--target", f"127.0.0.1:{grpc}", "--model", model, "--concurrency", str(c),
                    "--channels", "4", "--duration", "6", "--warmup", "1.5",
                    "--mode", "kserve", "--input", model_input]  # fmt: skip
            result = python_client("loadgen", args, meter, timeout=180)
            row = {"side": side, "round": round_, "concurrency": c, **result}
            rows.append(row)
            print(
                f"round {round_ + 1} {side:>5} c={c:<3} {row.get('throughput_rps') or 0:8.1f} req/s"
                f"  p50 {row.get('p50_ms') or 0:6.2f} ms",
                file=sys.stderr,
                flush=True,
            )
    return rows


def _median(rows: Iterable[dict[str, Any]], key: str) -> str:
    values = [r[key] for r in rows if r.get(key) is not None]
    return f"{statistics.median(values):.1f}" if values else "-"


def render(doc: dict[str, Any]) -> list[str]:
    runs = doc["runs"]
    lines = [
        f"# Eager vs delay batching, interleaved ({doc['model']}, commit "
        f"{doc['environment'].get('commit')})",
        "",
        f"{doc['rounds']} rounds; each round serves both back to back (order alternating), "
        f"KServe v2 gRPC, loadgen with 4 channels, 6-s windows; other processes used a median "
        f"of {doc['others_cores']:.2f} cores. Regenerate with "
        "`.venv/bin/python benchmarks/policy_ab.py`.",
        "",
        "| c | eager req/s | delay req/s | eager / delay (median, range) | eager p50 ms | "
        "delay p50 ms | eager CPU µs/req | delay CPU µs/req |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for c in CONCURRENCY:
        side = {
            s: {r["round"]: r for r in runs if r["side"] == s and r["concurrency"] == c}
            for s in SIDES
        }
        ratios = paired_ratios(
            {k: r.get("throughput_rps") for k, r in side["eager"].items()},
            {k: r.get("throughput_rps") for k, r in side["delay"].items()},
        )
        eager, delay = side["eager"].values(), side["delay"].values()
        ratio = (
            f"{statistics.median(ratios):.2f} ({ratios[0]:.2f}–{ratios[-1]:.2f})" if ratios else "-"
        )
        lines.append(
            f"| {c} | {_median(eager, 'throughput_rps')} | {_median(delay, 'throughput_rps')} | "
            f"{ratio} | {_median(eager, 'p50_ms')} | {_median(delay, 'p50_ms')} | "
            f"{_median(eager, 'server_cpu_us_per_request')} | "
            f"{_median(delay, 'server_cpu_us_per_request')} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="at least 1")
    parser.add_argument("--model", default="lenet5_fashion")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    bench_repo.ensure(BENCH_REPO)
    repos = {"eager": BENCH_REPO, "delay": bench_repo.policy_view(BENCH_REPO, "delay")}
    model_input = bench_repo.models(BENCH_REPO)[args.model].input
    started = time.time()
    runs, others = interleaved(
        SIDES,
        args.rounds,
        lambda side, round_: measure(side, repos[side], args.model, model_input, round_),
    )
    doc = {
        "model": args.model,
        "rounds": args.rounds,
        "environment": environment(),
        "others_cores": others,
        "wall_s": time.time() - started,
        "runs": runs,
    }
    save_results(args.out, "policy_ab", doc, render)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

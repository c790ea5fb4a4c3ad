#!/usr/bin/env python3
"""Issue #11's peer targets for LeNet-5, measured interleaved: convserve, PyTriton and the
no-model transport server back to back in every round.

    .venv/bin/python benchmarks/targets_ab.py [--rounds 3] [--model lenet5_fashion]

The full benchmark (run.py) measures each server minutes after the previous one, and this
machine's speed drifts by tens of percent over minutes, so a ratio between two servers in
results.md carries that drift. Here each round starts the servers one after another (the order
rotates between rounds) and measures KServe v2 gRPC at c = 1, 16 and 64 with our loadgen; the
targets are computed *per round*, from figures taken a minute apart, and reported as the median
and range over rounds:

  * peak (best of the three concurrencies) of convserve / PyTriton       target >= 1.2
  * peak of convserve / transport                                        target >= 0.75
  * c=1 p50 of convserve - transport, ms                                 target <= 0.5
  * server CPU per request at c=16, convserve / transport                target <= 1.3

Results: benchmarks/results/targets_ab.md and .json. PyTriton is skipped (with a note) when its
environment is not built (benchmarks/peers/setup.sh pytriton).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import bench_repo
from benchmarks.clients import python_client
from benchmarks.common import BENCH_REPO, RESULTS_DIR, interleaved, save_results
from benchmarks.cputree import TreeCpu
from benchmarks.plans import environment
from benchmarks.servers import launch, peer_ready

SIDES = ("convserve", "pytriton", "transport")
CONCURRENCY = (1, 16, 64)

Row = dict[str, Any]
# (label, target text, per-round figure from that round's rows by side, met when True)
Target = tuple[str, str, Callable[[dict[str, list[Row]]], float | None], Callable[[float], bool]]


def measure(side: str, model: bench_repo.Model, round_: int) -> list[Row]:
    rows = []
    with launch(side, model, {"convserve": BENCH_REPO}) as server, TreeCpu(server.pid) as meter:
        for c in CONCURRENCY:
            args = ["--target", f"127.0.0.1:{server.grpc_port}", "--model", model.name,
                    "--concurrency", str(c), "--channels", "4", "--duration", "6",
                    "--warmup", "1.5", "--mode", "kserve", "--input", model.input]  # fmt: skip
            result = python_client("loadgen", args, meter, timeout=180)
            rows.append({"side": side, "round": round_, "concurrency": c, **result})
            rps, p50 = result.get("throughput_rps") or 0, result.get("p50_ms") or 0
            print(
                f"round {round_ + 1} {side:>9} c={c:<3} {rps:8.1f} req/s  p50 {p50:6.2f} ms  "
                f"CPU {result.get('server_cpu_us_per_request') or 0:6.1f} µs/req",
                file=sys.stderr,
                flush=True,
            )
    return rows


def _value(row: Row, key: str) -> float | None:
    """A figure of a measurement; None when it failed (missing, zero or NaN)."""
    value = row.get(key)
    return float(value) if value and not math.isnan(value) else None


def _at(rows: list[Row], c: int, key: str) -> float | None:
    return next((_value(r, key) for r in rows if r["concurrency"] == c), None)


def _peak(rows: list[Row]) -> float | None:
    values = [v for r in rows if (v := _value(r, "throughput_rps")) is not None]
    return max(values) if values else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _difference(a: float | None, b: float | None) -> float | None:
    return a - b if a is not None and b is not None else None


TARGETS: Sequence[Target] = (
    (
        "peak req/s, convserve / PyTriton",
        "≥ 1.2",
        lambda s: _ratio(_peak(s["convserve"]), _peak(s["pytriton"])),
        lambda v: v >= 1.2,
    ),
    (
        "peak req/s, convserve / transport",
        "≥ 0.75",
        lambda s: _ratio(_peak(s["convserve"]), _peak(s["transport"])),
        lambda v: v >= 0.75,
    ),
    (
        "c=1 p50, convserve − transport (ms)",
        "≤ 0.5",
        lambda s: _difference(_at(s["convserve"], 1, "p50_ms"), _at(s["transport"], 1, "p50_ms")),
        lambda v: v <= 0.5,
    ),
    (
        "CPU per request at c=16, convserve / transport",
        "≤ 1.3",
        lambda s: _ratio(
            _at(s["convserve"], 16, "server_cpu_us_per_request"),
            _at(s["transport"], 16, "server_cpu_us_per_request"),
        ),
        lambda v: v <= 1.3,
    ),
)


def render(doc: dict[str, Any]) -> list[str]:
    runs: list[Row] = doc["runs"]
    sides = doc["sides"]
    rounds = sorted({r["round"] for r in runs})
    by_round = {
        k: {s: [r for r in runs if r["round"] == k and r["side"] == s] for s in SIDES}
        for k in rounds
    }
    lines = [
        f"# Issue #11's peer targets, interleaved ({doc['model']}, commit "
        f"{doc['environment'].get('commit')})",
        "",
        f"{doc['rounds']} rounds; each round runs {', '.join(sides)} one after another (the "
        "order rotates), KServe v2 gRPC, loadgen with 4 channels, 6-s windows, client and server "
        f"on the same cores; other processes used a median of {doc['others_cores']:.2f} cores. "
        "Each target is computed within a round and reported as the median (range) over rounds. "
        "Regenerate with `.venv/bin/python benchmarks/targets_ab.py`.",
        "",
        "| target | measured, median (range) | met |",
        "|---|--:|:-:|",
    ]
    for label, target, figure, met in TARGETS:
        values = sorted(v for k in rounds if (v := figure(by_round[k])) is not None)
        if not values:
            lines.append(f"| {label} {target} | not measured | - |")
            continue
        median = statistics.median(values)
        lines.append(
            f"| {label} {target} | {median:.2f} ({values[0]:.2f}–{values[-1]:.2f}) | "
            f"{'yes' if met(median) else 'no'} |"
        )
    lines += [
        "",
        "Each side's median over rounds:",
        "",
        "| server | c | req/s | p50 ms | p99 ms | server CPU µs/req |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for side in sides:
        for c in CONCURRENCY:
            cells = [
                _median([r for r in runs if r["side"] == side and r["concurrency"] == c], key)
                for key in ("throughput_rps", "p50_ms", "p99_ms", "server_cpu_us_per_request")
            ]
            lines.append(f"| {side} | {c} | {' | '.join(cells)} |")
    if doc.get("skipped"):
        lines += ["", f"Not run: {doc['skipped']}."]
    return lines


def _median(rows: list[Row], key: str) -> str:
    values = [v for r in rows if (v := _value(r, key)) is not None]
    return f"{statistics.median(values):.1f}" if values else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="at least 1")
    parser.add_argument("--model", default="lenet5_fashion")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    bench_repo.ensure(BENCH_REPO)
    models = bench_repo.models(BENCH_REPO)
    if args.model not in models:
        parser.error(f"unknown --model {args.model!r}; known: {', '.join(sorted(models))}")
    model = models[args.model]
    sides = list(SIDES)
    skipped = ""
    if not peer_ready("pytriton"):
        sides.remove("pytriton")
        skipped = "PyTriton (its environment is not built: benchmarks/peers/setup.sh pytriton)"
    started = time.time()
    runs, others = interleaved(
        sides, args.rounds, lambda side, round_: measure(side, model, round_)
    )
    doc = {
        "model": args.model,
        "rounds": args.rounds,
        "sides": sides,
        "skipped": skipped,
        "environment": environment(),
        "others_cores": others,
        "wall_s": time.time() - started,
        "runs": runs,
    }
    save_results(args.out, "targets_ab", doc, render)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/env python3
"""Issue #10's check: the pre-refactor commit and HEAD benchmarked in one run, interleaved.

    .venv/bin/python benchmarks/before_after.py --quick     # one round, short (a smoke run)
    .venv/bin/python benchmarks/before_after.py --full      # three rounds (about 15 minutes)
    .venv/bin/python benchmarks/before_after.py --full --before b3c81df --out DIR
    .venv/bin/python benchmarks/before_after.py --full --before COMMIT --models lenet5_fashion \
        --title "what changed" --out DIR          # any other change, the same way

* "before": a git worktree of the commit (.cache/before-<commit>, created once) with its own
  generated stubs (its scripts/gen_protos.py), served from this checkout's virtual environment
  with the worktree first on the path, so its `service` and `convserve` packages shadow HEAD's.
* "after": `convserve serve` of this checkout (HEAD plus anything uncommitted: the run records
  `git describe --dirty`).
* Both serve the same benchmark repository (benchmarks/bench_repo.py, as HEAD's export writes
  it), through a view that turns on `jpeg_draft` for mobilenet_v2: the old commit always decoded
  large JPEGs at reduced scale, which HEAD does only when asked (d3b0ef2), so this compares the
  same work. Both are driven by the same client (HEAD's benchmarks/loadgen.py, gRPC).
* Figures: LeNet-5 and ResNet-18 KServe v2 at c=1/16/64; ClassifyImage with Fashion-MNIST PNGs
  (lenet5_fashion) and JPEG photographs (mobilenet_v2); DetectSpeech with 1-s WAVs
  (speech_cnn). For each model, each round starts one side, measures every figure of the model,
  stops it, then the other side; the order alternates between rounds (before/after, then
  after/before, ...) so the machine's drift falls on both equally. The table reports each side's
  median over rounds and, for throughput, p50, p99 and server CPU per request, the median over
  rounds of the paired ratio after / before: the two sides of a round run back to back, so
  their ratio cancels the drift between rounds (this machine's speed moves by tens of percent
  over minutes), which a ratio of the two medians would not. The range of the paired ratios is
  shown beside throughput's as the noise. The check is that no figure is worse by more than 5 %.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import bench_repo
from benchmarks.clients import python_client
from benchmarks.common import (
    APP_PYTHON,
    BENCH_REPO,
    CACHE,
    RESULTS_DIR,
    ROOT,
    CpuWatch,
    free_port,
    paired_ratios,
    running,
    wait_model_ready,
)
from benchmarks.cputree import TreeCpu
from benchmarks.plans import environment
from benchmarks.servers import convserve_command

BEFORE = "b3c81df"
DEFAULT_TITLE = "the data-plane refactor (issue #10)"
DEFAULT_OUT = "benchmarks/results"
TOLERANCE = 0.05


@dataclass(frozen=True)
class Figure:
    model: str
    api: str  # kserve | classify-png | classify-jpeg | speech-wav1s
    concurrency: int

    def args(self, model_input: str) -> list[str]:
        if self.api == "kserve":
            return ["--mode", "kserve", "--input", model_input]
        mode, _, kind = self.api.partition("-")
        option = "--images" if mode == "classify" else "--audio"
        return ["--mode", mode, option, kind]


@dataclass(frozen=True)
class Plan:
    name: str
    rounds: int
    duration: float
    warmup: float
    figures: tuple[Figure, ...]


FIGURES = (
    *(Figure("lenet5_fashion", "kserve", c) for c in (1, 16, 64)),
    Figure("lenet5_fashion", "classify-png", 16),
    *(Figure("resnet18", "kserve", c) for c in (1, 16, 64)),
    Figure("mobilenet_v2", "classify-jpeg", 16),
    Figure("speech_cnn", "speech-wav1s", 16),
)
# ResNet-18 at c=64 needs more than a smoke run's seconds for a single round trip.
QUICK = Plan(
    "quick",
    rounds=1,
    duration=2.0,
    warmup=1.0,
    figures=tuple(f for f in FIGURES if f.model != "resnet18" or f.concurrency < 64),
)
FULL = Plan("full", rounds=3, duration=8.0, warmup=2.0, figures=FIGURES)
SIDES = ("before", "after")
LOWER_IS_BETTER = ("p50_ms", "p99_ms", "server_cpu_us_per_request")


def worktree(commit: str) -> Path:
    """A worktree of `commit` with its generated stubs (made once)."""
    path = CACHE / f"before-{commit}"
    if not (path / "service" / "_proto" / "inference").is_dir():
        if not path.is_dir():
            subprocess.run(
                ["git", "worktree", "add", "--detach", str(path), commit], cwd=ROOT, check=True
            )
        subprocess.run(
            [str(APP_PYTHON), "scripts/gen_protos.py"], cwd=path, check=True, capture_output=True
        )
    return path


def draft_view(repo: Path) -> Path:
    """The benchmark repository with `jpeg_draft: "true"` for mobilenet_v2 (see the docstring)."""

    def edit(name: str, text: str) -> str:
        return (
            bench_repo.set_parameter(text, "jpeg_draft", "true") if name == "mobilenet_v2" else text
        )

    return bench_repo.config_view(repo, "before-after", edit)


class BeforeAfter:
    def __init__(self, plan: Plan, commit: str, repo: Path, out: Path) -> None:
        self.plan, self.commit, self.out = plan, commit, out
        self.tree = worktree(commit)
        self.repo = draft_view(repo)
        self.models = bench_repo.models(repo)
        self.cpu = CpuWatch()
        self.started = time.time()
        self.doc: dict[str, Any] = {
            "plan": asdict(plan),
            "before": commit,
            "environment": environment(),
            "runs": [],
            "notes": [],
        }

    def log(self, message: str) -> None:
        print(f"[{time.time() - self.started:6.0f}s] {message}", file=sys.stderr, flush=True)

    def serve(self, side: str, model: str, figures: list[Figure], round_: int) -> None:
        grpc = free_port()
        if side == "before":
            cmd = convserve_command(self.repo, model, grpc, None)
            env = {"PYTHONPATH": str(self.tree)}
            cwd = self.tree
        else:
            cmd, env, cwd = convserve_command(self.repo, model, grpc, free_port()), {}, ROOT
        self.log(f"round {round_ + 1}: {side} {model}")
        try:
            with (
                running(
                    f"{side}-{model}",
                    cmd,
                    port=grpc,
                    ready=r"^convserve serving",
                    timeout=600,
                    env=env,
                    cwd=cwd,
                ) as proc,
                TreeCpu(proc.pid) as meter,
            ):
                wait_model_ready(grpc, model, timeout=300)
                for f in figures:
                    self.measure(side, f, grpc, meter, round_)
        except Exception as exc:
            self.doc["notes"].append(f"{side} {model} round {round_ + 1}: {exc}"[:1500])
            self.log(f"  FAILED: {exc}"[:500])

    def measure(self, side: str, f: Figure, port: int, meter: TreeCpu, round_: int) -> None:
        p = self.plan
        duration = p.duration * (3 if f.model == "resnet18" and f.concurrency >= 64 else 1)
        args = [
            "--target",
            f"127.0.0.1:{port}",
            "--model",
            f.model,
            "--concurrency",
            str(f.concurrency),
            "--channels",
            "4",
            "--duration",
            str(duration),
            "--warmup",
            str(p.warmup),
            *f.args(self.models[f.model].input),
        ]
        result = python_client("loadgen", args, meter, timeout=180 + duration)
        row = {"side": side, "round": round_, **asdict(f), **result, "load": self.cpu.sample()}
        self.doc["runs"].append(row)
        self.log(
            f"  {side:>6} {f.model:>14} {f.api:>13} c={f.concurrency:<3} "
            f"{row.get('throughput_rps') or 0:8.1f} req/s  p50 {row.get('p50_ms') or 0:7.2f}"
            f"  p99 {row.get('p99_ms') or 0:7.2f} ms"
        )

    def run(self) -> None:
        models = list(dict.fromkeys(f.model for f in self.plan.figures))
        for round_ in range(self.plan.rounds):
            for i, model in enumerate(models):
                order = SIDES if (round_ + i) % 2 == 0 else SIDES[::-1]
                figures = [f for f in self.plan.figures if f.model == model]
                for side in order:
                    self.serve(side, model, figures, round_)
                self.save()

    def save(self) -> None:
        self.doc["wall_s"] = time.time() - self.started
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "before_after.json").write_text(json.dumps(self.doc, indent=1))
        (self.out / "before_after.md").write_text("\n".join(render(self.doc)) + "\n")


def summary(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Per figure and measure: each side's median over rounds, and the median over rounds of
    the paired ratio after / before (with its range, `_ratios`)."""
    out = []
    figures = list(dict.fromkeys((r["model"], r["api"], r["concurrency"]) for r in doc["runs"]))
    for model, api, c in figures:
        row: dict[str, Any] = {"model": model, "api": api, "concurrency": c}
        for measure in ("throughput_rps", *LOWER_IS_BETTER):
            by_round: dict[str, dict[int, float]] = {side: {} for side in SIDES}
            for r in doc["runs"]:
                if (
                    (r["model"], r["api"], r["concurrency"]) == (model, api, c)
                    and r.get(measure) is not None
                    and r.get("throughput_rps")
                ):
                    by_round[r["side"]][r["round"]] = r[measure]
            medians = {
                side: statistics.median(v.values()) if v else None for side, v in by_round.items()
            }
            before, after = by_round["before"], by_round["after"]
            ratios = paired_ratios(after, before)
            row[measure] = medians
            row[f"{measure}_ratio"] = statistics.median(ratios) if ratios else None
            row[f"{measure}_ratios"] = ratios
        out.append(row)
    return out


def worse(row: dict[str, Any], measure: str) -> bool | None:
    ratio: float | None = row.get(f"{measure}_ratio")
    if ratio is None:
        return None
    return ratio > 1 + TOLERANCE if measure in LOWER_IS_BETTER else ratio < 1 - TOLERANCE


def render(doc: dict[str, Any]) -> list[str]:
    env, plan = doc["environment"], doc["plan"]
    others = [r["load"]["others_cores"] for r in doc["runs"] if "load" in r]
    lines = [
        f"# Before / after {doc.get('title', DEFAULT_TITLE)}: {doc['before']} vs "
        f"{env.get('commit')}",
        "",
        f"Plan `{plan['name']}`: {plan['rounds']} round(s), {plan['duration']:g} s per figure, "
        f"interleaved; wall time {doc.get('wall_s', 0) / 60:.1f} min. Regenerate with "
        f"`.venv/bin/python benchmarks/before_after.py {command(doc)}`.",
        "",
    ]
    if plan["name"] != "full":
        lines += ["**Smoke run**: one short round shows that it runs, not a verdict.", ""]
    if others:
        lines += [
            f"Other processes used a median of {statistics.median(others):.2f} cores "
            f"(max {max(others):.2f}) of {env.get('cores')} meanwhile.",
            "",
        ]
    lines += [
        "Figures: each side's median over rounds. Ratios: the median over rounds of after / "
        "before within a round (the two sides ran back to back), which cancels the machine's "
        "drift between rounds; the range is that of the rounds' throughput ratios. A figure "
        f"is worse when throughput falls or latency / CPU per request rises by more than "
        f"{TOLERANCE:.0%}.",
        "",
        "| model | api | c | req/s before | after | ratio | range | p50 ratio | p99 ratio | "
        "CPU/req before µs | after µs | ratio | worse by >5 % |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for row in summary(doc):
        flags = [m for m in ("throughput_rps", *LOWER_IS_BETTER) if worse(row, m)]
        t, cpu = row["throughput_rps"], row["server_cpu_us_per_request"]
        lines.append(
            f"| {row['model']} | {row['api']} | {row['concurrency']} | {_n(t['before'])} | "
            f"{_n(t['after'])} | {_r(row['throughput_rps_ratio'])} | "
            f"{_span(row['throughput_rps_ratios'])} | {_r(row['p50_ms_ratio'])} | "
            f"{_r(row['p99_ms_ratio'])} | {_n(cpu['before'], 0)} | {_n(cpu['after'], 0)} | "
            f"{_r(row['server_cpu_us_per_request_ratio'])} | "
            f"{'**' + ', '.join(flags) + '**' if flags else 'no'} |"
        )
    if doc["notes"]:
        lines += ["", "## Notes", "", *(f"- {n}" for n in doc["notes"])]
    return lines


def command(doc: dict[str, Any]) -> str:
    """The options that rerun what `doc` records."""
    plan = doc["plan"]
    base = FULL if plan["name"] == "full" else QUICK
    parts = [f"--{plan['name']}"]
    if plan["rounds"] != base.rounds:
        parts.append(f"--rounds {plan['rounds']}")
    if doc["before"] != BEFORE:
        parts.append(f"--before {doc['before']}")
    models = list(dict.fromkeys(f["model"] for f in plan.get("figures", ())))
    if models and set(models) != {f.model for f in base.figures}:
        parts.append(f"--models {','.join(models)}")
    if doc.get("title", DEFAULT_TITLE) != DEFAULT_TITLE:
        parts.append(f'--title "{doc["title"]}"')
    if doc.get("out", DEFAULT_OUT) != DEFAULT_OUT:
        parts.append(f"--out {doc['out']}")
    return " ".join(parts)


def _n(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _r(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _span(values: list[float]) -> str:
    return f"{values[0]:.2f}–{values[-1]:.2f}" if len(values) > 1 else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--quick", action="store_true", help="one short round (smoke run)")
    mode.add_argument("--full", action="store_true", help="three rounds")
    parser.add_argument("--rounds", type=int, help="rounds instead of the plan's")
    parser.add_argument(
        "--models", help="comma-separated: only these models' figures (default: all)"
    )
    parser.add_argument("--before", default=BEFORE, help="the commit to compare with")
    parser.add_argument("--title", default=DEFAULT_TITLE, help="what changed, for the heading")
    parser.add_argument("--repository", type=Path, default=BENCH_REPO)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    bench_repo.ensure(args.repository)
    subprocess.run([str(APP_PYTHON), "-m", "benchmarks.inputs"], cwd=ROOT, check=True, timeout=600)
    plan = FULL if args.full else QUICK
    if args.rounds is not None:
        if args.rounds < 1:
            parser.error("--rounds must be at least 1")
        plan = replace(plan, rounds=args.rounds)
    if args.models:
        wanted = set(args.models.split(","))
        unknown = wanted - {f.model for f in plan.figures}
        if unknown:
            parser.error(f"--models: no figures for {', '.join(sorted(unknown))}")
        plan = replace(plan, figures=tuple(f for f in plan.figures if f.model in wanted))
    runner = BeforeAfter(plan, args.before, args.repository, args.out)
    runner.doc["title"] = args.title
    out = args.out.resolve()
    runner.doc["out"] = str(out.relative_to(ROOT) if out.is_relative_to(ROOT) else out)
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
    runner.run()
    runner.save()
    runner.log(f"done: {args.out / 'before_after.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

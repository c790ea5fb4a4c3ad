#!/usr/bin/env python3
"""Run every benchmark in bounded time and write benchmarks/results/ (results.json, .md, PNGs).

    .venv/bin/python benchmarks/run.py --quick     # every part once, short (a smoke run)
    .venv/bin/python benchmarks/run.py --full      # the measured run (about 75 minutes)
    .venv/bin/python benchmarks/run.py --full --only convserve transport   # a subset of servers

Default configurations everywhere: the benchmark repository is what `convserve export` /
`build-defaults` write (benchmarks/bench_repo.py: max batch 64, max queue delay 1000 µs, eager
batching), the peers get the same max batch and delay with their own batching rule.
Model by model (never two servers at once: on a small machine they would share cores):
 1. ceilings: in-process ONNX Runtime per batch size (ort_ceiling.py) and, for the task API,
    decode + preprocess + ONNX Runtime (pipeline_ceiling.py);
 2. each server in turn (benchmarks/servers.py): start it, closed-loop sweeps over concurrency
    with our gRPC loadgen (KServe v2; convserve also ClassifyImage with JPEG/PNG, DetectSpeech
    with 1/10/60-s WAVs, StreamDetectSpeech), perf_analyzer, the HTTP client (KServe v2 REST,
    JSON and binary), a fixed rate at half the peak; the server's process-tree CPU is metered
    all along (cputree.py), so every row of our clients carries CPU-seconds per request;
 3. report.py renders the tables, the #11/#12 targets and the plots.
Other load on the machine is sampled with every row (CpuWatch) and reported.
Peers need their environments (benchmarks/peers/setup.sh, called when missing; a peer that
cannot be built is skipped with a note). #10's before/after comparison is before_after.py.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import bench_repo
from benchmarks.bench_repo import Model
from benchmarks.common import APP_PYTHON, BENCH_REPO, RESULTS_DIR, ROOT, wait_model_ready
from benchmarks.cputree import TreeCpu
from benchmarks.plans import FULL, QUICK, Plan
from benchmarks.servers import PEERS, SERVERS, Running, ensure_peer, launch
from benchmarks.session import SLOW_MODELS, Session


class Runner(Session):
    """What a plan measures, model by model, server by server (see the module docstring)."""

    def __init__(self, plan: Plan, repo: Path, only: tuple[str, ...], out: Path) -> None:
        super().__init__(plan, out)
        self.repos = {"convserve": repo, "convserve-delay": bench_repo.policy_view(repo, "delay")}
        self.wanted = set(only or SERVERS)
        self.models = bench_repo.models(repo)

    # ---- ceilings --------------------------------------------------------------------------

    def ceilings(self, m: Model) -> None:
        big = m.name in SLOW_MODELS
        batches = self.plan.big_ort_batches if big else self.plan.ort_batches
        self.log(f"ORT ceiling {m.name} at batch sizes {batches}")
        found = self.child(
            "benchmarks.ort_ceiling",
            "--repository",
            self.repos["convserve"],
            "--models",
            m.name,
            "--seconds",
            self.plan.ort_seconds,
            "--min-runs",
            self.plan.ort_min_runs,
            "--batch-sizes",
            ",".join(map(str, batches)),
        )
        self.doc["ort_ceiling"] += [{**c, "load": self.cpu.sample()} for c in found]
        cases = [c for c in self.plan.pipeline_cases if c.split(":")[0] == m.name]
        if cases:
            self.log(f"pipeline ceilings {', '.join(cases)}")
            args = [a for c in cases for a in ("--case", c)]
            found = self.child(
                "benchmarks.pipeline_ceiling",
                "--repository",
                self.repos["convserve"],
                *args,
                "--seconds",
                self.plan.pipeline_seconds,
                "--batch-sizes",
                ",".join(map(str, self.plan.pipeline_batches)),
            )
            self.doc["pipeline_ceiling"] += [{**c, "load": self.cpu.sample()} for c in found]
        self.save()

    def child(self, module: str, *args: object) -> list[dict[str, Any]]:
        cmd = [str(APP_PYTHON), "-m", module, *map(str, args)]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            self.note(f"{module} {' '.join(map(str, args))} failed: {proc.stderr[-500:]}")
            return []
        return list(json.loads(proc.stdout))

    # ---- one server ------------------------------------------------------------------------

    def serve(self, server: str, m: Model, body: Callable[[Running, TreeCpu], None]) -> None:
        if server not in self.wanted and server.split("-")[0] not in self.wanted:
            return  # convserve-delay and mlserver-pw1 go with convserve and mlserver
        self.log(f"{server}: {m.name}")
        try:
            with launch(server, m, self.repos) as running, TreeCpu(running.pid) as meter:
                wait_model_ready(running.grpc_port, m.name, timeout=300)
                body(running, meter)
        except Exception as exc:
            self.note(f"{server} {m.name}: {type(exc).__name__}: {exc}")
            self.log(traceback.format_exc(limit=3))
        self.save()

    # ---- what each server runs -------------------------------------------------------------

    def kserve(self, r: Running, meter: TreeCpu, m: Model) -> None:
        """KServe v2 over gRPC: our loadgen, perf_analyzer (not MLServer: no ModelConfig),
        HTTP where planned, then the fixed rate at half the peak."""
        sweep = self.sweep(
            r, meter, m, "loadgen", "kserve", ("--mode", "kserve", "--input", m.input)
        )
        if m.name in self.plan.perf_models and not r.name.startswith("mlserver"):
            self.perf_sweep(r, m)
        if m.name in self.plan.http_models and (
            r.name == "convserve" or r.name in self.plan.http_peers
        ):
            for mode in ("kserve-json", "kserve-binary"):
                self.sweep(
                    r,
                    meter,
                    m,
                    "http_load",
                    mode,
                    ("--mode", mode, "--input", m.input),
                    self.plan.http_concurrency,
                )
            if r.name == "convserve" and m.name in self.plan.perf_models:
                self.perf_sweep(r, m, "http")
        if r.name != "mlserver-pw1":
            self.half_load(r, meter, m, sweep)

    def task_api(self, r: Running, meter: TreeCpu, m: Model) -> None:
        """convserve's own API with real encoded inputs: decoding, resizing, windows included."""
        for case in self.plan.pipeline_cases:
            model, _, kind = case.partition(":")
            if model != m.name:
                continue
            if kind in ("jpeg", "png"):
                extra = ("--mode", "classify", "--images", kind)
                self.sweep(r, meter, m, "loadgen", f"classify-{kind}", extra)
            else:
                levels = self.plan.long_audio_concurrency if kind == "wav60s" else None
                extra = ("--mode", "speech", "--audio", kind)
                self.sweep(r, meter, m, "loadgen", f"speech-{kind}", extra, levels)
        if m.task == "speech_detection":
            for kind in self.plan.stream_audio:
                extra = ("--audio", kind, "--chunk-ms", "250")
                self.sweep(
                    r,
                    meter,
                    m,
                    "stream_speech",
                    f"stream-{kind}",
                    extra,
                    self.plan.long_audio_concurrency,
                )

    def convserve(self, r: Running, meter: TreeCpu, m: Model) -> None:
        self.kserve(r, meter, m)
        self.task_api(r, meter, m)

    def run(self) -> None:
        peers = [p for p in PEERS if p in self.wanted]
        for peer in list(peers):
            if not ensure_peer(peer):
                self.note(f"{peer}: environment could not be built; skipped")
                peers.remove(peer)
        for m in (self.models[name] for name in self.plan.models):
            self.ceilings(m)
            if m.name in self.plan.transport_models:
                self.serve("transport", m, lambda r, meter, m=m: self.kserve(r, meter, m))
            self.serve("convserve", m, lambda r, meter, m=m: self.convserve(r, meter, m))
            if m.name in self.plan.delay_models:
                self.serve("convserve-delay", m, lambda r, meter, m=m: self.kserve(r, meter, m))
            if m.name not in self.plan.peer_models:
                continue
            for peer in peers:
                self.serve(peer, m, lambda r, meter, m=m: self.kserve(r, meter, m))
                if peer == "mlserver" and m.name in self.plan.mlserver_pw1_models:
                    self.serve("mlserver-pw1", m, lambda r, meter, m=m: self.kserve(r, meter, m))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--quick", action="store_true", help="every part once, short")
    mode.add_argument("--full", action="store_true", help="the measured run")
    parser.add_argument("--only", nargs="+", choices=SERVERS, default=(), help="servers to run")
    parser.add_argument("--repository", type=Path, default=BENCH_REPO)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    plan = FULL if args.full else QUICK
    bench_repo.ensure(args.repository)
    subprocess.run([str(APP_PYTHON), "-m", "benchmarks.inputs"], cwd=ROOT, check=True, timeout=600)
    runner = Runner(plan, args.repository, tuple(args.only), args.out)
    runner.run()
    runner.save()
    runner.log(f"done: {args.out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The GPU benchmark, bounded by a deadline: every step that still fits, results after each one.

    python -m benchmarks.gpu.bench --models DIR --out DIR [--deadline EPOCH_S] [--work DIR]

run.sh calls it after tests/gpu; by hand it needs the same environment (onnxruntime-gpu, the
generated stubs, perf_analyzer in .cache/tools). Steps, in order of what matters most, each
skipped with a note when the time left is below its estimate:

1. conv_search   resnet50_fp16: HEURISTIC vs EXHAUSTIVE per bucket; the winner is written into
                 the config that the ceilings and the server below use (conv_search.py).
2. ceilings      in-process ONNX Runtime CUDA at every batch, the server's path: resnet50_fp16,
                 mobilenet_v2; and the ClassifyImage pipeline (decode + preprocess + ORT) on the
                 JPEGs (ceiling.py).
3. resnet50      convserve --device cuda, perf_analyzer over KServe v2 gRPC, concurrency sweep.
4. classify      convserve --device cuda, ClassifyImage with the JPEGs on mobilenet_v2 (our
                 loadgen, benchmarks/loadgen.py), concurrency sweep.
5. cuda_graphs   resnet50_fp16 per bucket (cuda_graphs.py).
6. resnet50_fp32 ceiling, for the FP16 speed-up.

Writes results.json, results.md (report.py) and servers.log into --out after every step, so a run
stopped at its deadline keeps what it measured. Exit 1 when a step failed, 0 otherwise (skipped
steps are not failures).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.gpu import ceiling, conv_search, cuda_graphs, report, serving
from benchmarks.gpu.device import no_gpu_reason

MODELS = ("resnet50_fp16", "mobilenet_v2", "resnet50")


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.deadline: float = args.deadline or time.time() + 420
        self.out: Path = args.out
        self.repo: Path = args.work / "repo"
        self.logs: Path = args.work / "logs"
        self.results: dict[str, Any] = {
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "host": host_info(),
            "env": _json(args.env),
            "tests": report.junit_summary(args.junit) if args.junit else None,
            "skipped": [],
            "errors": {},
        }

    def left(self) -> float:
        return self.deadline - time.time()

    def step(self, name: str, need_s: float, body: Callable[[], Any]) -> None:
        if self.left() < need_s:
            self.results["skipped"].append(
                f"{name}: {self.left():.0f} s left, needs about {need_s:.0f} s"
            )
        else:
            print(f"bench: {name} ({self.left():.0f} s left)", flush=True)
            start = time.time()
            try:
                self.results[name] = body()
            except Exception as exc:
                traceback.print_exc()
                self.results["errors"][name] = f"{type(exc).__name__}: {exc}"[:2000]
            print(f"bench: {name} took {time.time() - start:.0f} s", flush=True)
        self.save()

    def save(self) -> None:
        self.results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        self.results["targets"] = report.targets(self.results)
        (self.out / "results.json").write_text(json.dumps(self.results, indent=1) + "\n")
        (self.out / "results.md").write_text(report.markdown(self.results))
        with (self.out / "servers.log").open("w") as merged:  # kept current: run.sh may kill us
            for log in sorted(self.logs.glob("*.log")):
                merged.write(f"===== {log.name}\n{log.read_text(errors='replace')}\n")

    def prepare_repo(self) -> None:
        """A private copy of the models: conv_search edits its config; model files are linked."""
        shutil.rmtree(self.repo, ignore_errors=True)
        for name in MODELS:
            source = self.args.models / name
            if not source.is_dir():
                continue
            for path in source.rglob("*"):
                target = self.repo / name / path.relative_to(source)
                if path.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                elif path.suffix == ".onnx":
                    target.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        os.link(path, target)
                    except OSError:
                        shutil.copyfile(path, target)
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, target)

    def run(self) -> int:
        self.out.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.prepare_repo()
        r50, mnv2 = self.repo / "resnet50_fp16", self.repo / "mobilenet_v2"
        jpegs = serving.jpegs()

        def search() -> dict[str, Any]:
            result = conv_search.measure(r50, seconds=0.3)
            conv_search.write_winner(r50, result["winner"])
            return result

        self.step("conv_search", 60, search)
        self.step("ceiling_resnet50_fp16", 25, lambda: ceiling.tensor(r50, seconds=1.0))
        self.step("ceiling_mobilenet_v2", 20, lambda: ceiling.tensor(mnv2, seconds=0.8))
        self.step("ceiling_mobilenet_v2_jpeg", 15, lambda: ceiling.jpeg(mnv2, jpegs))
        self.step(
            "server_resnet50_fp16",
            90,
            lambda: serving.perf_sweep(self.repo, "resnet50_fp16", self.logs, self.deadline),
        )
        self.step(
            "server_mobilenet_v2_jpeg",
            45,
            lambda: serving.classify_sweep(self.repo, "mobilenet_v2", self.logs, self.deadline),
        )
        search_mode = self.results.get("conv_search", {}).get("winner", "HEURISTIC")
        self.step(
            "cuda_graphs",
            30,
            lambda: cuda_graphs.measure(r50, seconds=0.3, conv_algo_search=search_mode),
        )
        if (self.repo / "resnet50").is_dir():
            self.step(
                "ceiling_resnet50_fp32",
                25,
                lambda: ceiling.tensor(self.repo / "resnet50", seconds=0.8),
            )
        self.save()
        return 1 if self.results["errors"] else 0


def host_info() -> dict[str, Any]:
    info: dict[str, Any] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    if shutil.which("nvidia-smi"):
        query = "name,driver_version,memory.total,clocks.max.sm,power.limit"
        got = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        info["gpu"] = got.stdout.strip() or got.stderr.strip()
    return info


def _json(path: Path | None) -> Any:
    if path is None or not path.is_file():
        return None
    return json.loads(path.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True, help="the staged model folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/convserve-gpu/work"))
    parser.add_argument("--deadline", type=float, default=0.0, help="epoch seconds")
    parser.add_argument("--junit", type=Path, help="tests/gpu's JUnit XML, summarised")
    parser.add_argument("--env", type=Path, help="envcheck.py's JSON")
    args = parser.parse_args(argv)
    reason = no_gpu_reason()
    if reason is not None:
        print(f"bench: {reason}: nothing measured", file=sys.stderr)
        return 3
    return Bench(args).run()


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Run every benchmark in bounded time and write benchmarks/results/ (results.json, .md, PNGs).

    .venv/bin/python benchmarks/run.py --quick     # a few minutes: every server, every client
    .venv/bin/python benchmarks/run.py --full      # the measured run (about 30 minutes)
    .venv/bin/python benchmarks/run.py --full --only convserve transport   # a subset of servers

Steps, one at a time (never two servers at once: on a small machine they would share cores):
 1. the benchmark model repository (.cache/bench-repo), exported with `convserve export` where
    missing: lenet5_fashion, resnet18, resnet50 (random weights), mobilenet_v2 (ImageNet weights),
    speech_cnn; every model max_batch_size 64, max_queue_delay 1000 µs. Weights do not change
    compute cost, so untrained models measure the same as trained ones. A view of it,
    .cache/bench-repo-eager, adds `batch_policy: eager` to every config (symlinked versions).
 2. real encoded inputs (benchmarks/inputs.py): JPEGs, Fashion-MNIST PNGs, espeak-ng WAVs.
 3. model by model: the compute ceiling (ort_ceiling.py), then each server in turn: start it,
    wait for the model, run perf_analyzer (KServe v2 gRPC, concurrency sweep) and/or our loadgen
    (closed loop, same sweep; task-API modes for convserve), then a fixed-rate run at half the
    server's peak (the latency-at-half-load target), stop it. Servers: the transport ceiling (no
    model), convserve (batch_policy eager), convserve-delay (the exported config: Triton's
    rule), PyTriton, MLServer (parallel_workers 0; in --full also its default, 1).
 4. report.py renders the tables, the targets and the plots.

Peers need their environments: `benchmarks/peers/setup.sh` (run.py calls it when one is missing;
a peer whose environment cannot be built is skipped with a note in the results).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import report
from benchmarks.common import (
    APP_PYTHON,
    BENCH_DIR,
    BENCH_REPO,
    PERF_ANALYZER,
    RESULTS_DIR,
    ROOT,
    TOOLS,
    VENVS,
    CpuWatch,
    free_port,
    model_stats,
    running,
    wait_model_ready,
)


@dataclass(frozen=True)
class Model:
    name: str
    arch: str
    input: str  # NAME:DATATYPE:DIMS for the kserve loadgen and the peers
    output: str  # NAME:DIMS
    pretrained: bool = False


MODELS = {
    m.name: m
    for m in (
        Model("lenet5_fashion", "lenet5", "input:FP32:1,32,32", "logits:10"),
        Model("resnet18", "resnet18", "input:FP32:3,224,224", "logits:1000"),
        Model("resnet50", "resnet50", "input:FP32:3,224,224", "logits:1000"),
        Model("mobilenet_v2", "mobilenet_v2", "input:FP32:3,224,224", "logits:1000", True),
        Model("speech_cnn", "speech_cnn", "audio:FP32:16000", "logits:2"),
    )
}


@dataclass(frozen=True)
class Plan:
    name: str
    concurrency: tuple[int, ...]
    duration: float  # loadgen measured seconds
    warmup: float
    perf_interval_ms: int
    ort_seconds: float
    ort_min_runs: int
    ort_batches: tuple[int, ...]
    big_ort_batches: tuple[int, ...]  # ResNet-50 / ResNet-18 / MobileNet: seconds per run
    peer_models: tuple[str, ...]
    transport_models: tuple[str, ...]
    half_load_models: tuple[str, ...]
    mlserver_default_workers: bool  # also run MLServer with its default parallel_workers: 1


QUICK = Plan(
    name="quick",
    concurrency=(1, 16),
    duration=2.0,
    warmup=1.0,
    perf_interval_ms=1000,
    ort_seconds=0.3,
    ort_min_runs=1,
    ort_batches=(1, 8, 64),
    big_ort_batches=(1, 8),
    peer_models=("lenet5_fashion",),
    transport_models=("lenet5_fashion",),
    half_load_models=("lenet5_fashion",),
    mlserver_default_workers=False,
)
FULL = Plan(
    name="full",
    concurrency=(1, 4, 16, 64),
    duration=8.0,
    warmup=2.0,
    perf_interval_ms=2500,
    ort_seconds=3.0,
    ort_min_runs=3,
    ort_batches=(1, 2, 4, 8, 16, 32, 64),
    big_ort_batches=(1, 2, 4, 8, 16, 32, 64),
    peer_models=("lenet5_fashion", "resnet18", "resnet50"),
    transport_models=("lenet5_fashion", "resnet50"),
    half_load_models=("lenet5_fashion", "resnet50"),
    mlserver_default_workers=True,
)
SERVERS = ("transport", "convserve", "pytriton", "mlserver")
SLOW_MODELS = ("resnet18", "resnet50", "mobilenet_v2")  # tens of images/s on 2 CPU cores
# Closed-loop loadgen: channels per concurrency level (each its own TCP connection).
CHANNELS = 4


class Runner:
    def __init__(self, plan: Plan, repo: Path, only: tuple[str, ...], out: Path) -> None:
        self.plan = plan
        self.repo = repo
        self.only = only
        self.out = out
        self.rows: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.ceilings: list[dict[str, Any]] = []
        self.started = time.time()
        self.cpu = CpuWatch()
        self.eager_repo = repo.with_name(f"{repo.name}-eager")

    # ---- bookkeeping ---------------------------------------------------------------------------

    def log(self, message: str) -> None:
        print(f"[{time.time() - self.started:6.0f}s] {message}", file=sys.stderr, flush=True)

    def add(self, row: dict[str, Any]) -> None:
        row = {**row, "load": self.cpu.sample()}
        self.rows.append(row)
        p99 = row.get("p99_ms")
        self.log(
            f"  {row['server']:>9} {row['model']:>14} {row['client']:>13} "
            f"c={row.get('concurrency')!s:>3}"
            + (f" rate={row['rate']:.0f}" if row.get("rate") else "")
            + f": {row.get('throughput_rps', 0):9.1f} req/s  p50 {row.get('p50_ms', 0):8.2f}"
            f"  p99 {p99 if p99 is not None else float('nan'):8.2f} ms"
            + (f"  errors {row['errors']}" if row.get("errors") else "")
        )

    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        doc = {
            "plan": asdict(self.plan),
            "environment": environment(),
            "ort_ceiling": self.ceilings,
            "runs": self.rows,
            "notes": self.notes,
            "wall_s": time.time() - self.started,
        }
        (self.out / "results.json").write_text(json.dumps(doc, indent=1, default=str))
        report.render(doc, self.out)

    # ---- steps ---------------------------------------------------------------------------------

    def ort_ceiling(self, names: tuple[str, ...] = tuple(MODELS)) -> None:
        for name in names:
            big = name in ("resnet18", "resnet50", "mobilenet_v2")
            batches = self.plan.big_ort_batches if big else self.plan.ort_batches
            self.log(f"ORT ceiling {name} at batch sizes {batches}")
            proc = subprocess.run(
                [str(APP_PYTHON), "-m", "benchmarks.ort_ceiling", "--repository", str(self.repo),
                 "--models", name, "--seconds", str(self.plan.ort_seconds),
                 "--min-runs", str(self.plan.ort_min_runs),
                 "--batch-sizes", ",".join(map(str, batches))],
                cwd=ROOT, capture_output=True, text=True, timeout=900,
            )  # fmt: skip
            if proc.returncode != 0:
                self.notes.append(f"ORT ceiling {name} failed: {proc.stderr[-500:]}")
                continue
            result = json.loads(proc.stdout)[0]
            result["load"] = self.cpu.sample()
            self.ceilings.append(result)
            self.log(
                f"  {name}: best batch {result['best_batch']}, "
                f"{result['ceiling_rows_per_s']:.1f} rows/s"
            )

    def perf_sweep(self, server: str, model: Model, port: int) -> None:
        if not PERF_ANALYZER.is_file():
            self.notes.append("perf_analyzer missing: run scripts/install_test_tools.sh")
            return
        for c in self.plan.concurrency:
            slow = model.name in SLOW_MODELS
            row = perf_analyzer(port, model.name, c, self.plan.perf_interval_ms, slow=slow)
            self.add({"server": server, "model": model.name, "client": "perf_analyzer",
                      "api": "kserve", **row})  # fmt: skip

    def loadgen_sweep(
        self, server: str, model: Model, port: int, mode: str = "kserve", images: str = "jpeg"
    ) -> list[dict[str, Any]]:
        rows = []
        for c in self.plan.concurrency:
            result = self.loadgen(port, model, mode, concurrency=c, images=images)
            if result is None:
                continue
            before, after = result.pop("_stats")
            row = {"server": server, "model": model.name, "client": "loadgen", "api": mode,
                   **result, **batch_stats(before, after)}  # fmt: skip
            if mode == "classify":
                row["api"] = f"classify-{images}"
            self.add(row)
            rows.append(row)
        return rows

    def loadgen(
        self,
        port: int,
        model: Model,
        mode: str,
        *,
        concurrency: int,
        rate: float = 0.0,
        images: str = "jpeg",
    ) -> dict[str, Any] | None:
        plan = self.plan
        duration = plan.duration
        if model.name in SLOW_MODELS and concurrency >= 64 and not rate:
            # 64 ResNet-50 images in flight take seconds each: a short window would count
            # whole batches or none (completions arrive in lumps of ~20).
            duration *= 3
        cmd = [
            str(APP_PYTHON), "-m", "benchmarks.loadgen", "--target", f"127.0.0.1:{port}",
            "--mode", mode, "--model", model.name, "--concurrency", str(concurrency),
            "--channels", str(CHANNELS), "--duration", str(duration),
            "--warmup", str(plan.warmup), "--images", images,
        ]  # fmt: skip
        if mode == "kserve":
            cmd += ["--input", model.input]
        if rate:
            cmd += ["--rate", f"{rate:.3f}"]
        before = model_stats(port, model.name)
        limit = 120 + duration + plan.warmup
        try:
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=limit)
        except subprocess.TimeoutExpired:
            self.notes.append(f"loadgen {model.name} {mode} c={concurrency} timed out")
            return None
        after = model_stats(port, model.name)
        if not proc.stdout.strip():
            self.notes.append(f"loadgen {model.name} {mode} c={concurrency}: {proc.stderr[-400:]}")
            return None
        result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        result["_stats"] = (before, after)
        return result

    def half_load(self, server: str, model: Model, port: int, sweep: list[dict[str, Any]]) -> None:
        """Fixed rate at half the closed-loop peak: p99 against the latency target."""
        if model.name not in self.plan.half_load_models or not sweep:
            return
        peak = max(r["throughput_rps"] for r in sweep)
        rate = peak / 2
        result = self.loadgen(port, model, "kserve", concurrency=64, rate=rate)
        if result is None:
            return
        before, after = result.pop("_stats")
        self.add({**result, "server": server, "model": model.name, "client": "loadgen-rate",
                  "api": "kserve", "peak_rps": peak, **batch_stats(before, after)})  # fmt: skip
        if server.startswith("mlserver") or not PERF_ANALYZER.is_file():
            return  # MLServer has no ModelConfig: perf_analyzer cannot drive it
        before = model_stats(port, model.name)
        row = perf_analyzer(port, model.name, 0, self.plan.perf_interval_ms, rate=rate)
        after = model_stats(port, model.name)
        self.add({**row, "server": server, "model": model.name, "client": "perf_analyzer-rate",
                  "api": "kserve", "peak_rps": peak, **batch_stats(before, after)})  # fmt: skip

    def run_server(self, server: str, model: Model, body: Callable[[int], None]) -> None:
        self.log(f"{server}: {model.name}")
        try:
            with self.server(server, model) as port:
                wait_model_ready(port, model.name, timeout=300)
                body(port)
        except Exception as exc:
            self.notes.append(f"{server} {model.name}: {type(exc).__name__}: {exc}"[:2000])
            self.log(f"  FAILED: {traceback.format_exc(limit=3)}")
        self.save()

    @contextmanager
    def server(self, server: str, model: Model) -> Iterator[int]:
        port = free_port()
        onnx = str(self.repo / model.name / "1" / "model.onnx")
        peers = BENCH_DIR / "peers"
        if server == "transport":
            cmd = argv(
                APP_PYTHON,
                "-m",
                "benchmarks.transport_ceiling",
                repository=self.repo,
                model=model.name,
                port=port,
            )
            with running(server, cmd, port=port, ready=r"transport serving"):
                yield port
        elif server in ("convserve", "convserve-delay"):
            # convserve: batch_policy eager (configs in the -eager view); convserve-delay: the
            # configs as exported (batch_policy delay, Triton's rule: today's default).
            repo = self.repo if server == "convserve-delay" else self.eager_repo
            cmd = argv(
                APP_PYTHON,
                "-m",
                "convserve",
                "serve",
                repository=repo,
                grpc_host="127.0.0.1",
                grpc_port=port,
                metrics_port=-1,
                load_models=model.name,
                device="cpu",
                log_level="WARNING",
            )
            with running(server, cmd, port=port, ready=r"convserve serving", timeout=600):
                yield port
        elif server == "pytriton":
            cmd = argv(
                VENVS / "pytriton" / "bin" / "python",
                peers / "pytriton_server.py",
                onnx=onnx,
                name=model.name,
                input=_peer_tensor(model.input),
                output=model.output,
                grpc_port=port,
                http_port=free_port(),
                metrics_port=free_port(),
            )
            # The Triton binary in the wheel links libpython: point it at this interpreter's.
            libdir = sysconfig.get_config_var("LIBDIR") or ""
            paths = (libdir, os.environ.get("LD_LIBRARY_PATH", ""))
            env = {"LD_LIBRARY_PATH": os.pathsep.join(p for p in paths if p)}
            with running(server, cmd, port=port, ready=r"pytriton serving", env=env):
                yield port
        else:  # mlserver (parallel_workers 0), mlserver-pw1 (MLServer's default, 1 worker)
            workers = 1 if server == "mlserver-pw1" else 0
            with tempfile.TemporaryDirectory(prefix="mlserver-bench-") as work:
                cmd = argv(
                    VENVS / "mlserver" / "bin" / "python",
                    peers / "mlserver_server.py",
                    onnx=onnx,
                    name=model.name,
                    grpc_port=port,
                    http_port=free_port(),
                    metrics_port=free_port(),
                    workdir=work,
                    parallel_workers=workers,
                )
                with running(server, cmd, port=port):
                    yield port  # fmt: skip

    # ---- the whole plan ------------------------------------------------------------------------

    def run(self) -> None:
        """Model by model, every server in a row: the numbers compared with each other are taken
        minutes apart, not half an hour (the load of a shared machine drifts)."""
        wanted = set(self.only or SERVERS)
        peers = [p for p in ("pytriton", "mlserver") if p in wanted]
        for peer in list(peers):
            if not ensure_peer(peer, self.log):
                self.notes.append(f"{peer}: environment could not be built; skipped")
                peers.remove(peer)
        for m in MODELS.values():
            self.ort_ceiling((m.name,))
            self.save()
            if "transport" in wanted and m.name in self.plan.transport_models:
                self.run_server("transport", m, self.transport_body(m))
            if "convserve" in wanted:
                self.run_server("convserve", m, self.convserve_body(m))
                if m.name == "lenet5_fashion":
                    self.run_server("convserve-delay", m, self.kserve_body("convserve-delay", m))
            if m.name not in self.plan.peer_models:
                continue
            for peer in peers:
                self.run_server(peer, m, self.kserve_body(peer, m))
                # MLServer's own default (one worker process), for LeNet-5 only: it is slower.
                default_workers = self.plan.mlserver_default_workers and m.name == "lenet5_fashion"
                if peer == "mlserver" and default_workers:
                    self.run_server("mlserver-pw1", m, self.kserve_body("mlserver-pw1", m))

    def transport_body(self, m: Model) -> Callable[[int], None]:
        def body(port: int) -> None:
            self.perf_sweep("transport", m, port)
            self.loadgen_sweep("transport", m, port)

        return body

    def kserve_body(self, server: str, m: Model) -> Callable[[int], None]:
        """KServe v2 tensors: perf_analyzer (not MLServer: it has no ModelConfig), our loadgen,
        then the fixed rate at half the peak."""

        def body(port: int) -> None:
            if not server.startswith("mlserver"):
                self.perf_sweep(server, m, port)
            sweep = self.loadgen_sweep(server, m, port)
            if server != "mlserver-pw1":
                self.half_load(server, m, port, sweep)

        return body

    def convserve_body(self, m: Model) -> Callable[[int], None]:
        def body(port: int) -> None:
            if m.name == "mobilenet_v2":  # end to end: JPEG decoding, resize, crop, normalise
                self.loadgen_sweep("convserve", m, port, "classify", "jpeg")
                self.perf_sweep("convserve", m, port)
            elif m.name == "speech_cnn":  # end to end: WAV decoding, resampling, windows
                self.loadgen_sweep("convserve", m, port, "speech")
            else:
                self.kserve_body("convserve", m)(port)
                if m.name == "lenet5_fashion":  # ClassifyImage with Fashion-MNIST PNGs
                    self.loadgen_sweep("convserve", m, port, "classify", "png")

        return body


def argv(*parts: object, **flags: object) -> list[str]:
    """A command line: positional parts, then `--flag-name value` for each keyword."""
    out = [str(p) for p in parts]
    for key, value in flags.items():
        out += [f"--{key.replace('_', '-')}", str(value)]
    return out


def _peer_tensor(spec: str) -> str:
    name, _, dims = spec.split(":")
    return f"{name}:{dims}"


def batch_stats(before: tuple[int, int], after: tuple[int, int]) -> dict[str, Any]:
    rows, batches = after[0] - before[0], after[1] - before[1]
    return {"server_mean_batch": rows / batches} if batches > 0 else {}


def perf_analyzer(
    port: int,
    model: str,
    concurrency: int,
    interval_ms: int,
    *,
    slow: bool = False,
    rate: float = 0.0,
) -> dict[str, Any]:
    """One perf_analyzer measurement (3+ windows) at a fixed concurrency, from its CSV.

    Windows are `interval_ms` long; for slow models (ResNet at tens of images/s, where a
    window of a second or two holds a handful of replies) they are counted in requests instead.
    Stability is loosened to 100%: on a shared machine successive windows differ by more than
    perf_analyzer's default 10%, and an "unstable" run writes no result at all.
    """
    with tempfile.TemporaryDirectory() as tmp:
        report_csv = Path(tmp) / "perf.csv"
        cmd = [
            str(PERF_ANALYZER), "-m", model, "-u", f"127.0.0.1:{port}", "-i", "grpc",
            "-p", str(interval_ms), "--max-trials", "4", "--stability-percentage", "100",
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


def ensure_repository(repo: Path, log: Callable[[str], None]) -> None:
    for m in MODELS.values():
        if (repo / m.name / "1" / "model.onnx").is_file():
            continue
        log(f"exporting {m.arch} as {m.name} into {repo}")
        cmd = [
            str(APP_PYTHON),
            "-m",
            "convserve",
            "export",
            m.arch,
            "--repository",
            str(repo),
            "--name",
            m.name,
            "--max-batch-size",
            "64",
            "--max-queue-delay-us",
            "1000",
        ]
        if m.pretrained:
            cmd.append("--pretrained")
        subprocess.run(cmd, cwd=ROOT, check=True, timeout=900)  # fmt: skip


def policy_repository(repo: Path, policy: str) -> Path:
    """A view of `repo` whose configs set `batch_policy` (version folders are symlinks)."""
    view = repo.with_name(f"{repo.name}-{policy}")
    for m in MODELS.values():
        source, target = repo / m.name, view / m.name
        target.mkdir(parents=True, exist_ok=True)
        for item in source.iterdir():
            link = target / item.name
            if item.is_dir() and not link.exists():
                link.symlink_to(item.resolve())
            elif item.is_file() and item.name != "config.pbtxt":  # labels: must be inside
                link.unlink(missing_ok=True)
                shutil.copyfile(item, link)
        text = (source / "config.pbtxt").read_text()
        text += f'parameters {{ key: "batch_policy" value: {{ string_value: "{policy}" }} }}\n'
        (target / "config.pbtxt").write_text(text)
    return view


def ensure_peer(peer: str, log: Callable[[str], None]) -> bool:
    if (VENVS / peer / "bin" / "python").is_file() and _peer_imports(peer):
        return True
    log(f"building the {peer} environment (benchmarks/peers/setup.sh {peer})")
    proc = subprocess.run(
        ["bash", str(BENCH_DIR / "peers" / "setup.sh"), peer], cwd=ROOT, timeout=1200
    )
    return proc.returncode == 0 and _peer_imports(peer)


def _peer_imports(peer: str) -> bool:
    module = {"pytriton": "pytriton.triton", "mlserver": "mlserver"}[peer]
    python = VENVS / peer / "bin" / "python"
    probe = f"import {module}, onnxruntime"
    return (
        subprocess.run([str(python), "-c", probe], capture_output=True, timeout=120).returncode == 0
    )


def environment() -> dict[str, Any]:
    def version(python: Path, module: str) -> str:
        if not python.is_file():
            return "-"
        code = f"import importlib.metadata as m; print(m.version('{module}'))"
        proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
        return proc.stdout.strip() or "-"

    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpu": "none (no GPU on this machine; GPU targets not measurable)",
        "python": sys.version.split()[0],
        "onnxruntime": version(APP_PYTHON, "onnxruntime-gpu"),
        "grpcio": version(APP_PYTHON, "grpcio"),
        "nvidia-pytriton": version(VENVS / "pytriton" / "bin" / "python", "nvidia-pytriton"),
        "mlserver": version(VENVS / "mlserver" / "bin" / "python", "mlserver"),
        "peer onnxruntime": version(VENVS / "mlserver" / "bin" / "python", "onnxruntime"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--quick", action="store_true", help="a few minutes: check it all runs")
    mode.add_argument("--full", action="store_true", help="the measured run")
    parser.add_argument("--only", nargs="+", choices=SERVERS, default=(), help="servers to run")
    parser.add_argument("--repository", type=Path, default=BENCH_REPO)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    plan = FULL if args.full else QUICK
    runner = Runner(plan, args.repository, tuple(args.only), args.out)
    ensure_repository(args.repository, runner.log)
    policy_repository(args.repository, "eager")
    subprocess.run([str(APP_PYTHON), "-m", "benchmarks.inputs"], cwd=ROOT, check=True, timeout=300)
    runner.run()
    runner.save()
    runner.log(f"done: {args.out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

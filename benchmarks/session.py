"""One benchmark run's bookkeeping and measurements: results.json, the log, and one row per run
of a client against a started server (benchmarks/clients.py), with the machine's other load
(CpuWatch), the server's batch statistics and its CPU per request.

benchmarks/run.py's Runner builds on it: what to measure; this module: how one measurement
becomes a row.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.bench_repo import Model
from benchmarks.clients import perf_analyzer, python_client
from benchmarks.common import CpuWatch, model_stats
from benchmarks.cputree import TreeCpu
from benchmarks.plans import Plan, environment
from benchmarks.servers import Running

SLOW_MODELS = ("resnet18", "resnet50", "mobilenet_v2")  # tens of images/s on 2 CPU cores
CHANNELS = 4  # gRPC loadgen: channels (TCP connections) per run


class Session:
    def __init__(self, plan: Plan, out: Path) -> None:
        self.plan, self.out = plan, out
        self.doc: dict[str, Any] = {
            "plan": asdict(plan),
            "environment": environment(),
            "ort_ceiling": [],
            "pipeline_ceiling": [],
            "runs": [],
            "notes": [],
        }
        self.started = time.time()
        self.cpu = CpuWatch()

    def log(self, message: str) -> None:
        print(f"[{time.time() - self.started:6.0f}s] {message}", file=sys.stderr, flush=True)

    def note(self, message: str) -> None:
        self.doc["notes"].append(message[:2000])
        self.log(f"  NOTE {message[:300]}")

    def save(self) -> None:
        self.doc["wall_s"] = time.time() - self.started
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "results.json").write_text(json.dumps(self.doc, indent=1, default=str))
        report.render(self.doc, self.out)

    def add(self, row: dict[str, Any]) -> dict[str, Any]:
        row = {**row, "load": self.cpu.sample()}
        self.doc["runs"].append(row)
        cpu = row.get("server_cpu_us_per_request")
        self.log(
            f"  {row['server']:>15} {row['model']:>14} {row['client']:>13} {row['api']:>13} "
            f"c={row.get('concurrency')!s:>3}: {row.get('throughput_rps', 0):8.1f} req/s  "
            f"p50 {row.get('p50_ms', 0):7.2f}  p99 {row.get('p99_ms', 0):7.2f} ms"
            + (f"  cpu {cpu:6.0f} µs/req" if cpu else "")
            + (f"  errors {row['errors']}" if row.get("errors") else "")
        )
        return row

    def measure(
        self,
        r: Running,
        meter: TreeCpu,
        m: Model,
        client: str,
        api: str,
        c: int,
        *,
        rate: float = 0.0,
        extra: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        """One run of one of our clients against `r`: a row, with batch statistics and CPU."""
        plan = self.plan
        duration = plan.duration * (3 if m.name in SLOW_MODELS and c >= 64 else 1)
        port = r.http_port if client == "http_load" else r.grpc_port
        args = [
            "--target",
            f"127.0.0.1:{port}",
            "--model",
            m.name,
            "--concurrency",
            str(c),
            "--duration",
            str(duration),
            "--warmup",
            str(plan.warmup),
            *extra,
        ]
        if rate:
            args += ["--rate", f"{rate:.3f}"]
        if client == "loadgen":
            args += ["--channels", str(CHANNELS)]
        before = model_stats(r.grpc_port, m.name)
        result = python_client(client, args, meter, timeout=180 + duration + plan.warmup)
        after = model_stats(r.grpc_port, m.name)
        rows, batches = after[0] - before[0], after[1] - before[1]
        batch = {"server_mean_batch": rows / batches} if batches > 0 else {}
        protocol = "http" if client == "http_load" else "grpc"
        return self.add(
            {
                "concurrency": c,
                **result,
                "server": r.name,
                "model": m.name,
                "client": client + ("-rate" if rate else ""),
                "api": api,
                "protocol": protocol,
                **batch,
            }
        )

    def sweep(
        self,
        r: Running,
        meter: TreeCpu,
        m: Model,
        client: str,
        api: str,
        extra: tuple[str, ...],
        levels: tuple[int, ...] | None = None,
    ) -> list[dict[str, Any]]:
        levels = levels or self.levels(m)
        return [self.measure(r, meter, m, client, api, c, extra=extra) for c in levels]

    def levels(self, m: Model) -> tuple[int, ...]:
        return self.plan.concurrency if m.default else self.plan.slow_concurrency

    def perf_sweep(self, r: Running, m: Model, protocol: str = "grpc") -> None:
        levels = self.levels(m) if protocol == "grpc" else self.plan.http_concurrency
        port = r.grpc_port if protocol == "grpc" else r.http_port
        for c in levels:
            row = perf_analyzer(
                port,
                m.name,
                c,
                self.plan.perf_interval_ms,
                slow=m.name in SLOW_MODELS,
                protocol=protocol,
            )
            api = "kserve" if protocol == "grpc" else "kserve-binary"
            self.add(
                {
                    "concurrency": c,
                    **row,
                    "server": r.name,
                    "model": m.name,
                    "client": "perf_analyzer",
                    "api": api,
                    "protocol": protocol,
                }
            )

    def half_load(self, r: Running, meter: TreeCpu, m: Model, sweep: list[dict[str, Any]]) -> None:
        """A fixed rate at half the closed-loop peak: latency when the server is not saturated."""
        peaks = [row["throughput_rps"] for row in sweep if row.get("throughput_rps")]
        if m.name not in self.plan.half_load_models or not peaks:
            return
        rate = max(peaks) / 2
        row = self.measure(
            r,
            meter,
            m,
            "loadgen",
            "kserve",
            64,
            rate=rate,
            extra=("--mode", "kserve", "--input", m.input),
        )
        row["peak_rps"] = max(peaks)

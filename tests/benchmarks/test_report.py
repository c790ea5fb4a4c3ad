"""benchmarks/report.py and report_targets.py on a results document drawn at random: the #11
targets table says yes exactly when the measured figures meet them, every section renders, and
the plots are written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import render
from benchmarks.report_targets import targets

LENET = "lenet5_fashion"


def run(server: str, c: int, rps: float, **extra: Any) -> dict[str, Any]:
    return {
        "server": server, "model": LENET, "client": "loadgen", "api": "kserve",
        "protocol": "grpc", "concurrency": c, "throughput_rps": rps, "rows_per_s": rps,
        "p50_ms": 1.0, "p90_ms": 2.0, "p99_ms": 3.0, "errors": {},
        "load": {"others_cores": 0.1, "others_top": ["x 0.10"]}, **extra,
    }  # fmt: skip


def document(rng: np.random.Generator) -> dict[str, Any]:
    ours, triton, floor = (float(v) for v in rng.uniform(500, 3000, 3))
    p50, floor_p50 = (float(v) for v in rng.uniform(0.3, 2.0, 2))
    cpu, floor_cpu = (float(v) for v in rng.uniform(200, 900, 2))
    c64 = float(rng.uniform(0.8, 1.1))
    served, ceiling = (float(v) for v in rng.uniform(50, 150, 2))
    runs = [
        run("convserve", 1, ours / 3, p50_ms=p50),
        run("convserve", 16, ours, server_cpu_us_per_request=cpu, server_cores=1.0),
        run("convserve", 64, ours * c64),
        run("transport", 1, floor / 2, p50_ms=floor_p50),
        run("transport", 16, floor, server_cpu_us_per_request=floor_cpu, server_cores=1.0),
        run("pytriton", 64, triton),
        {**run("convserve", 16, served), "api": "classify-png"},
        {**run("convserve", 16, ours / 2), "protocol": "http", "client": "http_load",
         "api": "kserve-binary"},
    ]  # fmt: skip
    pipeline = {"model": LENET, "input": "png", "ceiling_items_per_s": ceiling, "best_batch": 8,
                "ceiling_audio_s_per_s": 0.0, "preprocess_threads": 2, "runs": []}  # fmt: skip
    ort = {"model": LENET, "ceiling_rows_per_s": 5e4, "best_batch": 64,
           "batches": [{"batch": 64, "rows_per_s": 5e4, "batch_ms_p50": 1.3}]}  # fmt: skip
    truth = {
        "LeNet-5 peak ≥ 1.2× pytriton (loadgen)": ours >= 1.2 * triton,
        "LeNet-5 peak ≥ 0.75× transport (loadgen)": max(ours, ours * c64) >= 0.75 * floor,
        "LeNet-5 c=1 p50 ≤ transport's + 0.5 ms (loadgen)": p50 <= floor_p50 + 0.5,
        f"{LENET}: c=64 ≥ 0.95× c=16 (loadgen)": c64 >= 0.95,
        "LeNet-5 server CPU per request at c=16 ≤ 1.3× transport's (loadgen)": cpu
        <= 1.3 * floor_cpu,
        f"{LENET} classify-png: task API ≥ 0.9× pipeline ceiling": served >= 0.9 * ceiling,
    }
    doc = {"plan": {"name": "quick"}, "environment": {"cores": 2}, "runs": runs, "notes": [],
           "ort_ceiling": [ort], "pipeline_ceiling": [pipeline], "truth": truth}  # fmt: skip
    if ours * c64 > ours:  # the peak is at c=64 then
        truth["LeNet-5 peak ≥ 1.2× pytriton (loadgen)"] = ours * c64 >= 1.2 * triton
    return doc


def test_targets_say_yes_exactly_when_met() -> None:
    rng = np.random.default_rng()
    for _ in range(20):
        doc = document(rng)
        table = {
            line.split(" | ")[0].lstrip("| "): line.rsplit(" | ", 1)[1].rstrip(" |")
            for line in targets(doc)
            if line.startswith("| ") and " | " in line
        }
        for target, met in doc["truth"].items():
            assert table[target] == ("yes" if met else "**no**"), (target, table)


def test_render_writes_every_section_and_plot(tmp_path: Path) -> None:
    doc = document(np.random.default_rng())
    render(doc, tmp_path)
    text = (tmp_path / "results.md").read_text()
    for heading in ("Targets of issue #11", "Compute ceiling", "pipeline ceiling",
                    "CPU per request", "c=64 / c=16", "HTTP beside gRPC", "Smoke run"):  # fmt: skip
        assert heading in text
    for plot in (f"{LENET}.png", "ort_ceiling.png", "pipeline.png", "cpu.png", "http.png"):
        assert (tmp_path / plot).stat().st_size > 1000

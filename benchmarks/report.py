"""results.json -> results.md (tables, targets) and PNG plots, in benchmarks/results/.

.venv/bin/python -m benchmarks.report [benchmarks/results]   # re-render without re-running

Sections: the #11 targets (report_targets.py); ceilings (in-process ONNX Runtime; decode +
preprocess + ONNX Runtime for the task API); server CPU per request; c=64 vs c=16; the HTTP path
beside gRPC (#12); long audio and streaming; then every measurement, model by model; latency at
half load; notes. Plots: report_plots.py.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_repo import MODEL_ORDER
from benchmarks.common import RESULTS_DIR
from benchmarks.report_plots import plots
from benchmarks.report_sections import (
    SERVER_ORDER,
    Row,
    audio_table,
    collapse_table,
    cpu_table,
    http_table,
    ms,
    num,
    ordered,
    pipeline_table,
    rank,
)
from benchmarks.report_targets import at, targets


def render(doc: dict[str, Any], out: Path) -> None:
    runs = [r for r in doc["runs"] if r.get("throughput_rps")]
    lines = [*header(doc), *targets(doc), *ort_table(doc.get("ort_ceiling", []))]
    lines += pipeline_table(doc) + cpu_table(runs) + collapse_table(runs) + http_table(runs)
    lines += audio_table(runs)
    for model in ordered({r["model"] for r in runs}):
        lines += model_table(model, runs)
    lines += half_load_table(runs)
    if doc.get("notes"):
        lines += ["## Notes from the run", "", *(f"- {n}" for n in doc["notes"]), ""]
    failed = [r for r in doc["runs"] if not r.get("throughput_rps")]
    if failed:
        lines += ["## Measurements that produced no number", ""]
        lines += [
            f"- {r['server']} {r['model']} {r['client']} {r.get('api')} "
            f"c={r.get('concurrency')}: {str(r.get('errors'))[:300]}"
            for r in failed
        ]
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text("\n".join(lines) + "\n")
    plots(doc, out)


def header(doc: dict[str, Any]) -> list[str]:
    env, plan = doc.get("environment", {}), doc.get("plan", {})
    others = [r["load"]["others_cores"] for r in doc["runs"] if "load" in r]
    busiest: dict[str, int] = {}
    for r in doc["runs"]:
        for t in r.get("load", {}).get("others_top", []):
            busiest[t.rsplit(" ", 1)[0]] = busiest.get(t.rsplit(" ", 1)[0], 0) + 1
    name = plan.get("name", "quick")
    lines = [
        "# convserve benchmarks",
        "",
        f"Plan `{name}`, wall time {doc.get('wall_s', 0) / 60:.1f} min, commit "
        f"{env.get('commit', '?')}. Regenerate with `.venv/bin/python benchmarks/run.py --{name}`.",
        "",
    ]
    if name != "full":
        lines += [
            "**Smoke run** (`--quick`: seconds per figure, a few concurrencies): it shows "
            "that every part runs, not what the servers can do.",
            "",
        ]
    lines += [
        f"- Machine: {env.get('cpu')}, {env.get('cores')} cores; GPU: {env.get('gpu')}.",
        f"- Software: Python {env.get('python')}, onnxruntime {env.get('onnxruntime')} (convserve)"
        f" / {env.get('peer onnxruntime')} (peers), grpcio {env.get('grpcio')}, uvicorn "
        f"{env.get('uvicorn')}, nvidia-pytriton {env.get('nvidia-pytriton')}, mlserver "
        f"{env.get('mlserver')}; HTTP client aiohttp {env.get('aiohttp')}.",
        "- Default configurations: the repository as `convserve export` / `build-defaults` write "
        "it (max batch 64, max queue delay 1000 µs, eager batching: `convserve`); "
        "`convserve-delay` names Triton's rule instead; the peers get the same max batch and "
        "delay with their own rule. Same ONNX file, CPU execution provider, one instance; "
        "server and client share the machine; one server at a time.",
    ]
    if others:
        top = ", ".join(sorted(busiest, key=lambda k: -busiest[k])[:4])
        lines.append(
            f"- Contention: other processes used a median of {statistics.median(others):.2f} "
            f"cores (max {max(others):.2f}) of {env.get('cores')} during the measurements"
            + (f"; busiest: {top}" if top else "")
            + ". Throughput under contention is lower and noisier; CPU per request much less so."
        )
    lines += [
        "- Clients: `perf_analyzer` (Triton's C++ client: KServe v2 gRPC, or `-i http` with "
        "binary tensors), `loadgen` (Python grpc.aio, 4 channels: `kserve` = ModelInfer with a "
        "random tensor, `classify-*` = ClassifyImage with real JPEG/PNG files, `speech-*` = "
        "DetectSpeech with 1/10/60-s WAVs), `http_load` (Python aiohttp: KServe v2 REST with "
        "JSON or binary tensors), `stream_speech` (StreamDetectSpeech, 250-ms chunks). Closed "
        "loop unless a rate is given; c = requests in flight; latencies client-side, ms. Server "
        "CPU = user + system time of the server's whole process tree (/proc) in the measured "
        "window, divided by the requests completed in it.",
        "",
    ]
    return lines


def ort_table(ceilings: list[Row]) -> list[str]:
    if not ceilings:
        return []
    sizes = sorted({b["batch"] for c in ceilings for b in c["batches"]})
    lines = [
        "## Compute ceiling: in-process ONNX Runtime (rows/s; ms per batch)",
        "",
        "| model | " + " | ".join(f"batch {s}" for s in sizes) + " | best |",
        "|---" * (len(sizes) + 2) + "|",
    ]
    for c in sorted(ceilings, key=lambda c: rank(c["model"], MODEL_ORDER)):
        by = {b["batch"]: b for b in c["batches"]}
        cells = [
            f"{by[s]['rows_per_s']:.1f} ({ms(by[s]['batch_ms_p50'])} ms)" if s in by else "-"
            for s in sizes
        ]
        lines.append(
            f"| {c['model']} | {' | '.join(cells)} | **{c['ceiling_rows_per_s']:.1f}** "
            f"@ {c['best_batch']} |"
        )
    return [*lines, ""]


def model_table(model: str, runs: list[Row]) -> list[str]:
    rows = [r for r in runs if r["model"] == model and not r["client"].endswith("-rate")]
    rows.sort(
        key=lambda r: (
            r.get("protocol", ""),
            r["api"],
            r["client"],
            rank(r["server"], SERVER_ORDER),
            r.get("concurrency") or 0,
        )
    )
    lines = [
        f"## {model}: every measurement",
        "",
        "| server | protocol | client | api | c | req/s | p50 | p90 | p99 | errors | mean batch"
        " | CPU µs/req | vs PyTriton | vs MLServer |",
        "|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        same = {
            "model": model,
            "client": r["client"],
            "api": r["api"],
            "protocol": r.get("protocol"),
        }

        def vs(peer: str, r: Row = r, same: dict[str, Any] = same) -> str:
            other = at(runs, r.get("concurrency") or 0, server=peer, **same)
            if r["server"] == peer or other is None:
                return ""
            return f"{r['throughput_rps'] / other['throughput_rps']:.2f}×"

        errors = r.get("errors") or {}
        lines.append(
            f"| {r['server']} | {r.get('protocol', 'grpc')} | {r['client']} | {r['api']} | "
            f"{r.get('concurrency')} | {r['throughput_rps']:.1f} | {ms(r.get('p50_ms'))} | "
            f"{ms(r.get('p90_ms'))} | {ms(r.get('p99_ms'))} | "
            f"{sum(errors.values()) if isinstance(errors, dict) and errors else ''} | "
            f"{num(r.get('server_mean_batch'))} | {num(r.get('server_cpu_us_per_request'), 0)} | "
            f"{vs('pytriton')} | {vs('mlserver')} |"
        )
    return [*lines, ""]


def half_load_table(runs: list[Row]) -> list[str]:
    rows = [r for r in runs if r["client"].endswith("-rate")]
    if not rows:
        return []
    lines = [
        "## Latency at half of peak load (open loop, fixed rate, our loadgen)",
        "",
        "| model | server | peak req/s | rate | achieved | p50 | p90 | p99 | mean batch |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in sorted(
        rows, key=lambda r: (rank(r["model"], MODEL_ORDER), rank(r["server"], SERVER_ORDER))
    ):
        lines.append(
            f"| {r['model']} | {r['server']} | {num(r.get('peak_rps'))} | "
            f"{num(r.get('rate'))} | {r['throughput_rps']:.1f} | {ms(r['p50_ms'])} | "
            f"{ms(r['p90_ms'])} | {ms(r['p99_ms'])} | "
            f"{num(r.get('server_mean_batch'))} |"
        )
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else RESULTS_DIR
    render(json.loads((out / "results.json").read_text()), out)
    print(out / "results.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())

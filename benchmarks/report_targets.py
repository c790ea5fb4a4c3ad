"""The targets of issue #11 as a table: each with the figure measured and whether it is met.

Figures come from the closed-loop KServe v2 gRPC runs unless a target names another path:
  LeNet-5 peak ≥ 1.2× PyTriton's and ≥ 0.75× the no-model transport server's (each client);
  LeNet-5 c=1 p50 ≤ the transport server's + 0.5 ms (each client);
  ResNet-18 best images/s ≥ 0.95× in-process ONNX Runtime at its best batch;
  c=64 ≥ 0.95× c=16 for every default model (our loadgen);
  server CPU per request for LeNet-5 at c=16 ≤ 1.3× the transport server's (our loadgen);
  convserve's task API ≥ 0.9× the in-process pipeline ceiling of each case.
"""

from __future__ import annotations

from typing import Any

from benchmarks.bench_repo import DEFAULT_MODELS

LENET = "lenet5_fashion"
Row = dict[str, Any]


def pick(runs: list[Row], **want: Any) -> list[Row]:
    """Runs whose fields equal `want` (api defaults to gRPC KServe); measured ones only."""
    want.setdefault("api", "kserve")
    want.setdefault("protocol", "grpc")
    return [
        r for r in runs if r.get("throughput_rps") and all(r.get(k) == v for k, v in want.items())
    ]


def peak(runs: list[Row], **want: Any) -> Row | None:
    found = pick(runs, **want)
    return max(found, key=lambda r: r["throughput_rps"]) if found else None


def at(runs: list[Row], c: int, **want: Any) -> Row | None:
    return next(iter(pick(runs, concurrency=c, **want)), None)


def targets(doc: dict[str, Any]) -> list[str]:
    runs: list[Row] = doc["runs"]
    ceilings = {c["model"]: c for c in doc.get("ort_ceiling", [])}
    lines = [
        "## Targets of issue #11 (this machine, this run, under the contention stated above)",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]

    def row(target: str, measured: str, ok: bool | None) -> None:
        lines.append(f"| {target} | {measured} | {'n/a' if ok is None else yes(ok)} |")

    for client in ("loadgen", "perf_analyzer"):
        ours = peak(runs, server="convserve", model=LENET, client=client)
        for other, factor in (("pytriton", 1.2), ("transport", 0.75)):
            theirs = peak(runs, server=other, model=LENET, client=client)
            if ours and theirs:
                ratio = ours["throughput_rps"] / theirs["throughput_rps"]
                row(
                    f"LeNet-5 peak ≥ {factor}× {other} ({client})",
                    f"{ours['throughput_rps']:.0f} (c={ours['concurrency']}) vs "
                    f"{theirs['throughput_rps']:.0f} (c={theirs['concurrency']}) req/s = "
                    f"{ratio:.2f}×",
                    ratio >= factor,
                )
    for client in ("loadgen", "perf_analyzer"):
        ours = at(runs, 1, server="convserve", model=LENET, client=client)
        floor = at(runs, 1, server="transport", model=LENET, client=client)
        if ours and floor:
            extra = ours["p50_ms"] - floor["p50_ms"]
            row(
                f"LeNet-5 c=1 p50 ≤ transport's + 0.5 ms ({client})",
                f"{ours['p50_ms']:.2f} vs {floor['p50_ms']:.2f} ms ({extra:+.2f} ms)",
                extra <= 0.5,
            )
    r18, best = ceilings.get("resnet18"), peak(runs, server="convserve", model="resnet18")
    for client in ("loadgen", "perf_analyzer"):
        cand = peak(runs, server="convserve", model="resnet18", client=client)
        if cand and (best is None or cand["rows_per_s"] > best["rows_per_s"]):
            best = cand
    if r18 and best:
        ratio = best["rows_per_s"] / r18["ceiling_rows_per_s"]
        row(
            "ResNet-18 ≥ 0.95× in-process ORT at its best batch",
            f"{best['rows_per_s']:.1f} ({best['client']}, c={best['concurrency']}) vs "
            f"{r18['ceiling_rows_per_s']:.1f} img/s (batch {r18['best_batch']}) = {ratio:.2f}×",
            ratio >= 0.95,
        )
    for model in DEFAULT_MODELS:
        hi = at(runs, 64, server="convserve", model=model, client="loadgen")
        lo = at(runs, 16, server="convserve", model=model, client="loadgen")
        if hi and lo:
            ratio = hi["throughput_rps"] / lo["throughput_rps"]
            row(
                f"{model}: c=64 ≥ 0.95× c=16 (loadgen)",
                f"{hi['throughput_rps']:.1f} vs {lo['throughput_rps']:.1f} req/s = {ratio:.2f}×",
                ratio >= 0.95,
            )
    ours = at(runs, 16, server="convserve", model=LENET, client="loadgen")
    floor = at(runs, 16, server="transport", model=LENET, client="loadgen")
    if (
        ours
        and floor
        and ours.get("server_cpu_us_per_request")
        and floor.get("server_cpu_us_per_request")
    ):
        a, b = ours["server_cpu_us_per_request"], floor["server_cpu_us_per_request"]
        row(
            "LeNet-5 server CPU per request at c=16 ≤ 1.3× transport's (loadgen)",
            f"{a:.0f} vs {b:.0f} µs = {a / b:.2f}×",
            a <= 1.3 * b,
        )
    for c in pipeline_rows(doc):
        if c["ratio"] is not None:
            row(
                f"{c['model']} {c['api']}: task API ≥ 0.9× pipeline ceiling",
                f"{c['served']:.1f} (c={c['c']}) vs {c['ceiling']:.1f} items/s = {c['ratio']:.2f}×",
                c["ratio"] >= 0.9,
            )
    row("GPU targets", "no GPU on this machine: benchmarks/gpu/ holds the GPU run", None)
    return [*lines, ""]


def pipeline_rows(doc: dict[str, Any]) -> list[Row]:
    """Each pipeline ceiling beside convserve's best figure on the matching task-API path."""
    out = []
    for c in doc.get("pipeline_ceiling", []):
        kind = c["input"]
        api = f"classify-{kind}" if kind in ("jpeg", "png") else f"speech-{kind}"
        best = peak(doc["runs"], server="convserve", model=c["model"], client="loadgen", api=api)
        served = best["throughput_rps"] if best else None
        out.append(
            {
                "model": c["model"],
                "api": api,
                "ceiling": c["ceiling_items_per_s"],
                "batch": c["best_batch"],
                "audio": c.get("ceiling_audio_s_per_s") or 0.0,
                "served": served,
                "c": best["concurrency"] if best else None,
                "ratio": served / c["ceiling_items_per_s"] if served else None,
                "threads": c.get("preprocess_threads"),
                "ceiling_cpu": c.get("cpu_us_per_item"),
                "served_cpu": best.get("server_cpu_us_per_request") if best else None,
            }
        )
    return out


def yes(ok: bool) -> str:
    return "yes" if ok else "**no**"

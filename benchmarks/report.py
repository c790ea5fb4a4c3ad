"""results.json -> results.md (tables, targets) and PNG plots, in benchmarks/results/.

.venv/bin/python -m benchmarks.report [benchmarks/results]   # re-render without re-running
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import RESULTS_DIR

PEERS = ("pytriton", "mlserver")
SERVER_ORDER = (
    "transport",
    "convserve",
    "convserve-delay",
    "pytriton",
    "mlserver",
    "mlserver-pw1",
)
MODEL_ORDER = ("lenet5_fashion", "resnet18", "resnet50", "mobilenet_v2", "speech_cnn")


def render(doc: dict[str, Any], out: Path) -> None:
    runs = [r for r in doc["runs"] if r.get("throughput_rps")]
    ceilings = {c["model"]: c for c in doc.get("ort_ceiling", [])}
    lines = _header(doc, runs)
    lines += _ort_table(doc.get("ort_ceiling", []))
    lines += _targets(runs, ceilings)
    for model in _ordered(r["model"] for r in runs):
        lines += _model_table(model, runs, ceilings)
    half = [r for r in runs if r["client"].endswith("-rate")]
    if half:
        lines += _half_load_table(half, ceilings)
        floor = [
            f"{r['p99_ms']:.2f} ms ({r['client']}, {r['model']})"
            for r in runs
            if r["server"] == "transport" and r.get("concurrency") == 1
        ]
        if floor:
            lines += [
                "For scale: the transport ceiling (no model at all) at concurrency 1 had p99 "
                + ", ".join(floor)
                + " in this run: the tail of the machine itself (scheduling on 2 shared cores).",
                "",
            ]
    if doc.get("notes"):
        lines += ["", "## Notes from the run", ""] + [f"- {n}" for n in doc["notes"]]
    failed = [r for r in doc["runs"] if not r.get("throughput_rps")]
    if failed:
        lines += ["", "## Measurements that produced no number", ""]
        lines += [
            f"- {r['server']} {r['model']} {r['client']} c={r.get('concurrency')}: "
            f"{str(r.get('errors'))[:300]}"
            for r in failed
        ]
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text("\n".join(lines) + "\n")
    _plots(runs, doc.get("ort_ceiling", []), out)


# ---- markdown ------------------------------------------------------------------------------------


def _header(doc: dict[str, Any], runs: list[dict[str, Any]]) -> list[str]:
    env = doc.get("environment", {})
    plan = doc.get("plan", {})
    others = [r["load"]["others_cores"] for r in doc["runs"] if "load" in r]
    tops: dict[str, int] = {}
    for r in doc["runs"]:
        for t in r.get("load", {}).get("others_top", []):
            name = t.rsplit(" ", 1)[0]
            tops[name] = tops.get(name, 0) + 1
    lines = [
        "# convserve benchmarks",
        "",
        f"Plan `{plan.get('name')}` ({'--full' if plan.get('name') == 'full' else '--quick'}), "
        f"wall time {doc.get('wall_s', 0) / 60:.1f} min. Regenerate with "
        f"`.venv/bin/python benchmarks/run.py --{plan.get('name', 'quick')}`.",
        "",
        f"- Machine: {env.get('cpu')}, {env.get('cores')} cores; GPU: {env.get('gpu')}.",
        f"- Software: Python {env.get('python')}, onnxruntime {env.get('onnxruntime')} (convserve)"
        f" / {env.get('peer onnxruntime')} (peers, CPU wheel), grpcio {env.get('grpcio')}, "
        f"nvidia-pytriton {env.get('nvidia-pytriton')}, mlserver {env.get('mlserver')}.",
        "- Every server runs the same ONNX file on the CPU execution provider with convserve's "
        "session options (graph optimisation ALL, sequential, inter-op 1, intra-op = ORT default, "
        "no spinning), one model instance, max batch 64, max queue delay 1000 µs. Server and "
        "client share the machine's cores; one server runs at a time.",
    ]
    if others:
        lines.append(
            f"- Contention: other processes (not this benchmark) used a median of "
            f"{statistics.median(others):.2f} cores (max {max(others):.2f}) of "
            f"{env.get('cores')} during the measurements"
            + (f"; busiest: {', '.join(sorted(tops, key=lambda k: -tops[k])[:4])}" if tops else "")
            + ". Figures taken under contention are lower and noisier than on an idle machine."
        )
    lines += [
        "- Clients: `perf_analyzer` (Triton's C++ load generator, KServe v2 gRPC, random tensor "
        "input, closed loop) and `loadgen` (benchmarks/loadgen.py: Python grpc.aio, 4 channels, "
        "closed loop; `kserve` = ModelInfer with a random tensor, `classify-jpeg` / "
        "`classify-png` = ClassifyImage with real encoded images, `speech` = DetectSpeech with "
        "espeak-ng WAVs). Latencies are client-side, milliseconds. c = requests in flight.",
        "",
    ]
    return lines


def _ort_table(ceilings: list[dict[str, Any]]) -> list[str]:
    if not ceilings:
        return []
    sizes = sorted({b["batch"] for c in ceilings for b in c["batches"]})
    lines = [
        "## Compute ceiling: in-process ONNX Runtime (rows/s; ms per batch)",
        "",
        "| model | " + " | ".join(f"batch {s}" for s in sizes) + " | best |",
        "|---" * (len(sizes) + 2) + "|",
    ]
    for c in sorted(ceilings, key=lambda c: _rank(c["model"], MODEL_ORDER)):
        by = {b["batch"]: b for b in c["batches"]}
        cells = [
            f"{by[s]['rows_per_s']:.1f} ({by[s]['batch_ms_p50']:.2f} ms)" if s in by else "-"
            for s in sizes
        ]
        lines.append(
            f"| {c['model']} | " + " | ".join(cells) + f" | **{c['ceiling_rows_per_s']:.1f}** "
            f"@ {c['best_batch']} |"
        )
    return [*lines, ""]


def _model_table(
    model: str, runs: list[dict[str, Any]], ceilings: dict[str, dict[str, Any]]
) -> list[str]:
    rows = [r for r in runs if r["model"] == model and not r["client"].endswith("-rate")]
    rows.sort(key=lambda r: (r["api"], r["client"], _rank(r["server"], SERVER_ORDER),
                             r.get("concurrency") or 0))  # fmt: skip
    ceiling = ceilings.get(model, {}).get("ceiling_rows_per_s")
    lines = [
        f"## {model}",
        "",
        f"ONNX Runtime ceiling: {ceiling:.1f} rows/s." if ceiling else "",
        "",
        "| server | client | api | c | req/s | rows/s | p50 | p90 | p99 | errors | mean batch "
        "| vs ORT ceiling | vs transport | vs PyTriton | vs MLServer |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        same = {
            s["server"]: s
            for s in rows
            if s["client"] == r["client"]
            and s["api"] == r["api"]
            and s.get("concurrency") == r.get("concurrency")
        }

        def ratio(other: str, r: dict[str, Any] = r, same: dict[str, Any] = same) -> str:
            peer = same.get(other)
            if r["server"] == other or peer is None or not peer.get("throughput_rps"):
                return ""
            return f"{r['throughput_rps'] / peer['throughput_rps']:.2f}×"

        vs_ceiling = (
            f"{r['rows_per_s'] / ceiling:.2f}"
            if ceiling and r["server"] != "transport" and r.get("rows_per_s")
            else ""
        )
        batch = r.get("server_mean_batch")
        lines.append(
            f"| {r['server']} | {r['client']} | {r['api']} | {r.get('concurrency')} "
            f"| {r['throughput_rps']:.1f} | {r.get('rows_per_s', r['throughput_rps']):.1f} "
            f"| {_ms(r.get('p50_ms'))} | {_ms(r.get('p90_ms'))} | {_ms(r.get('p99_ms'))} "
            f"| {sum(r.get('errors', {}).values()) if isinstance(r.get('errors'), dict) else ''} "
            f"| {f'{batch:.1f}' if batch else ''} | {vs_ceiling} | {ratio('transport')} "
            f"| {ratio('pytriton')} | {ratio('mlserver')} |"
        )
    return [*lines, ""]


def _half_load_table(half: list[dict[str, Any]], ceilings: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "## Latency at half of peak load (open loop, fixed rate)",
        "",
        "Rate = half the server's best closed-loop loadgen throughput, sent on a constant schedule "
        "by loadgen (Python, at most 64 in flight; latency counted from the scheduled send, so "
        "client lateness counts too) and by perf_analyzer (C++; not MLServer, which lacks "
        "ModelConfig). Bound = ONNX Runtime time of one batch of the server's mean batch size + "
        "max_queue_delay (1 ms) + 1 ms.",
        "",
        "| model | server | client | peak req/s | rate | achieved | p50 | p90 | p99 | mean batch "
        "| bound | p99 ≤ bound |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in sorted(
        half,
        key=lambda r: (
            _rank(r["model"], MODEL_ORDER),
            _rank(r["server"], SERVER_ORDER),
            r["client"],
        ),
    ):
        bound = _latency_bound(r, ceilings)
        ok = "" if bound is None else ("yes" if r["p99_ms"] <= bound else "**no**")
        lines.append(
            f"| {r['model']} | {r['server']} | {r['client'].removesuffix('-rate')} "
            f"| {r['peak_rps']:.1f} | {r['rate']:.1f} "
            f"| {r['throughput_rps']:.1f} | {_ms(r['p50_ms'])} | {_ms(r['p90_ms'])} "
            f"| {_ms(r['p99_ms'])} | {_num(r.get('server_mean_batch'))} "
            f"| {_ms(bound)} | {ok} |"
        )
    return [*lines, ""]


def _latency_bound(r: dict[str, Any], ceilings: dict[str, dict[str, Any]]) -> float | None:
    """ORT batch time at the observed mean batch (interpolated) + queue delay + 1 ms."""
    ceiling = ceilings.get(r["model"])
    if not ceiling:
        return None
    batches = sorted(ceiling["batches"], key=lambda b: b["batch"])
    mean = r.get("server_mean_batch") or 1.0
    below = [b for b in batches if b["batch"] <= mean] or batches[:1]
    above = [b for b in batches if b["batch"] >= mean] or batches[-1:]
    lo, hi = below[-1], above[0]
    if hi["batch"] == lo["batch"]:
        compute = lo["batch_ms_p50"]
    else:
        t = (mean - lo["batch"]) / (hi["batch"] - lo["batch"])
        compute = lo["batch_ms_p50"] + t * (hi["batch_ms_p50"] - lo["batch_ms_p50"])
    return float(compute + ceiling.get("max_queue_delay_ms", 1.0) + 1.0)


def _targets(runs: list[dict[str, Any]], ceilings: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "## Targets (measured on this machine, under the contention stated above)",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]

    def peak(server: str, model: str, client: str, api: str = "kserve") -> dict[str, Any] | None:
        cands = [
            r
            for r in runs
            if r["server"] == server
            and r["model"] == model
            and r["client"] == client
            and r["api"] == api
        ]
        return max(cands, key=lambda r: r["throughput_rps"]) if cands else None

    def at(server: str, model: str, client: str, c: int) -> dict[str, Any] | None:
        return next(
            (
                r
                for r in runs
                if r["server"] == server
                and r["model"] == model
                and r["client"] == client
                and r["api"] == "kserve"
                and r.get("concurrency") == c
            ),
            None,
        )

    def row(target: str, measured: str, ok: bool | None) -> None:
        lines.append(f"| {target} | {measured} | {'n/a' if ok is None else _yes(ok)} |")

    r50 = ceilings.get("resnet50")
    best = [peak("convserve", "resnet50", c) for c in ("perf_analyzer", "loadgen")]
    best_rows = max((b for b in best if b), key=lambda b: b["rows_per_s"], default=None)
    if r50 and best_rows:
        ratio = best_rows["rows_per_s"] / r50["ceiling_rows_per_s"]
        row(
            "ResNet-50 CPU: convserve ≥ 0.95× in-process ORT best-batch images/s",
            f"{best_rows['rows_per_s']:.1f} vs {r50['ceiling_rows_per_s']:.1f} img/s = "
            f"{ratio:.3f}× ({best_rows['client']}, c={best_rows['concurrency']})",
            ratio >= 0.95,
        )
    lenet = "lenet5_fashion"
    for peer, factor in (("mlserver", 1.5), ("pytriton", 1.0)):
        for client in ("loadgen", "perf_analyzer"):
            ours, theirs = peak("convserve", lenet, client), peak(peer, lenet, client)
            if not ours or not theirs:
                continue
            same_c = at(peer, lenet, client, ours["concurrency"])
            p99_ok = same_c is None or ours["p99_ms"] <= same_c["p99_ms"]
            ratio = ours["throughput_rps"] / theirs["throughput_rps"]
            row(
                f"LeNet-5: convserve ≥ {factor}× {peer} req/s at equal or better p99 ({client})",
                f"peak {ours['throughput_rps']:.0f} (c={ours['concurrency']}, p99 "
                f"{ours['p99_ms']:.1f} ms) vs {theirs['throughput_rps']:.0f} (c="
                f"{theirs['concurrency']}, p99 {theirs['p99_ms']:.1f} ms) = {ratio:.3f}×"
                + (
                    f"; {peer} at c={ours['concurrency']}: p99 {same_c['p99_ms']:.1f} ms"
                    if same_c
                    else ""
                ),
                ratio >= factor and p99_ok,
            )
    for client in ("loadgen", "perf_analyzer"):
        ours, ceiling = peak("convserve", lenet, client), peak("transport", lenet, client)
        if ours and ceiling:
            ratio = ours["throughput_rps"] / ceiling["throughput_rps"]
            row(
                f"LeNet-5: convserve ≥ 0.6× the transport ceiling ({client})",
                f"{ours['throughput_rps']:.0f} vs {ceiling['throughput_rps']:.0f} req/s = "
                f"{ratio:.3f}×",
                ratio >= 0.6,
            )
    for client in ("loadgen", "perf_analyzer"):
        one = at("convserve", lenet, client, 1)
        if one:
            row(
                f"LeNet-5 at concurrency 1: p50 ≤ 1 ms ({client})",
                f"p50 {one['p50_ms']:.3f} ms (p99 {one['p99_ms']:.3f} ms)",
                one["p50_ms"] <= 1.0,
            )
    for r in runs:
        if r["client"].endswith("-rate") and r["server"] == "convserve":
            bound = _latency_bound(r, ceilings)
            if bound is not None:
                client = r["client"].removesuffix("-rate")
                row(
                    f"{r['model']}: p99 at half of peak ≤ batch compute + max_queue_delay + 1 ms "
                    f"({client})",
                    f"p99 {r['p99_ms']:.2f} ms at {r['throughput_rps']:.0f} req/s vs bound "
                    f"{bound:.2f} ms (mean batch {_num(r.get('server_mean_batch'))})",
                    r["p99_ms"] <= bound,
                )
    row("GPU targets", "no GPU lent to this task: not measurable", None)
    return [*lines, ""]


# ---- plots ---------------------------------------------------------------------------------------


COLORS = {
    "transport": "#7f7f7f",
    "convserve": "#1f77b4",
    "convserve-delay": "#17becf",
    "pytriton": "#2ca02c",
    "mlserver": "#ff7f0e",
    "mlserver-pw1": "#d62728",
}
MARKERS = {"kserve": "o", "classify-jpeg": "s", "classify-png": "s", "speech": "^"}


def _plots(runs: list[dict[str, Any]], ceilings: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    closed = [r for r in runs if not r["client"].endswith("-rate") and r.get("concurrency")]
    for model in _ordered(r["model"] for r in closed):
        rows = [r for r in closed if r["model"] == model]
        served = [r["throughput_rps"] for r in rows if r["server"] != "transport"]
        transport = [r["throughput_rps"] for r in rows if r["server"] == "transport"]
        note = ""
        if served and transport and max(transport) > 5 * max(served):  # compute-bound model
            rows = [r for r in rows if r["server"] != "transport"]
            note = f"; transport ceiling {max(transport):,.0f} req/s, off the scale"
        series: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        for r in rows:
            series.setdefault((r["server"], r["client"], r["api"]), []).append(r)
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
        for (server, client, api), points in sorted(
            series.items(), key=lambda kv: (_rank(kv[0][0], SERVER_ORDER), kv[0][1:])
        ):
            points.sort(key=lambda r: r["concurrency"])
            style = {
                "color": COLORS.get(server, "k"),
                "ls": "--" if client == "perf_analyzer" else "-",
                "marker": MARKERS.get(api, "o"),
            }
            label = f"{server} · {client} · {api}"
            rps = [p["throughput_rps"] for p in points]
            ax1.plot([p["concurrency"] for p in points], rps, label=label, **style)
            ax2.plot(rps, [p["p99_ms"] for p in points], label=label, **style)
            ax2.plot(rps, [p["p50_ms"] for p in points], **{**style, "ls": ":", "alpha": 0.6})
        ceiling = next((c for c in ceilings if c["model"] == model), None)
        top = max(r["throughput_rps"] for r in rows)
        title = f"{model}: throughput vs concurrency{note}"
        if ceiling and ceiling["ceiling_rows_per_s"] <= 3 * top:
            ax1.axhline(ceiling["ceiling_rows_per_s"], color="k", lw=0.8, ls="-.")
            ax1.annotate("ONNX Runtime ceiling", (1, ceiling["ceiling_rows_per_s"]), fontsize=8)
        elif ceiling:  # far above: a line would flatten every curve
            title += f"\n(ONNX Runtime ceiling {ceiling['ceiling_rows_per_s']:,.0f} rows/s)"
        ax1.set(xscale="log", xlabel="concurrency (requests in flight)", ylabel="requests/s",
                title=title, ylim=(0, None))  # fmt: skip
        ax1.set_xticks(sorted({r["concurrency"] for r in rows}))
        ax1.get_xaxis().set_major_formatter(ScalarFormatter())
        ax2.set(yscale="log", xlabel="requests/s", ylabel="ms: p99 (solid, dashed), p50 (dotted)",
                title=f"{model}: latency vs throughput (points: concurrency)")  # fmt: skip
        ax1.legend(fontsize=7)
        ax1.grid(alpha=0.3)
        ax2.grid(alpha=0.3, which="both")
        fig.tight_layout()
        fig.savefig(out / f"{model}.png", dpi=110)
        plt.close(fig)
    if ceilings:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for c in sorted(ceilings, key=lambda c: _rank(c["model"], MODEL_ORDER)):
            b = sorted(c["batches"], key=lambda b: b["batch"])
            ax.plot([x["batch"] for x in b], [x["rows_per_s"] for x in b], marker="o",
                    label=c["model"])  # fmt: skip
        ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="rows/s",
               title="In-process ONNX Runtime throughput (CPU)")  # fmt: skip
        ax.set_xticks(sorted({x["batch"] for c in ceilings for x in c["batches"]}))
        ax.get_xaxis().set_major_formatter(ScalarFormatter())
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
        fig.tight_layout()
        fig.savefig(out / "ort_ceiling.png", dpi=110)
        plt.close(fig)


# ---- helpers -------------------------------------------------------------------------------------


def _ordered(models: Iterable[str]) -> list[str]:
    return sorted(set(models), key=lambda m: _rank(m, MODEL_ORDER))


def _rank(value: str, order: tuple[str, ...]) -> tuple[int, str]:
    return (order.index(value) if value in order else len(order), value)


def _ms(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def main(argv: list[str] | None = None) -> int:
    out = Path(argv[0] if argv else sys.argv[1] if len(sys.argv) > 1 else RESULTS_DIR)
    render(json.loads((out / "results.json").read_text()), out)
    print(out / "results.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())

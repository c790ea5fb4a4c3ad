"""The plots of benchmarks/results/ (matplotlib, Agg):

<model>.png       throughput vs concurrency and latency vs throughput, every server and client
ort_ceiling.png   in-process ONNX Runtime rows/s per batch size
pipeline.png      task API: convserve vs its in-process pipeline ceiling, per case
cpu.png           server CPU per request (LeNet-5, KServe gRPC) per server and concurrency
http.png          HTTP (JSON, binary) beside gRPC: throughput and p99 per concurrency (#12)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.bench_repo import MODEL_ORDER
from benchmarks.report_targets import pipeline_rows

Row = dict[str, Any]
COLORS = {
    "transport": "#7f7f7f",
    "convserve": "#1f77b4",
    "convserve-delay": "#17becf",
    "pytriton": "#2ca02c",
    "mlserver": "#ff7f0e",
    "mlserver-pw1": "#d62728",
}
STYLES = {"kserve": "-", "kserve-json": ":", "kserve-binary": "--"}


def plots(doc: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    runs = [r for r in doc["runs"] if r.get("throughput_rps")]
    closed = [r for r in runs if not r["client"].endswith("-rate") and r.get("concurrency")]
    for model in sorted({r["model"] for r in closed}, key=_rank):
        _model_plot(model, [r for r in closed if r["model"] == model], doc, out)
    if doc.get("ort_ceiling"):
        _ort_plot(doc["ort_ceiling"], out)
    if any(p["served"] for p in pipeline_rows(doc)):
        _pipeline_plot(pipeline_rows(doc), out)
    cpu = [
        r
        for r in closed
        if r.get("server_cpu_us_per_request")
        and r["api"] == "kserve"
        and r["client"] == "loadgen"
        and r["model"] == "lenet5_fashion"
    ]
    if cpu:
        _cpu_plot(cpu, out)
    http = [
        r
        for r in closed
        if r["model"] in {x["model"] for x in closed if x.get("protocol") == "http"}
        and r["api"].startswith("kserve")
    ]
    if http:
        _http_plot(http, out)


def _figure(*shape: int, size: tuple[float, float] = (13, 5)) -> Any:
    import matplotlib.pyplot as plt

    return plt.subplots(*shape, figsize=size, squeeze=False)


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _model_plot(model: str, rows: list[Row], doc: dict[str, Any], out: Path) -> None:
    from matplotlib.ticker import ScalarFormatter

    served = [r["throughput_rps"] for r in rows if r["server"] != "transport"]
    transport = [r["throughput_rps"] for r in rows if r["server"] == "transport"]
    note = ""
    if served and transport and max(transport) > 5 * max(served):  # compute-bound model
        rows = [r for r in rows if r["server"] != "transport"]
        note = f"; transport {max(transport):,.0f} req/s off the scale"
    series: dict[tuple[str, ...], list[Row]] = {}
    for r in rows:
        key = (r["server"], r.get("protocol", "grpc"), r["client"], r["api"])
        series.setdefault(key, []).append(r)
    fig, axes = _figure(1, 2)
    ax1, ax2 = axes[0]
    for key, points in sorted(series.items()):
        points.sort(key=lambda r: r["concurrency"])
        server, protocol, client, api = key
        style = {
            "color": COLORS.get(server, "k"),
            "marker": "o" if client != "perf_analyzer" else "x",
            "ls": STYLES.get(api, "-."),
        }
        label = f"{server} · {protocol} · {client} · {api}"
        rps = [p["throughput_rps"] for p in points]
        ax1.plot([p["concurrency"] for p in points], rps, label=label, **style)
        ax2.plot(rps, [p["p99_ms"] for p in points], **style)
    ceiling = next((c for c in doc.get("ort_ceiling", []) if c["model"] == model), None)
    title = f"{model}: throughput vs concurrency{note}"
    top = max(r["throughput_rps"] for r in rows)
    if ceiling and ceiling["ceiling_rows_per_s"] <= 3 * top:
        ax1.axhline(ceiling["ceiling_rows_per_s"], color="k", lw=0.8, ls="-.")
        ax1.annotate("ONNX Runtime ceiling", (1, ceiling["ceiling_rows_per_s"]), fontsize=8)
    elif ceiling:
        title += f"\n(ONNX Runtime ceiling {ceiling['ceiling_rows_per_s']:,.0f} rows/s)"
    ax1.set(
        xscale="log",
        xlabel="concurrency (requests in flight)",
        ylabel="requests/s",
        title=title,
        ylim=(0, None),
    )
    ax1.set_xticks(sorted({r["concurrency"] for r in rows}))
    ax1.get_xaxis().set_major_formatter(ScalarFormatter())
    ax2.set(
        yscale="log",
        xlabel="requests/s",
        ylabel="p99 latency, ms",
        title=f"{model}: p99 vs throughput (points: concurrency)",
    )
    ax1.legend(fontsize=6)
    ax1.grid(alpha=0.3)
    ax2.grid(alpha=0.3, which="both")
    _save(fig, out / f"{model}.png")


def _ort_plot(ceilings: list[Row], out: Path) -> None:
    from matplotlib.ticker import ScalarFormatter

    fig, axes = _figure(1, 1, size=(7, 4.5))
    ax = axes[0][0]
    for c in sorted(ceilings, key=lambda c: _rank(c["model"])):
        b = sorted(c["batches"], key=lambda b: b["batch"])
        ax.plot([x["batch"] for x in b], [x["rows_per_s"] for x in b], marker="o", label=c["model"])
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="batch size",
        ylabel="rows/s",
        title="In-process ONNX Runtime throughput (CPU)",
    )
    ax.set_xticks(sorted({x["batch"] for c in ceilings for x in c["batches"]}))
    ax.get_xaxis().set_major_formatter(ScalarFormatter())
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    _save(fig, out / "ort_ceiling.png")


def _pipeline_plot(rows: list[Row], out: Path) -> None:
    fig, axes = _figure(1, 1, size=(9, 4.5))
    ax = axes[0][0]
    labels = [f"{r['model']}\n{r['api']}" for r in rows]
    xs = range(len(rows))
    ax.bar(
        [x - 0.2 for x in xs],
        [r["ceiling"] for r in rows],
        0.4,
        label="in-process ceiling",
        color="#999999",
    )
    ax.bar(
        [x + 0.2 for x in xs],
        [r["served"] or 0 for r in rows],
        0.4,
        label="convserve",
        color=COLORS["convserve"],
    )
    for x, r in zip(xs, rows, strict=True):
        if r["ratio"]:
            ax.annotate(f"{r['ratio']:.2f}×", (x + 0.2, r["served"]), ha="center", fontsize=8)
    ax.set_xticks(list(xs), labels, fontsize=7)
    ax.set(
        yscale="log",
        ylabel="items/s (images or clips)",
        title="Task API vs decode + preprocess + ONNX Runtime in process",
    )
    ax.legend(fontsize=8)
    _save(fig, out / "pipeline.png")


def _cpu_plot(rows: list[Row], out: Path) -> None:
    fig, axes = _figure(1, 1, size=(8, 4.5))
    ax = axes[0][0]
    servers = sorted(
        {r["server"] for r in rows}, key=lambda s: list(COLORS).index(s) if s in COLORS else 99
    )
    levels = sorted({r["concurrency"] for r in rows})
    width = 0.8 / len(servers)
    for i, server in enumerate(servers):
        by = {
            r["concurrency"]: r["server_cpu_us_per_request"] for r in rows if r["server"] == server
        }
        ax.bar(
            [j + i * width for j in range(len(levels))],
            [by.get(c, 0) for c in levels],
            width,
            label=server,
            color=COLORS.get(server, "k"),
        )
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(levels))], [f"c={c}" for c in levels])
    ax.set(
        ylabel="server CPU µs per request",
        title="LeNet-5, KServe v2 gRPC: server process-tree CPU per request",
    )
    ax.legend(fontsize=8)
    _save(fig, out / "cpu.png")


def _http_plot(rows: list[Row], out: Path) -> None:
    models = sorted({r["model"] for r in rows}, key=_rank)
    fig, axes = _figure(len(models), 2, size=(13, 4.5 * len(models)))
    for (ax1, ax2), model in zip(axes, models, strict=True):
        series: dict[tuple[str, ...], list[Row]] = {}
        for r in rows:
            if r["model"] == model and r["client"] in ("loadgen", "http_load"):
                series.setdefault((r["server"], r["api"]), []).append(r)
        for (server, api), points in sorted(series.items()):
            points.sort(key=lambda r: r["concurrency"])
            style = {"color": COLORS.get(server, "k"), "ls": STYLES.get(api, "-"), "marker": "o"}
            label = f"{server} · {'gRPC' if api == 'kserve' else 'HTTP ' + api[7:]}"
            cs = [p["concurrency"] for p in points]
            ax1.plot(cs, [p["throughput_rps"] for p in points], label=label, **style)
            ax2.plot(cs, [p["p99_ms"] for p in points], label=label, **style)
        ax1.set(
            xscale="log",
            xlabel="concurrency",
            ylabel="requests/s",
            ylim=(0, None),
            title=f"{model}: KServe v2 over HTTP and gRPC",
        )
        ax2.set(
            xscale="log",
            yscale="log",
            xlabel="concurrency",
            ylabel="p99 ms",
            title=f"{model}: p99 latency",
        )
        ax1.legend(fontsize=7)
        for ax in (ax1, ax2):
            ax.grid(alpha=0.3, which="both")
    _save(fig, out / "http.png")


def _rank(model: str) -> tuple[int, str]:
    return (MODEL_ORDER.index(model) if model in MODEL_ORDER else len(MODEL_ORDER), model)

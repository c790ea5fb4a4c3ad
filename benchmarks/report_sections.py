"""The summary sections of results.md: the task API against its pipeline ceilings, server CPU
per request, c=64 against c=16, HTTP beside gRPC (#12), long audio and streaming; and the
formatting helpers every section uses."""

from __future__ import annotations

import math
from typing import Any

from benchmarks.bench_repo import MODEL_ORDER
from benchmarks.report_targets import at, pipeline_rows

SERVER_ORDER = ("transport", "convserve", "convserve-delay", "pytriton", "mlserver", "mlserver-pw1")
Row = dict[str, Any]


def pipeline_table(doc: dict[str, Any]) -> list[str]:
    rows = pipeline_rows(doc)
    if not rows:
        return []
    lines = [
        "## Task API against its in-process pipeline ceiling",
        "",
        "Ceiling: decode + preprocess + ONNX Runtime + answer in one process, with the "
        "server's code, decoding pool size and session (pipeline_ceiling.py), at its best "
        "batch. Served: convserve's best closed-loop figure on the same inputs (gRPC). CPU: the "
        "ceiling's process CPU per item (its cheapest batch size) beside the server process "
        "tree's CPU per request in that served run; their ratio depends far less on other load "
        "than the throughputs do.",
        "",
        "| model | api | ceiling items/s | best batch | audio s/s | convserve items/s | at c "
        "| served / ceiling | ceiling CPU µs/item | server CPU µs/req | CPU ratio |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        cpu_ratio = (
            r["served_cpu"] / r["ceiling_cpu"] if r["served_cpu"] and r["ceiling_cpu"] else None
        )
        lines.append(
            f"| {r['model']} | {r['api']} | {r['ceiling']:.1f} | {r['batch']} | "
            f"{num(r['audio'] or None)} | {num(r['served'])} | {r['c'] or '-'} | "
            f"{num(r['ratio'], 2)} | {num(r['ceiling_cpu'], 0)} | {num(r['served_cpu'], 0)} | "
            f"{num(cpu_ratio, 2)} |"
        )
    return [*lines, ""]


def cpu_table(runs: list[Row]) -> list[str]:
    rows = [
        r
        for r in runs
        if r.get("server_cpu_us_per_request") and r["client"] == "loadgen" and r["api"] == "kserve"
    ]
    if not rows:
        return []
    lines = [
        "## Server CPU per request (KServe v2 gRPC, our loadgen)",
        "",
        "| model | server | c | req/s | server cores | CPU µs/request | vs transport |",
        "|---|---|--:|--:|--:|--:|--:|",
    ]
    rows.sort(
        key=lambda r: (
            rank(r["model"], MODEL_ORDER),
            r["concurrency"] or 0,
            rank(r["server"], SERVER_ORDER),
        )
    )
    for r in rows:
        floor = at(runs, r["concurrency"], server="transport", model=r["model"], client="loadgen")
        ratio = ""
        if floor and floor.get("server_cpu_us_per_request") and r["server"] != "transport":
            ratio = f"{r['server_cpu_us_per_request'] / floor['server_cpu_us_per_request']:.2f}×"
        lines.append(
            f"| {r['model']} | {r['server']} | {r['concurrency']} | "
            f"{r['throughput_rps']:.1f} | {r['server_cores']:.2f} | "
            f"{r['server_cpu_us_per_request']:.0f} | {ratio} |"
        )
    return [*lines, ""]


def collapse_table(runs: list[Row]) -> list[str]:
    lines = [
        "## No collapse under load: throughput at c=64 / c=16",
        "",
        "| model | server | client | api | c=16 req/s | c=64 req/s | ratio |",
        "|---|---|---|---|--:|--:|--:|",
    ]
    keys = sorted(
        {
            (r["model"], r["server"], r["client"], r["api"], r.get("protocol", "grpc"))
            for r in runs
            if r.get("concurrency") == 64
        },
        key=lambda k: (rank(k[0], MODEL_ORDER), rank(k[1], SERVER_ORDER), k[2:]),
    )
    for model, server, client, api, protocol in keys:
        want = {
            "server": server,
            "model": model,
            "client": client,
            "api": api,
            "protocol": protocol,
        }
        hi, lo = at(runs, 64, **want), at(runs, 16, **want)
        if hi and lo:
            ratio = hi["throughput_rps"] / lo["throughput_rps"]
            flag = "" if ratio >= 0.95 else " (**<0.95**)"
            lines.append(
                f"| {model} | {server} | {client} | {api} | {lo['throughput_rps']:.1f} "
                f"| {hi['throughput_rps']:.1f} | {ratio:.2f}×{flag} |"
            )
    return [*lines, ""] if len(lines) > 4 else []


def http_table(runs: list[Row]) -> list[str]:
    models = ordered({r["model"] for r in runs if r.get("protocol") == "http"})
    if not models:
        return []
    lines = [
        "## HTTP beside gRPC (KServe v2; issue #12)",
        "",
        "| model | server | protocol | body | client | c | req/s | p50 | p99 | CPU µs/req |",
        "|---|---|---|---|---|--:|--:|--:|--:|--:|",
    ]
    for model in models:
        levels = {
            r["concurrency"] for r in runs if r["model"] == model and r.get("protocol") == "http"
        }
        rows = [
            r
            for r in runs
            if r["model"] == model
            and r.get("concurrency") in levels
            and r["api"].startswith("kserve")
            and not r["client"].endswith("-rate")
        ]
        rows.sort(
            key=lambda r: (
                r["concurrency"],
                rank(r["server"], SERVER_ORDER),
                r.get("protocol", ""),
                r["api"],
                r["client"],
            )
        )
        for r in rows:
            body = {"kserve": "protobuf", "kserve-json": "JSON", "kserve-binary": "binary"}
            cpu = r.get("server_cpu_us_per_request")
            lines.append(
                f"| {model} | {r['server']} | {r.get('protocol', 'grpc')} | "
                f"{body.get(r['api'], r['api'])} | {r['client']} | {r['concurrency']} | "
                f"{r['throughput_rps']:.1f} | {ms(r.get('p50_ms'))} | "
                f"{ms(r.get('p99_ms'))} | {num(cpu, 0)} |"
            )
    return [*lines, ""]


def audio_table(runs: list[Row]) -> list[str]:
    rows = [
        r
        for r in runs
        if r["server"] == "convserve" and r["api"].startswith(("speech-", "stream-"))
    ]
    if not rows:
        return []
    lines = [
        "## Long audio and streaming (convserve, speech_cnn)",
        "",
        "| api | c | clips or streams/s | audio s/s | p50 | p99 |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for r in sorted(rows, key=lambda r: (r["api"], r["concurrency"] or 0)):
        seconds = {"speech-wav1s": 1.0, "speech-wav10s": 10.0, "speech-wav60s": 60.0}
        audio = r.get("audio_s_per_s") or r["throughput_rps"] * seconds.get(r["api"], math.nan)
        lines.append(
            f"| {r['api']} | {r['concurrency']} | {r['throughput_rps']:.1f} | "
            f"{num(audio, 0)} | {ms(r.get('p50_ms'))} | {ms(r.get('p99_ms'))} |"
        )
    return [*lines, ""]


def ordered(models: set[str]) -> list[str]:
    return sorted(models, key=lambda m: rank(m, MODEL_ORDER))


def rank(value: str, order: tuple[str, ...]) -> tuple[int, str]:
    return (order.index(value) if value in order else len(order), value)


def ms(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"

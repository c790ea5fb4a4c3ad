"""The GPU run's results as targets and one markdown page (results.md beside results.json).

Targets (issue #11): convserve on CUDA reaches ≥ 0.9× the in-process ceiling at its best batch —
ResNet-50 FP16 over KServe v2 against the tensor ceiling, MobileNetV2 ClassifyImage with JPEGs
against the pipeline ceiling (decode + preprocess + ORT). The ResNet-50 figure stands beside
Triton's published A100 number for reference (a different GPU and TensorRT, so not a target).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

TARGET_RATIO = 0.9
TRITON_A100 = {
    "what": "Triton, A100, ONNX Runtime with TensorRT FP16 (published)",
    "rows_per_s": 6127.0,
    "p99_ms": 46.5,
}


def junit_summary(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return None
    failed = [
        f"{case.get('classname')}.{case.get('name')}"
        for case in suite.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    total = int(suite.get("tests", 0))
    skipped = int(suite.get("skipped", 0))
    return {
        "tests": total,
        "failed": len(failed),
        "skipped": skipped,
        "passed": total - len(failed) - skipped,
        "failures": failed,
        "seconds": float(suite.get("time", 0.0)),
    }


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, server, ceiling in (
        (
            "ResNet-50 FP16, KServe v2 (perf_analyzer) / in-process ORT CUDA",
            "server_resnet50_fp16",
            "ceiling_resnet50_fp16",
        ),
        (
            "MobileNetV2 ClassifyImage JPEG / in-process decode + ORT CUDA",
            "server_mobilenet_v2_jpeg",
            "ceiling_mobilenet_v2_jpeg",
        ),
    ):
        best = (results.get(server) or {}).get("best")
        top = (results.get(ceiling) or {}).get("ceiling_rows_per_s")
        if best and top:
            ratio = best["rows_per_s"] / top
            rows.append(
                {
                    "target": name,
                    "value": ratio,
                    "goal": f"≥ {TARGET_RATIO}",
                    "met": ratio >= TARGET_RATIO,
                }
            )
        else:
            rows.append({"target": name, "value": None, "goal": f"≥ {TARGET_RATIO}", "met": None})
    return rows


def _f(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def markdown(r: dict[str, Any]) -> str:
    host = r.get("host") or {}
    env = r.get("env") or {}
    ort = env.get("onnxruntime") or {}
    out = [
        "# convserve on a GPU (benchmarks/gpu/run.sh)",
        "",
        f"{r.get('started')} → {r.get('finished')}; GPU {host.get('gpu', '?')}; "
        f"{host.get('cpus')} CPUs; Python {host.get('python')}; "
        f"onnxruntime {ort.get('version', '?')}.",
        "",
        "## Targets",
        "",
        "| target | measured | goal | met |",
        "|---|---:|---|---|",
    ]
    for t in r.get("targets", []):
        met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        out.append(f"| {t['target']} | {_f(t['value'], 2)} | {t['goal']} | {met} |")
    tests = r.get("tests")
    if tests:
        out += [
            "",
            f"tests/gpu: {tests['passed']} passed, {tests['failed']} failed, "
            f"{tests['skipped']} skipped in {tests['seconds']:.0f} s"
            + (f" — failed: {', '.join(tests['failures'])}" if tests["failures"] else ""),
        ]
    out += _servers(r) + _ceilings(r) + _search(r) + _graphs(r)
    if r.get("skipped") or r.get("errors"):
        out += ["", "## Not measured", ""]
        out += [f"- skipped {s}" for s in r.get("skipped", [])]
        out += [f"- error in {k}: {v.splitlines()[0]}" for k, v in r.get("errors", {}).items()]
    return "\n".join(out) + "\n"


def _servers(r: dict[str, Any]) -> list[str]:
    out = []
    for key, title in (
        ("server_resnet50_fp16", "ResNet-50 FP16 over KServe v2 gRPC"),
        ("server_mobilenet_v2_jpeg", "MobileNetV2, ClassifyImage with JPEGs"),
    ):
        s = r.get(key)
        if not s:
            continue
        out += [
            "",
            f"## {title}",
            "",
            f"{s['client']}; provider {s['provider']}.",
            "",
            "| concurrency | img/s | p50 ms | p99 ms |",
            "|---:|---:|---:|---:|",
        ]
        for row in s["sweep"]:
            if "rows_per_s" in row:
                out.append(
                    f"| {row['concurrency']} | {_f(row['rows_per_s'])} | "
                    f"{_f(row['p50_ms'], 1)} | {_f(row['p99_ms'], 1)} |"
                )
            else:
                note = row.get("skipped") or row.get("error", "")
                out.append(f"| {row['concurrency']} | — | — | {note.splitlines()[0][:80]} |")
        if key == "server_resnet50_fp16":
            t = TRITON_A100
            out.append(f"| {t['what']} | {_f(t['rows_per_s'])} | — | {_f(t['p99_ms'], 1)} |")
    return out


def _ceilings(r: dict[str, Any]) -> list[str]:
    rows = [(k, r[k]) for k in sorted(r) if k.startswith("ceiling_") and r[k]]
    if not rows:
        return []
    out = [
        "",
        "## In-process ceilings (ONNX Runtime CUDA, the server's session and path)",
        "",
        "| model | kind | best batch | rows/s at best | GPU-resident rows/s | per batch |",
        "|---|---|---:|---:|---:|---|",
    ]
    for _, c in rows:
        per = ", ".join(
            f"{b['batch']}: {_f(b.get('rows_per_s', b.get('images_per_s')))}" for b in c["batches"]
        )
        out.append(
            f"| {c['model']} | {c['kind']} | {c['best_batch']} | "
            f"{_f(c['ceiling_rows_per_s'])} | {_f(c.get('gpu_resident_rows_per_s'))} | "
            f"{per} |"
        )
    return out


def _search(r: dict[str, Any]) -> list[str]:
    s = r.get("conv_search")
    if not s:
        return []
    h, e = s["modes"]["HEURISTIC"], s["modes"]["EXHAUSTIVE"]
    out = [
        "",
        f"## cudnn_conv_algo_search on {s['model']}: {s['winner']} "
        f"(geometric-mean gain of EXHAUSTIVE {s['geomean_gain']:.3f}; needs ≥ 1.03)",
        "",
        f"Start-up with warm-up of every bucket: HEURISTIC {h['startup_s']:.1f} s, "
        f"EXHAUSTIVE {e['startup_s']:.1f} s.",
        "",
        "| batch | HEURISTIC ms | EXHAUSTIVE ms | ratio |",
        "|---:|---:|---:|---:|",
    ]
    for b in s["buckets"]:
        hb, eb = _at(h["batch_ms_p50"], b), _at(e["batch_ms_p50"], b)
        out.append(f"| {b} | {hb:.2f} | {eb:.2f} | {hb / eb:.3f} |")
    return out


def _at(table: dict[Any, float], batch: int) -> float:
    """A per-batch value, keyed by int in memory and by str once through JSON."""
    return table[batch] if batch in table else table[str(batch)]


def _graphs(r: dict[str, Any]) -> list[str]:
    g = r.get("cuda_graphs")
    if not g:
        return []
    out = [
        "",
        f"## CUDA graphs on {g['model']} (inputs/outputs resident on the GPU): {g['verdict']}",
        "",
        "| batch | plain ms | graph ms | speed-up | rel. error |",
        "|---:|---:|---:|---:|---:|",
    ]
    for b in g["buckets"]:
        if "error" in b:
            out.append(f"| {b['batch']} | — | — | — | {b['error'][:80]} |")
        else:
            out.append(
                f"| {b['batch']} | {b['plain_ms']:.3f} | {b['graph_ms']:.3f} | "
                f"{b['speedup']:.2f} | {b['rel_error']:.1e} |"
            )
    return out

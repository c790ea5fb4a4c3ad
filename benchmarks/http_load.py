"""Closed-loop (or fixed-rate) HTTP load generator: asyncio + aiohttp, bounded in flight and time.

    python -m benchmarks.http_load --target 127.0.0.1:8000 --mode kserve-binary \
        --model lenet5_fashion --concurrency 16 --duration 10 --warmup 2

The HTTP twin of benchmarks/loadgen.py (same load model, same JSON summary, same `window_wall`
for the server CPU meter). Modes (what one request is):
  kserve-json    POST /v2/models/M/infer, KServe v2 REST with the tensor as a JSON `data` array
                 (what `curl` and most dashboards send); outputs come back as JSON.
  kserve-binary  the same with Triton's binary tensor extension (`binary_data_size`, the
                 Inference-Header-Content-Length header), outputs asked for as binary
                 (what tritonclient.http and perf_analyzer -i http send).
  classify       POST /v1/classify?model=M&top_k=5 with an encoded image as the body (convserve).
  speech         POST /v1/detect-speech?model=M with a WAV as the body (convserve).
Request bodies are built once, before the run (random float32 tensors from `--input` or the
model's REST metadata; the real encoded files of benchmarks/inputs.py for the task API).

Load: `--concurrency` workers each keep one request in flight on a pool of as many keep-alive
connections (closed loop), or `--rate R` requests/s on a fixed schedule with at most
`--concurrency` in flight, latency counted from the scheduled send (no coordinated omission).
Bounded by `--duration` (+ warm-up, + one `--timeout` for the requests in flight) and
`--max-requests`. Requests that end inside the window are counted; any answer but 200 is an error
counted by its HTTP status. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from service.loadgen import PAYLOADS, parse_input, summarise

MODES = ("kserve-json", "kserve-binary", "classify", "speech")
Body = tuple[bytes, dict[str, str]]  # body, headers


def kserve_bodies(
    model: str, tensor: tuple[str, str, list[int]], rows: int, binary: bool, seed: int
) -> list[Body]:
    name, datatype, dims = tensor
    if datatype != "FP32":
        raise SystemExit(f"{model}: only FP32 inputs are drawn at random here, not {datatype}")
    rng = np.random.default_rng(seed)
    bodies = []
    for i in range(PAYLOADS):
        x = rng.standard_normal([rows, *dims]).astype("<f4")
        head: dict[str, Any] = {"name": name, "shape": [rows, *dims], "datatype": datatype}
        doc: dict[str, Any] = {"id": str(i), "inputs": [head]}
        if not binary:
            head["data"] = x.reshape(-1).tolist()
            bodies.append((json.dumps(doc).encode(), {"Content-Type": "application/json"}))
            continue
        head["parameters"] = {"binary_data_size": x.nbytes}
        doc["parameters"] = {"binary_data_output": True}
        header = json.dumps(doc).encode()
        bodies.append(
            (
                header + x.tobytes(),
                {
                    "Content-Type": "application/octet-stream",
                    "Inference-Header-Content-Length": str(len(header)),
                },
            )
        )
    return bodies


async def metadata_input(session: aiohttp.ClientSession, base: str, model: str) -> Any:
    async with session.get(f"{base}/v2/models/{model}") as reply:
        meta = await reply.json(content_type=None)
    if reply.status != 200:
        raise SystemExit(f"{model}: metadata answered {reply.status}: {meta}")
    if not meta.get("inputs"):
        raise SystemExit(f"{model}: its metadata lists no inputs; give --input NAME:DATATYPE:DIMS")
    first = meta["inputs"][0]
    dims = [int(d) for d in first["shape"]]
    return first["name"], first["datatype"], dims[1:] if dims and dims[0] == -1 else dims


def describe(mode: str, status: int, headers: Any, body: bytes) -> str:
    """One line proving the server computed something real."""
    if status != 200:
        return f"HTTP {status}: {body[:200]!r}"
    if mode == "kserve-binary":
        json_end = int(headers.get("Inference-Header-Content-Length", len(body)))
        doc = json.loads(body[:json_end])
        outs = [f"{o['name']}{o['shape']}" for o in doc["outputs"]]
        return f"outputs {', '.join(outs)}; {len(body) - json_end} binary bytes"
    doc = json.loads(body)
    if mode == "kserve-json":
        outs = [f"{o['name']}{o['shape']} ({len(o['data'])} values)" for o in doc["outputs"]]
        return "outputs " + ", ".join(outs)
    if mode == "classify":
        return f"{doc['model']}: top-1 {doc['classes'][0]['label']} ({len(doc['classes'])})"
    return f"{doc['model']}: p(speech) {doc['speech_probability']:.3f}"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    base = f"http://{args.target}"
    connector = aiohttp.TCPConnector(limit=args.concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        url, bodies = await _requests(session, base, args)
        async with session.post(url, data=bodies[0][0], headers=bodies[0][1]) as reply:
            first = await reply.read()
        description = describe(args.mode, reply.status, reply.headers, first)
        if reply.status != 200:
            raise SystemExit(f"{url}: the first request failed: {description}")
        started = time.time()
        cpu0 = time.process_time()
        latencies, errors, issued = await _drive(session, url, bodies, args)
        cpu = time.process_time() - cpu0
    return {
        "latencies": latencies,
        "errors": dict(errors),
        "issued": issued,
        "client_cpu_s": cpu,
        "reply": description,
        "started_wall": started,
    }


async def _requests(
    session: aiohttp.ClientSession, base: str, args: argparse.Namespace
) -> tuple[str, list[Body]]:
    if args.mode.startswith("kserve"):
        tensor = (
            parse_input(args.input)
            if args.input
            else await metadata_input(session, base, args.model)
        )
        binary = args.mode == "kserve-binary"
        bodies = kserve_bodies(args.model, tensor, args.rows, binary, args.seed)
        return f"{base}/v2/models/{args.model}/infer", bodies
    from benchmarks import inputs as bench_inputs

    if args.mode == "classify":
        files = bench_inputs.load(args.images)
        return f"{base}/v1/classify?model={args.model}&top_k=5", [(f, {}) for f in files]
    files = bench_inputs.load(args.audio)
    return f"{base}/v1/detect-speech?model={args.model}", [(f, {}) for f in files]


async def _drive(
    session: aiohttp.ClientSession, url: str, bodies: list[Body], args: argparse.Namespace
) -> tuple[list[float], Counter[str], int]:
    loop_start = time.perf_counter()
    window_start = loop_start + args.warmup
    stop_at = window_start + args.duration
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    issued = 0

    async def one(k: int, scheduled: float) -> None:
        body, headers = bodies[k % len(bodies)]
        status = "?"
        try:
            async with session.post(url, data=body, headers=headers) as reply:
                await reply.read()
                status = str(reply.status)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            status = type(exc).__name__
        end = time.perf_counter()
        if not window_start <= end < stop_at:
            return
        if status == "200":
            latencies.append(end - scheduled)
        else:
            errors[f"HTTP {status}" if status.isdigit() else status] += 1

    async def worker(index: int) -> None:
        nonlocal issued
        k = index
        while issued < args.max_requests and time.perf_counter() < stop_at:
            issued += 1
            await one(k, time.perf_counter())
            k += 1

    async def paced() -> None:
        nonlocal issued
        gate = asyncio.Semaphore(args.concurrency)
        tasks: set[asyncio.Task[None]] = set()
        k = 0
        while issued < args.max_requests:
            scheduled = loop_start + k / args.rate
            if scheduled >= stop_at:
                break
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await gate.acquire()  # bounded in flight; waiting here counts in the latency
            issued += 1

            async def go(k: int = k, at: float = scheduled) -> None:
                try:
                    await one(k, at)
                finally:
                    gate.release()

            task = asyncio.create_task(go())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            k += 1
        if tasks:
            await asyncio.wait(tasks, timeout=args.timeout)

    if args.rate:
        await paced()
    else:
        await asyncio.gather(*(worker(i) for i in range(args.concurrency)))
    return latencies, errors, issued


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="127.0.0.1:8000", help="HOST:PORT of the HTTP server")
    parser.add_argument("--mode", choices=MODES, default="kserve-binary")
    parser.add_argument("--model", required=True)
    parser.add_argument("--input", help="NAME:DATATYPE:D1,D2 (kserve; default: REST metadata)")
    parser.add_argument("--rows", type=int, default=1, help="rows per kserve request")
    parser.add_argument("--images", choices=("jpeg", "png"), default="jpeg")
    parser.add_argument("--audio", choices=("wav", "wav1s", "wav10s", "wav60s"), default="wav1s")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight (max)")
    parser.add_argument("--rate", type=float, default=0.0, help="requests/s (0: closed loop)")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--max-requests", type=int, default=2_000_000)
    parser.add_argument("--timeout", type=float, default=60.0, help="per request, seconds")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    part = asyncio.run(run(args))
    rows = args.rows if args.mode.startswith("kserve") else 1
    started = part["started_wall"]
    result = {
        "client": "http_load",
        "mode": args.mode,
        "model": args.model,
        "target": args.target,
        "concurrency": args.concurrency,
        "rate": args.rate or None,
        "rows_per_request": rows,
        "window_wall": [started + args.warmup, started + args.warmup + args.duration],
        **summarise([part], args.duration, rows),
    }
    print(json.dumps(result))
    return 0 if result["requests"] and not math.isnan(result["p50_ms"]) else 1


if __name__ == "__main__":
    sys.exit(main())

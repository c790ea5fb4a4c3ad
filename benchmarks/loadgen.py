"""Closed-loop (or fixed-rate) gRPC load generator: asyncio + grpc.aio, bounded in-flight.

    python -m benchmarks.loadgen --target 127.0.0.1:8001 --mode kserve --model lenet5_fashion \
        --concurrency 16 --channels 4 --duration 10 --warmup 2

Modes (what one request is):
  kserve    KServe v2 ModelInfer, one tensor of random float32 data as raw_input_contents,
            `--rows` rows (batch axis); works against convserve, Triton/PyTriton and MLServer.
  classify  convserve.v1 ClassifyImage with a real encoded image (JPEG photographs, or the
            Fashion-MNIST PNGs with --images png), top_k 5: decoding and resizing included.
  speech    convserve.v1 DetectSpeech with a real espeak-ng WAV (decode, resample, windows).

Load: `--concurrency` workers each keep one request in flight (closed loop), spread over
`--channels` channels (each its own TCP connection: a local subchannel pool). `--rate R` instead
sends R requests/s on a fixed schedule, at most `--concurrency` in flight; a request's latency then
counts from its scheduled start, so a server that falls behind is not flattered (no coordinated
omission). Requests are serialised once, before the run: the client spends its CPU on gRPC, not on
protobuf. Every run is bounded by `--duration` seconds and `--max-requests`.

Measured: requests completed inside the window [warmup, warmup + duration) per second, rows per
second, latency percentiles of those requests (client side: send to reply), and errors by status.
`--procs P` runs P client processes with the load split between them and merges their samples.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import GRPC_OPTIONS, KSERVE_INFER, percentiles

METHODS = {
    "kserve": KSERVE_INFER,
    "classify": "/convserve.v1.Inference/ClassifyImage",
    "speech": "/convserve.v1.Inference/DetectSpeech",
}
PAYLOADS = 8  # distinct requests cycled through (different data, same shape)


@dataclass
class Sample:
    start: float
    end: float


def build_payloads(args: argparse.Namespace) -> tuple[list[bytes], int]:
    """Serialised requests and the rows each carries."""
    if args.mode == "kserve":
        from service._proto.inference import grpc_service_pb2 as pb

        name, datatype, dims = _input_spec(args)
        rng = np.random.default_rng(args.seed)
        shape = [args.rows, *dims]
        out = []
        for i in range(PAYLOADS):
            data = rng.standard_normal(shape).astype(np.float32)
            request = pb.ModelInferRequest(model_name=args.model, id=str(i))
            request.inputs.add(name=name, datatype=datatype, shape=shape)
            request.raw_input_contents.append(data.tobytes())
            out.append(request.SerializeToString())
        return out, args.rows
    from benchmarks import inputs
    from service._proto.convserve.v1 import inference_pb2 as task_pb

    if args.mode == "classify":
        images = inputs.load(args.images)
        return [
            task_pb.ClassifyImageRequest(image=b, model=args.model, top_k=5).SerializeToString()
            for b in images
        ], 1
    clips = inputs.load("wav")
    return [
        task_pb.DetectSpeechRequest(audio=b, model=args.model).SerializeToString() for b in clips
    ], 1


def _input_spec(args: argparse.Namespace) -> tuple[str, str, list[int]]:
    """--input NAME:DATATYPE:D1,D2,... or, without it, the server's ModelMetadata."""
    if args.input:
        name, datatype, dims = args.input.split(":")
        return name, datatype, [int(d) for d in dims.split(",")]
    from service._proto.inference import grpc_service_pb2 as pb
    from service._proto.inference import grpc_service_pb2_grpc as pb_grpc

    with grpc.insecure_channel(args.target) as channel:
        meta = pb_grpc.GRPCInferenceServiceStub(channel).ModelMetadata(
            pb.ModelMetadataRequest(name=args.model), timeout=10
        )
    tensor = meta.inputs[0]
    dims = [int(d) for d in tensor.shape]
    if dims and dims[0] == -1:
        dims = dims[1:]
    if any(d < 0 for d in dims):
        raise SystemExit(f"{args.model}: input {tensor.name} has dynamic dims {dims}; use --input")
    return tensor.name, tensor.datatype, dims


def check_reply(mode: str, reply: bytes) -> str:
    """A one-line description of a reply, proving the server computed something real."""
    if mode == "kserve":
        from service._proto.inference import grpc_service_pb2 as pb

        r = pb.ModelInferResponse.FromString(reply)
        outs = [f"{o.name}{list(o.shape)}" for o in r.outputs]
        raw = sum(len(b) for b in r.raw_output_contents)
        typed = sum(len(o.contents.fp32_contents) for o in r.outputs)
        return f"outputs {', '.join(outs)}; {raw} raw bytes, {typed} typed fp32 values"
    from service._proto.convserve.v1 import inference_pb2 as task_pb

    if mode == "classify":
        c = task_pb.ClassifyImageResponse.FromString(reply)
        top = c.classes[0] if c.classes else None
        return f"{c.model} v{c.version}: top-1 {top.label if top else '?'} ({len(c.classes)})"
    s = task_pb.DetectSpeechResponse.FromString(reply)
    return f"{s.model}: p(speech) {s.speech_probability:.3f}, {len(s.windows)} windows"


async def run_load(args: argparse.Namespace, payloads: list[bytes]) -> dict[str, Any]:
    options = [*GRPC_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]
    channels = [
        grpc.aio.insecure_channel(args.target, options=options) for _ in range(args.channels)
    ]
    calls = [ch.unary_unary(METHODS[args.mode]) for ch in channels]  # bytes in, bytes out
    for ch in channels:
        await asyncio.wait_for(ch.channel_ready(), 30)
    # One request per channel before the clock starts: connections up, reply checked.
    first = await calls[0](payloads[0], timeout=args.timeout)
    description = check_reply(args.mode, first)
    if args.start_at:
        await asyncio.sleep(max(0.0, args.start_at - time.time()))

    loop_start = time.perf_counter()
    window_start = loop_start + args.warmup
    stop_at = window_start + args.duration
    samples: list[Sample] = []
    errors: Counter[str] = Counter()
    issued = 0
    budget = args.max_requests

    async def one(call: Any, payload: bytes, scheduled: float) -> None:
        # Counted by when it completes: whatever ends inside the window, whenever it started.
        try:
            await call(payload, timeout=args.timeout)
        except grpc.aio.AioRpcError as exc:
            if window_start <= time.perf_counter() < stop_at:
                errors[exc.code().name] += 1
            return
        end = time.perf_counter()
        if window_start <= end < stop_at:
            samples.append(Sample(scheduled, end))

    async def worker(index: int) -> None:
        nonlocal issued
        call = calls[index % len(calls)]
        k = index
        while issued < budget:
            now = time.perf_counter()
            if now >= stop_at:
                return
            issued += 1
            await one(call, payloads[k % len(payloads)], now)
            k += 1

    async def paced() -> None:
        nonlocal issued
        gate = asyncio.Semaphore(args.concurrency)
        tasks: set[asyncio.Task[None]] = set()
        interval = 1.0 / args.rate
        k = 0
        while issued < budget:
            scheduled = loop_start + k * interval
            if scheduled >= stop_at:
                break
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await gate.acquire()  # bounded in flight; waiting here counts in the latency
            issued += 1
            call = calls[k % len(calls)]

            async def go(call: Any = call, k: int = k, scheduled: float = scheduled) -> None:
                try:
                    await one(call, payloads[k % len(payloads)], scheduled)
                finally:
                    gate.release()

            task = asyncio.create_task(go())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            k += 1
        if tasks:
            await asyncio.wait(tasks, timeout=args.timeout)

    cpu0 = time.process_time()
    if args.rate:
        await paced()
    else:
        await asyncio.gather(*(worker(i) for i in range(args.concurrency)))
    cpu = time.process_time() - cpu0
    for ch in channels:
        await ch.close()
    return {
        "latencies": [s.end - s.start for s in samples],
        "errors": dict(errors),
        "issued": issued,
        "window_s": args.duration,
        "client_cpu_s": cpu,
        "reply": description,
    }


def summarise(args: argparse.Namespace, parts: list[dict[str, Any]], rows: int) -> dict[str, Any]:
    latencies = [x for p in parts for x in p["latencies"]]
    errors: Counter[str] = Counter()
    for p in parts:
        errors.update(p["errors"])
    window = args.duration
    completed = len(latencies)
    return {
        "client": "loadgen",
        "mode": args.mode,
        "model": args.model,
        "target": args.target,
        "concurrency": args.concurrency,
        "rate": args.rate or None,
        "channels": args.channels,
        "procs": args.procs,
        "rows_per_request": rows,
        "requests": completed,
        "errors": dict(errors),
        "window_s": window,
        "throughput_rps": completed / window,
        "rows_per_s": completed * rows / window,
        **percentiles(latencies),
        "client_cpu_s": sum(p["client_cpu_s"] for p in parts),
        "reply": parts[0]["reply"] if parts else "",
    }


def _child_args(args: argparse.Namespace, share: int, start_at: float) -> list[str]:
    argv = [
        "--target", args.target, "--mode", args.mode, "--model", args.model,
        "--concurrency", str(share), "--channels", str(max(1, args.channels // args.procs)),
        "--duration", str(args.duration), "--warmup", str(args.warmup),
        "--max-requests", str(max(1, args.max_requests // args.procs)),
        "--rows", str(args.rows), "--timeout", str(args.timeout), "--images", args.images,
        "--start-at", repr(start_at), "--raw-samples",
    ]  # fmt: skip
    if args.input:
        argv += ["--input", args.input]
    if args.rate:
        argv += ["--rate", repr(args.rate / args.procs)]
    return argv


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="127.0.0.1:8001")
    parser.add_argument("--mode", choices=sorted(METHODS), default="kserve")
    parser.add_argument("--model", required=True)
    parser.add_argument("--input", help="NAME:DATATYPE:D1,D2 (kserve; default: ModelMetadata)")
    parser.add_argument("--rows", type=int, default=1, help="rows per kserve request")
    parser.add_argument("--images", choices=("jpeg", "png"), default="jpeg")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight (max)")
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--rate", type=float, default=0.0, help="requests/s (0: closed loop)")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--max-requests", type=int, default=2_000_000)
    parser.add_argument("--timeout", type=float, default=60.0, help="per request, seconds")
    parser.add_argument("--procs", type=int, default=1, help="client processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--raw-samples", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.channels = max(1, min(args.channels, args.concurrency))

    if args.procs > 1:
        start_at = time.time() + 3.0  # children connect first, then start together
        shares = [
            args.concurrency // args.procs + (i < args.concurrency % args.procs)
            for i in range(args.procs)
        ]
        root = Path(__file__).resolve().parents[1]
        children = [
            subprocess.Popen(
                [sys.executable, "-m", "benchmarks.loadgen", *_child_args(args, share, start_at)],
                stdout=subprocess.PIPE,
                cwd=root,
            )
            for share in shares
            if share > 0
        ]
        limit = 60 + args.warmup + args.duration + args.timeout
        parts = [json.loads(c.communicate(timeout=limit)[0]) for c in children]
        _, rows = (None, args.rows if args.mode == "kserve" else 1)
    else:
        payloads, rows = build_payloads(args)
        parts = [asyncio.run(run_load(args, payloads))]
    if args.raw_samples:
        print(json.dumps(parts[0]))
        return 0
    result = summarise(args, parts, rows)
    print(json.dumps(result))
    return 0 if result["requests"] and not math.isnan(result["p50_ms"]) else 1


if __name__ == "__main__":
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
    sys.exit(main())

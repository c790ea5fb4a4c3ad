"""Closed-loop (or fixed-rate) gRPC load generator: asyncio + grpc.aio, bounded in-flight.

A command line over service/loadgen.py (the engine `convserve tune` uses too).

    python -m benchmarks.loadgen --target 127.0.0.1:8001 --mode kserve --model lenet5_fashion \
        --concurrency 16 --channels 4 --duration 10 --warmup 2

Modes (what one request is):
  kserve    KServe v2 ModelInfer, one tensor of random float32 data as raw_input_contents,
            `--rows` rows (batch axis); works against convserve, Triton/PyTriton and MLServer.
  classify  convserve.v1 ClassifyImage with a real encoded image (JPEG photographs, or the
            Fashion-MNIST PNGs with --images png), top_k 5: decoding and resizing included.
  speech    convserve.v1 DetectSpeech with real espeak-ng WAVs (decode, resample, windows):
            `--audio wav` the phrases at 22.05 kHz, `wav1s` / `wav10s` / `wav60s` clips of that
            many seconds at 16 kHz (benchmarks/inputs.py).

Load: `--concurrency` workers each keep one request in flight (closed loop), spread over
`--channels` channels (each its own TCP connection: a local subchannel pool). `--rate R` instead
sends R requests/s on a fixed schedule, at most `--concurrency` in flight; a request's latency then
counts from its scheduled start, so a server that falls behind is not flattered (no coordinated
omission). Requests are serialised once, before the run: the client spends its CPU on gRPC, not on
protobuf. Every run is bounded by `--duration` seconds and `--max-requests`.

Measured: requests completed inside the window [warmup, warmup + duration) per second, rows per
second, latency percentiles of those requests (client side: send to reply), and errors by status.
`--procs P` runs P client processes with the load split between them and merges their samples.
Prints one JSON object; with `--wall-window` it also has `window_wall`, the measured window in
wall-clock seconds (time.time()), so that a caller sampling the server's CPU
(benchmarks/cputree.py) can read the CPU spent in it.
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
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from service.loadgen import (
    KSERVE_INFER,
    Load,
    describe_kserve_reply,
    kserve_payloads,
    metadata_inputs,
    parse_input,
    run_load,
    summarise,
)

AUDIO_KINDS = ("wav", "wav1s", "wav10s", "wav60s")
METHODS = {
    "kserve": KSERVE_INFER,
    "classify": "/convserve.v1.Inference/ClassifyImage",
    "speech": "/convserve.v1.Inference/DetectSpeech",
}


def build_payloads(args: argparse.Namespace) -> tuple[list[bytes], int]:
    """Serialised requests and the rows each carries."""
    if args.mode == "kserve":
        try:
            inputs = (
                [parse_input(args.input)]
                if args.input
                else metadata_inputs(args.target, args.model)[:1]
            )
        except ValueError as exc:
            raise SystemExit(str(exc)) from None
        return kserve_payloads(args.model, inputs, args.rows, args.seed), args.rows
    from benchmarks import inputs as bench_inputs
    from service._proto.convserve.v1 import inference_pb2 as task_pb

    if args.mode == "classify":
        images = bench_inputs.load(args.images)
        return [
            task_pb.ClassifyImageRequest(image=b, model=args.model, top_k=5).SerializeToString()
            for b in images
        ], 1
    clips = bench_inputs.load(args.audio)
    return [
        task_pb.DetectSpeechRequest(audio=b, model=args.model).SerializeToString() for b in clips
    ], 1


def check_reply(mode: str, reply: bytes) -> str:
    """A one-line description of a reply, proving the server computed something real."""
    if mode == "kserve":
        return describe_kserve_reply(reply)
    from service._proto.convserve.v1 import inference_pb2 as task_pb

    if mode == "classify":
        c = task_pb.ClassifyImageResponse.FromString(reply)
        top = c.classes[0] if c.classes else None
        return f"{c.model} v{c.version}: top-1 {top.label if top else '?'} ({len(c.classes)})"
    s = task_pb.DetectSpeechResponse.FromString(reply)
    return f"{s.model}: p(speech) {s.speech_probability:.3f}, {len(s.windows)} windows"


class FirstReply:
    """The reply check, which also notes when the first reply came: the load starts after it."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.wall = 0.0

    def __call__(self, reply: bytes) -> str:
        self.wall = time.time()
        return check_reply(self.mode, reply)


def load_of(args: argparse.Namespace) -> Load:
    return Load(
        concurrency=args.concurrency,
        channels=args.channels,
        rate=args.rate,
        duration=args.duration,
        warmup=args.warmup,
        max_requests=args.max_requests,
        timeout=args.timeout,
        start_at=args.start_at,
    )


def summary(args: argparse.Namespace, parts: list[dict[str, Any]], rows: int) -> dict[str, Any]:
    started = max([args.start_at, *(p.get("started_wall", 0.0) for p in parts)])
    window = [started + args.warmup, started + args.warmup + args.duration]
    return {
        **({"window_wall": window} if args.wall_window else {}),
        "client": "loadgen",
        "mode": args.mode,
        "model": args.model,
        "target": args.target,
        "concurrency": args.concurrency,
        "rate": args.rate or None,
        "channels": args.channels,
        "procs": args.procs,
        "rows_per_request": rows,
        **summarise(parts, args.duration, rows),
    }


def _child_args(args: argparse.Namespace, share: int, start_at: float) -> list[str]:
    argv = [
        "--target", args.target, "--mode", args.mode, "--model", args.model,
        "--concurrency", str(share), "--channels", str(max(1, args.channels // args.procs)),
        "--duration", str(args.duration), "--warmup", str(args.warmup),
        "--max-requests", str(max(1, args.max_requests // args.procs)),
        "--rows", str(args.rows), "--timeout", str(args.timeout), "--images", args.images,
        "--audio", args.audio,
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
    parser.add_argument("--audio", choices=AUDIO_KINDS, default="wav", help="speech mode's WAVs")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight (max)")
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--rate", type=float, default=0.0, help="requests/s (0: closed loop)")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--max-requests", type=int, default=2_000_000)
    parser.add_argument("--timeout", type=float, default=60.0, help="per request, seconds")
    parser.add_argument("--procs", type=int, default=1, help="client processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wall-window", action="store_true", help="print window_wall too")
    parser.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--raw-samples", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.channels = max(1, min(args.channels, args.concurrency))

    if args.procs > 1:
        start_at = time.time() + 3.0  # children connect first, then start together
        args.start_at = start_at
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
        rows = args.rows if args.mode == "kserve" else 1
    else:
        payloads, rows = build_payloads(args)
        first = FirstReply(args.mode)
        part = asyncio.run(
            run_load(args.target, METHODS[args.mode], payloads, load_of(args), first)
        )
        part["started_wall"] = max(args.start_at, first.wall)
        parts = [part]
    if args.raw_samples:
        print(json.dumps(parts[0]))
        return 0
    result = summary(args, parts, rows)
    print(json.dumps(result))
    return 0 if result["requests"] and not math.isnan(result["p50_ms"]) else 1


if __name__ == "__main__":
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
    sys.exit(main())

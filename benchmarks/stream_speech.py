"""Streaming speech detection under load: StreamDetectSpeech, audio seconds per second.

    python -m benchmarks.stream_speech --target 127.0.0.1:8001 --model speech_cnn \
        --audio wav60s --chunk-ms 250 --concurrency 4 --duration 10 --warmup 2

`--concurrency` workers each stream one clip after another (benchmarks/inputs.py, 16 kHz PCM)
in chunks of `--chunk-ms` of little-endian 16-bit PCM, as fast as the server takes them (gRPC
flow control, not real time: this measures how much audio the server can follow), half-close,
and read the updates until the final one. `audio_s_per_s`: how far the reported windows advanced
through the audio (the latest window end of each stream) in updates that arrived inside the
window [warmup, warmup + duration), per second; `windows_per_s` likewise. A stream counts as a
request when its final update arrives inside the window; latencies are whole-stream times.
Prints one JSON object like benchmarks/loadgen.py's (with `window_wall` for the server CPU meter).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from service._proto.convserve.v1 import inference_pb2 as pb
from service.loadgen import GRPC_OPTIONS, summarise

METHOD = "/convserve.v1.Inference/StreamDetectSpeech"


def clips(kind: str) -> list[tuple[bytes, int]]:
    """(PCM s16le bytes, sample rate) of each clip of one kind."""
    import soundfile

    from benchmarks import inputs as bench_inputs

    out = []
    for data in bench_inputs.load(kind):
        x, rate = soundfile.read(io.BytesIO(data), dtype="int16")
        out.append((np.ascontiguousarray(x, dtype="<i2").tobytes(), int(rate)))
    return out


def messages(model: str, pcm: bytes, rate: int, chunk_ms: float) -> list[bytes]:
    step = max(2, int(rate * chunk_ms / 1000) * 2)
    chunks = [pcm[i : i + step] for i in range(0, len(pcm), step)]
    first = pb.StreamDetectSpeechRequest(model=model, sample_rate=rate, pcm_s16le=chunks[0])
    rest = [pb.StreamDetectSpeechRequest(pcm_s16le=c) for c in chunks[1:]]
    return [m.SerializeToString() for m in (first, *rest)]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    streams = [messages(args.model, pcm, rate, args.chunk_ms) for pcm, rate in clips(args.audio)]
    options = [*GRPC_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]
    channel = grpc.aio.insecure_channel(args.target, options=options)
    call = channel.stream_stream(METHOD, None, None)  # bytes in, bytes out

    progress = {"audio_s": 0.0, "windows": 0}
    bounds = [math.inf, math.inf]  # the measured window, perf_counter(); set below

    async def one(k: int) -> int:
        msgs = streams[k % len(streams)]

        async def send() -> AsyncIterator[bytes]:
            for m in msgs:
                yield m

        windows, reached, final = 0, 0.0, False
        async for raw in call(send(), timeout=args.timeout):
            update = pb.StreamDetectSpeechResponse.FromString(raw)
            windows += len(update.windows)
            final = final or update.final
            end = max((w.end_s for w in update.windows), default=reached)
            if bounds[0] <= time.perf_counter() < bounds[1]:
                progress["audio_s"] += max(0.0, end - reached)
                progress["windows"] += len(update.windows)
            reached = max(reached, end)
        if not final:
            raise RuntimeError("the stream ended without its final update")
        return windows

    try:
        await asyncio.wait_for(channel.channel_ready(), 30)
        windows = await one(0)  # before the clock: connected, answers checked
        started = time.time()
        cpu0 = time.process_time()
        loop_start = time.perf_counter()
        window_start, stop_at = loop_start + args.warmup, loop_start + args.warmup + args.duration
        bounds[:] = [window_start, stop_at]
        latencies: list[float] = []
        errors: Counter[str] = Counter()

        async def worker(index: int) -> None:
            k = index
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                try:
                    await one(k)
                    status = "OK"
                except grpc.aio.AioRpcError as exc:
                    status = exc.code().name
                end = time.perf_counter()
                if window_start <= end < stop_at:
                    if status == "OK":
                        latencies.append(end - t0)
                    else:
                        errors[status] += 1
                k += 1

        await asyncio.gather(*(worker(i) for i in range(args.concurrency)))
        cpu = time.process_time() - cpu0
    finally:
        await channel.close(None)
    return {
        "latencies": latencies,
        "errors": dict(errors),
        "client_cpu_s": cpu,
        "reply": f"{windows} windows for the first clip",
        "started_wall": started,
        "audio_s": progress["audio_s"],
        "windows": progress["windows"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="127.0.0.1:8001")
    parser.add_argument("--model", default="speech_cnn")
    parser.add_argument("--audio", choices=("wav1s", "wav10s", "wav60s"), default="wav60s")
    parser.add_argument("--chunk-ms", type=float, default=250.0)
    parser.add_argument("--concurrency", type=int, default=4, help="streams at once")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--timeout", type=float, default=120.0, help="per stream, seconds")
    args = parser.parse_args(argv)
    part = asyncio.run(run(args))
    started = part["started_wall"]
    result = {
        "client": "stream_speech",
        "mode": "stream",
        "model": args.model,
        "target": args.target,
        "concurrency": args.concurrency,
        "audio": args.audio,
        "chunk_ms": args.chunk_ms,
        "window_wall": [started + args.warmup, started + args.warmup + args.duration],
        **summarise([part], args.duration),
        "audio_s_per_s": part["audio_s"] / args.duration,
        "windows_per_s": part["windows"] / args.duration,
    }
    print(json.dumps(result))
    return 0 if result["requests"] and not math.isnan(result["p50_ms"]) else 1


if __name__ == "__main__":
    sys.exit(main())

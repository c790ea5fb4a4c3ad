"""Closed-loop or fixed-rate load on one gRPC unary method: asyncio + grpc.aio, bounded in flight.

The load generator `convserve tune` and benchmarks/loadgen.py share. Requests are serialised
before the run (the client spends its CPU on gRPC, not on protobuf) and sent as bytes, so any
unary method works; `kserve_payloads` builds KServe v2 ModelInfer requests of random data from
the server's ModelMetadata.

Load (`Load`): `concurrency` workers each keep one request in flight (closed loop), spread over
`channels` channels, each its own TCP connection (a local subchannel pool). With `rate` R, R
requests/s go out on a fixed schedule instead, at most `concurrency` in flight; a request's
latency then counts from its scheduled start, so a server that falls behind is not flattered (no
coordinated omission). In flight stays capped either way: thousands of unary calls at once on a
grpc.aio channel end CANCELLED. Every run is bounded by time (warmup + duration, then at most one
`timeout` for the calls still in flight) and by count (`max_requests`).

Measured (`run_load`): the requests completed inside the window [warmup, warmup + duration),
their latencies (client side: send to reply) and the errors by status; `summarise` turns one or
more such runs into throughput and percentiles.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from service import datatypes

KSERVE_INFER = "/inference.GRPCInferenceService/ModelInfer"
GRPC_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]
PAYLOADS = 8  # distinct requests cycled through (different data, same shape)


@dataclass(frozen=True)
class Load:
    """How one run loads the server (see the module docstring)."""

    concurrency: int = 16
    channels: int = 4
    rate: float = 0.0  # requests/s; 0: closed loop
    duration: float = 10.0  # measured seconds
    warmup: float = 2.0  # unmeasured seconds first
    max_requests: int = 2_000_000
    timeout: float = 60.0  # per request, seconds
    start_at: float = 0.0  # wall-clock time to start at (processes starting together)


def percentiles(latencies_s: Sequence[float] | np.ndarray) -> dict[str, float]:
    """p50/p90/p99 (and mean, max) in milliseconds; NaN when there is nothing to summarise."""
    arr = np.asarray(latencies_s, dtype=np.float64) * 1e3
    if arr.size == 0:
        nan = float("nan")
        return {"p50_ms": nan, "p90_ms": nan, "p99_ms": nan, "mean_ms": nan, "max_ms": nan}
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "mean_ms": float(arr.mean()),
        "max_ms": float(arr.max()),
    }


async def run_load(
    target: str,
    method: str,
    payloads: Sequence[bytes],
    load: Load,
    check: Callable[[bytes], str] | None = None,
) -> dict[str, Any]:
    """One run; the raw samples (`latencies` in seconds, `errors`, `issued`, `window_s`,
    `client_cpu_s`, `reply`: `check` of the first reply). grpc.aio.AioRpcError when the first
    request, sent before the clock starts, fails."""
    options = [*GRPC_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]
    count = max(1, min(load.channels, load.concurrency))
    channels = [grpc.aio.insecure_channel(target, options=options) for _ in range(count)]
    try:
        calls = [ch.unary_unary(method, None, None) for ch in channels]  # bytes in, bytes out
        for ch in channels:
            await asyncio.wait_for(ch.channel_ready(), 30)
        # One request before the clock starts: connections up, reply checked.
        first = await calls[0](payloads[0], timeout=load.timeout)
        description = check(first) if check is not None else ""
        if load.start_at:
            await asyncio.sleep(max(0.0, load.start_at - time.time()))
        cpu0 = time.process_time()
        latencies, errors, issued = await _drive(calls, payloads, load)
        cpu = time.process_time() - cpu0
    finally:
        for ch in channels:
            await ch.close(None)
    return {
        "latencies": latencies,
        "errors": dict(errors),
        "issued": issued,
        "window_s": load.duration,
        "client_cpu_s": cpu,
        "reply": description,
    }


async def _drive(
    calls: Sequence[Any], payloads: Sequence[bytes], load: Load
) -> tuple[list[float], Counter[str], int]:
    loop_start = time.perf_counter()
    window_start = loop_start + load.warmup
    stop_at = window_start + load.duration
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    issued = 0

    async def one(call: Any, payload: bytes, scheduled: float) -> None:
        # Counted by when it completes: whatever ends inside the window, whenever it started.
        try:
            await call(payload, timeout=load.timeout)
        except grpc.aio.AioRpcError as exc:
            if window_start <= time.perf_counter() < stop_at:
                errors[exc.code().name] += 1
            return
        end = time.perf_counter()
        if window_start <= end < stop_at:
            latencies.append(end - scheduled)

    async def worker(index: int) -> None:
        nonlocal issued
        call = calls[index % len(calls)]
        k = index
        while issued < load.max_requests:
            now = time.perf_counter()
            if now >= stop_at:
                return
            issued += 1
            await one(call, payloads[k % len(payloads)], now)
            k += 1

    async def paced() -> None:
        nonlocal issued
        gate = asyncio.Semaphore(load.concurrency)
        tasks: set[asyncio.Task[None]] = set()
        interval = 1.0 / load.rate
        k = 0
        while issued < load.max_requests:
            scheduled = loop_start + k * interval
            if scheduled >= stop_at:
                break
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await gate.acquire()  # bounded in flight; waiting here counts in the latency
            issued += 1
            call = calls[k % len(calls)]

            async def go(call: Any = call, k: int = k, at: float = scheduled) -> None:
                try:
                    await one(call, payloads[k % len(payloads)], at)
                finally:
                    gate.release()

            task = asyncio.create_task(go())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            k += 1
        if tasks:
            await asyncio.wait(tasks, timeout=load.timeout)

    if load.rate:
        await paced()
    else:
        await asyncio.gather(*(worker(i) for i in range(load.concurrency)))
    return latencies, errors, issued


def summarise(parts: Sequence[dict[str, Any]], window_s: float, rows: int = 1) -> dict[str, Any]:
    """Throughput, percentiles and errors of one or more runs over the same window."""
    latencies = [x for p in parts for x in p["latencies"]]
    errors: Counter[str] = Counter()
    for p in parts:
        errors.update(p["errors"])
    completed = len(latencies)
    return {
        "requests": completed,
        "errors": dict(errors),
        "window_s": window_s,
        "throughput_rps": completed / window_s,
        "rows_per_s": completed * rows / window_s,
        **percentiles(latencies),
        "client_cpu_s": sum(p["client_cpu_s"] for p in parts),
        "reply": parts[0]["reply"] if parts else "",
    }


# ---- KServe v2 ModelInfer payloads ---------------------------------------------------------


def parse_input(text: str) -> tuple[str, str, list[int]]:
    """`NAME:DATATYPE:D1,D2,...` (dims without the batch axis) → (name, datatype, dims)."""
    try:
        name, datatype, dims = text.split(":")
        return name, datatype, [int(d) for d in dims.split(",")]
    except ValueError:
        raise ValueError(f"--input {text!r}: expected NAME:DATATYPE:D1,D2,...") from None


def metadata_inputs(
    target: str, model: str, timeout: float = 10.0
) -> list[tuple[str, str, list[int]]]:
    """(name, datatype, dims without the batch axis) of every input, from ModelMetadata.

    ValueError when a dimension other than the batch axis is dynamic (give the shape instead)."""
    from service._proto.inference import grpc_service_pb2 as pb
    from service._proto.inference import grpc_service_pb2_grpc as pb_grpc

    with grpc.insecure_channel(target) as channel:
        meta = pb_grpc.GRPCInferenceServiceStub(channel).ModelMetadata(
            pb.ModelMetadataRequest(name=model), timeout=timeout
        )
    out = []
    for tensor in meta.inputs:
        dims = [int(d) for d in tensor.shape]
        if dims and dims[0] == -1:
            dims = dims[1:]
        if any(d < 0 for d in dims):
            raise ValueError(f"{model}: input {tensor.name} has dynamic dims {dims}; use --input")
        out.append((tensor.name, tensor.datatype, dims))
    return out


def kserve_payloads(
    model: str, inputs: Sequence[tuple[str, str, list[int]]], rows: int = 1, seed: int = 0
) -> list[bytes]:
    """Serialised ModelInferRequests of random data, `rows` rows each (the batch axis)."""
    from service._proto.inference import grpc_service_pb2 as pb

    rng = np.random.default_rng(seed)
    out = []
    for i in range(PAYLOADS):
        request = pb.ModelInferRequest(model_name=model, id=str(i))
        for name, datatype, dims in inputs:
            shape = [rows, *dims]
            request.inputs.add(name=name, datatype=datatype, shape=shape)
            request.raw_input_contents.append(_random(rng, datatype, shape).tobytes())
        out.append(request.SerializeToString())
    return out


def _random(rng: np.random.Generator, datatype: str, shape: list[int]) -> np.ndarray:
    kind = datatypes.by_name(datatype)
    if kind is None or kind.is_bytes:
        raise ValueError(f"cannot draw random {datatype} data (use a numeric input)")
    if kind.dtype.kind == "f":
        return rng.standard_normal(shape).astype(kind.dtype)
    if kind.dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(kind.dtype)
    return rng.integers(0, 10, shape).astype(kind.dtype)  # small: valid as indices too


def describe_kserve_reply(reply: bytes) -> str:
    """A one-line description of a ModelInfer reply, proving the server computed something."""
    from service._proto.inference import grpc_service_pb2 as pb

    r = pb.ModelInferResponse.FromString(reply)
    outs = [f"{o.name}{list(o.shape)}" for o in r.outputs]
    raw = sum(len(b) for b in r.raw_output_contents)
    typed = sum(len(o.contents.fp32_contents) for o in r.outputs)
    return f"outputs {', '.join(outs)}; {raw} raw bytes, {typed} typed fp32 values"

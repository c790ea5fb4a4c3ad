"""service/loadgen.py against the real server: closed loop, fixed rate, the bounds, the errors; and
benchmarks/loadgen.py's command line and JSON, which benchmarks/run.py reads."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys

import grpc
import numpy as np
import pytest

from service._proto.inference import grpc_service_pb2 as pb
from service.loadgen import (
    KSERVE_INFER,
    Load,
    describe_kserve_reply,
    kserve_payloads,
    metadata_inputs,
    parse_input,
    percentiles,
    run_load,
    summarise,
)
from tests.service.conftest import ROOT


def test_payloads_follow_the_metadata(server, rng):
    inputs = metadata_inputs(server.target, "tiny_image")
    assert inputs == [("input", "FP32", [1, 8, 8])]
    rows = int(rng.integers(1, 5))
    seed = int(rng.integers(0, 2**31))
    payloads = kserve_payloads("tiny_image", inputs, rows=rows, seed=seed)
    first = pb.ModelInferRequest.FromString(payloads[0])
    assert list(first.inputs[0].shape) == [rows, 1, 8, 8]
    data = [
        np.frombuffer(pb.ModelInferRequest.FromString(p).raw_input_contents[0], "<f4")
        for p in payloads
    ]
    assert len({d.tobytes() for d in data}) == len(payloads)  # different data, same shape
    assert all(d.size == rows * 64 and np.isfinite(d).all() for d in data)


def test_payloads_for_every_input_and_datatype(server):
    inputs = metadata_inputs(server.target, "half")
    assert [(n, t) for n, t, _ in inputs] == [("x", "FP16"), ("mask", "BOOL")]
    request = pb.ModelInferRequest.FromString(kserve_payloads("half", inputs, rows=3)[0])
    assert [len(raw) for raw in request.raw_input_contents] == [3 * 4 * 2, 3 * 4]


def test_closed_loop_measures_real_replies(server):
    inputs = metadata_inputs(server.target, "tiny_image")
    payloads = kserve_payloads("tiny_image", inputs)
    load = Load(concurrency=4, channels=2, duration=0.6, warmup=0.2, timeout=10)
    raw = asyncio.run(run_load(server.target, KSERVE_INFER, payloads, load, describe_kserve_reply))
    assert raw["reply"].startswith("outputs logits[1, 10]")
    assert raw["errors"] == {}
    assert raw["latencies"] and all(x > 0 for x in raw["latencies"])
    assert raw["issued"] >= len(raw["latencies"])
    s = summarise([raw], load.duration)
    assert s["requests"] == len(raw["latencies"])
    assert s["throughput_rps"] == pytest.approx(s["requests"] / 0.6)
    assert 0 < s["p50_ms"] <= s["p99_ms"] <= s["max_ms"]


def test_a_run_is_bounded_by_count(server):
    payloads = kserve_payloads("tiny_image", metadata_inputs(server.target, "tiny_image"))
    load = Load(concurrency=3, duration=30, warmup=0, max_requests=25, timeout=10)
    raw = asyncio.run(run_load(server.target, KSERVE_INFER, payloads, load))
    assert raw["issued"] == 25
    assert len(raw["latencies"]) <= 25


def test_fixed_rate_sends_on_schedule(server):
    payloads = kserve_payloads("tiny_image", metadata_inputs(server.target, "tiny_image"))
    load = Load(concurrency=8, rate=50, duration=1.0, warmup=0.2, timeout=10)
    raw = asyncio.run(run_load(server.target, KSERVE_INFER, payloads, load))
    # The schedule has rate × (warmup + duration) send times (±1 at the edge of the window).
    assert abs(raw["issued"] - 60) <= 1
    assert raw["errors"] == {}


def test_errors_are_counted_by_status(server):
    # The slow model's 1.5 s batch delay outlasts a 0.3 s deadline: every call in the window
    # ends DEADLINE_EXCEEDED (the first, before the clock, gets a long timeout through a payload
    # of the tiny model, so the run starts).
    slow = kserve_payloads("slow", metadata_inputs(server.target, "slow"))
    tiny = kserve_payloads("tiny_image", metadata_inputs(server.target, "tiny_image"))

    async def go():
        load = Load(concurrency=2, duration=1.0, warmup=0.0, timeout=0.3)
        return await run_load(server.target, KSERVE_INFER, [tiny[0], *slow], load)

    raw = asyncio.run(go())
    assert raw["errors"].get("DEADLINE_EXCEEDED", 0) > 0


def test_a_failing_first_request_raises(server):
    payloads = kserve_payloads("no_such_model", [("input", "FP32", [1, 8, 8])])
    load = Load(concurrency=1, duration=0.2, warmup=0, timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        asyncio.run(run_load(server.target, KSERVE_INFER, payloads, load))
    assert info.value.code() is grpc.StatusCode.NOT_FOUND


def test_percentiles_and_input_specs():
    p = percentiles([0.001 * i for i in range(1, 101)])
    assert p["p50_ms"] == pytest.approx(50.5)
    assert p["max_ms"] == pytest.approx(100.0)
    assert all(math.isnan(v) for v in percentiles([]).values())
    assert parse_input("x:FP32:3,4") == ("x", "FP32", [3, 4])
    with pytest.raises(ValueError, match="NAME:DATATYPE"):
        parse_input("x:FP32")


def test_benchmarks_command_line_prints_its_json(server):
    cmd = [
        sys.executable, "-m", "benchmarks.loadgen", "--target", server.target,
        "--model", "tiny_image", "--concurrency", "2", "--duration", "0.5", "--warmup", "0.2",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = {
        "client", "mode", "model", "target", "concurrency", "rate", "channels", "procs",
        "rows_per_request", "requests", "errors", "window_s", "throughput_rps", "rows_per_s",
        "p50_ms", "p90_ms", "p99_ms", "mean_ms", "max_ms", "client_cpu_s", "reply",
    }  # fmt: skip
    assert set(result) == expected
    assert result["requests"] > 0 and result["errors"] == {}
    assert result["reply"].startswith("outputs logits")

"""benchmarks/http_load.py against the real server: KServe v2 REST with JSON and binary tensors,
closed loop and fixed rate, its bounds, and what it says when the first request fails."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import http_load


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, object]]:
    code = http_load.main(list(args))
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.parametrize("mode", ["kserve-json", "kserve-binary"])
def test_closed_loop_counts_real_replies(server, capsys, mode) -> None:
    rows = int(np.random.default_rng().integers(1, 5))
    code, result = run(
        capsys, "--target", str(server.endpoint("http")), "--mode", mode, "--model",
        "tiny_image", "--rows", str(rows), "--concurrency", "3", "--duration", "0.6",
        "--warmup", "0.2",
    )  # fmt: skip
    assert code == 0
    assert result["errors"] == {}
    assert result["requests"] > 0
    assert result["rows_per_s"] == pytest.approx(rows * result["throughput_rps"])
    reply = str(result["reply"])
    if mode == "kserve-json":
        assert reply == f"outputs logits[{rows}, 3] ({3 * rows} values)"
    else:  # float32 outputs sent as binary: 4 bytes per value
        assert reply == f"outputs logits[{rows}, 3]; {12 * rows} binary bytes"
    start, end = result["window_wall"]  # type: ignore[misc]
    assert end - start == pytest.approx(0.6)
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]


def test_fixed_rate_is_bounded_by_count(server, capsys) -> None:
    limit = int(np.random.default_rng().integers(3, 9))
    code, result = run(
        capsys, "--target", str(server.endpoint("http")), "--mode", "kserve-binary",
        "--model", "tiny_image", "--input", "input:FP32:1,4,4", "--rate", "200",
        "--concurrency", "4", "--duration", "1", "--warmup", "0", "--max-requests", str(limit),
    )  # fmt: skip
    assert result["rate"] == 200
    assert 0 < int(result["requests"]) <= limit  # type: ignore[call-overload]
    assert code == 0


def test_a_refused_first_request_stops_the_run(server, capsys) -> None:
    with pytest.raises(SystemExit, match=r"the first request failed: HTTP 400"):
        http_load.main([
            "--target", str(server.endpoint("http")), "--mode", "kserve-json",
            "--model", "tiny_image", "--input", "input:FP32:5", "--duration", "0.2",
        ])  # fmt: skip


def test_bodies_carry_the_tensor_both_ways() -> None:
    rng = np.random.default_rng()
    rows, seed = int(rng.integers(1, 4)), int(rng.integers(0, 2**31))
    tensor = ("input", "FP32", [1, 4, 4])
    plain = http_load.kserve_bodies("m", tensor, rows, binary=False, seed=seed)
    packed = http_load.kserve_bodies("m", tensor, rows, binary=True, seed=seed)
    for (text, _), (body, headers) in zip(plain, packed, strict=True):
        data = np.asarray(json.loads(text)["inputs"][0]["data"], dtype="<f4")
        length = int(headers["Inference-Header-Content-Length"])
        head = json.loads(body[:length])
        assert head["inputs"][0]["parameters"]["binary_data_size"] == rows * 16 * 4
        assert np.array_equal(np.frombuffer(body[length:], "<f4"), data)

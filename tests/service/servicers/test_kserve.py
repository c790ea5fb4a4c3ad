"""inference.GRPCInferenceService (KServe v2 + Triton extensions) against the real in-process
server: our generated stubs in-process, tritonclient in a subprocess (tests/clients)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from service import datatypes
from service._proto.inference import grpc_service_pb2 as pb
from service._proto.inference import grpc_service_pb2_grpc as pb_grpc
from service.dataplane import tensors
from service.errors import (
    ConvserveError,
    DeadlineExceededError,
    InferenceError,
    InvalidInputError,
    ModelLoadError,
    ModelNotFoundError,
    ModelNotReadyError,
    QueueFullError,
    ServerShuttingDownError,
    to_status,
)
from service.servicers import converters
from tests.service.conftest import IMAGE_LABELS, ROOT, ServerThread, eventually

Stub = pb_grpc.GRPCInferenceServiceStub


def _session(server: ServerThread, name: str) -> ort.InferenceSession:
    path = server.settings.repository / name / "1" / "model.onnx"
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _request(model: str, x: np.ndarray, name: str = "input", **kwargs: Any) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, **kwargs)
    request.inputs.add(name=name, datatype=datatypes.name_of(x.dtype), shape=list(x.shape))
    request.raw_input_contents.append(x.tobytes())
    return request


def _outputs(reply: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    return converters.raw_tensors(reply.outputs, reply.raw_output_contents)


def _fail(call: Any, request: Any, timeout: float = 10) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as exc:
        call(request, timeout=timeout)
    err: Any = exc.value
    return err.code(), err.details()


# ---- health and metadata -----------------------------------------------------------------------


def test_live_ready_and_metadata(kserve_stub: Stub) -> None:
    assert kserve_stub.ServerLive(pb.ServerLiveRequest(), timeout=5).live
    assert kserve_stub.ServerReady(pb.ServerReadyRequest(), timeout=5).ready
    assert kserve_stub.ModelReady(pb.ModelReadyRequest(name="tiny_image"), timeout=5).ready
    assert kserve_stub.ModelReady(
        pb.ModelReadyRequest(name="tiny_image", version="1"), timeout=5
    ).ready
    assert not kserve_stub.ModelReady(pb.ModelReadyRequest(name="nope"), timeout=5).ready
    assert not kserve_stub.ModelReady(
        pb.ModelReadyRequest(name="tiny_image", version="2"), timeout=5
    ).ready
    meta = kserve_stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=5)
    assert meta.name == "convserve" and meta.version
    assert {"classification", "model_repository", "statistics", "model_configuration"} <= set(
        meta.extensions
    )
    model = kserve_stub.ModelMetadata(pb.ModelMetadataRequest(name="tiny_image"), timeout=5)
    assert (model.name, list(model.versions), model.platform) == (
        "tiny_image",
        ["1"],
        "onnxruntime_onnx",
    )
    assert [(t.name, t.datatype, list(t.shape)) for t in model.inputs] == [
        ("input", "FP32", [-1, 1, 8, 8])
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in model.outputs] == [
        ("logits", "FP32", [-1, 10])
    ]
    code, message = _fail(kserve_stub.ModelMetadata, pb.ModelMetadataRequest(name="nope"))
    assert code == grpc.StatusCode.NOT_FOUND and "'nope' not found" in message


def test_model_config_is_the_parsed_config(kserve_stub: Stub) -> None:
    config = kserve_stub.ModelConfig(pb.ModelConfigRequest(name="small_queue"), timeout=5).config
    assert config.name == "small_queue" and config.max_batch_size == 8
    assert config.dynamic_batching.max_queue_delay_microseconds == 1_000_000
    assert config.dynamic_batching.default_queue_policy.max_queue_size == 2
    assert config.parameters["task"].string_value == "image_classification"
    assert config.output[0].label_filename == "labels.txt"


# ---- ModelInfer ---------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_served_results_equal_onnx_runtime_bit_for_bit(
    server: ServerThread, kserve_stub: Stub, rng: np.random.Generator, batch: int
) -> None:
    x = rng.standard_normal((batch, 1, 8, 8)).astype(np.float32)
    reply = kserve_stub.ModelInfer(_request("tiny_image", x, id="req-7"), timeout=10)
    assert (reply.model_name, reply.model_version, reply.id) == ("tiny_image", "1", "req-7")
    (out,) = reply.outputs
    assert (out.name, out.datatype, list(out.shape)) == ("logits", "FP32", [batch, 10])
    served = _outputs(reply)["logits"]
    expected = _session(server, "tiny_image").run(None, {"input": x})[0]
    np.testing.assert_array_equal(served, expected)


def test_typed_contents_and_other_datatypes(kserve_stub: Stub, rng: np.random.Generator) -> None:
    x = rng.standard_normal((2, 4)).astype(np.float16)
    mask = rng.random((2, 4)) > 0.5
    request = pb.ModelInferRequest(model_name="half")
    request.inputs.add(name="x", datatype="FP16", shape=[2, 4])
    request.inputs.add(name="mask", datatype="BOOL", shape=[2, 4])
    request.raw_input_contents.extend([x.tobytes(), mask.tobytes()])
    request.outputs.add(name="flipped")
    request.outputs.add(name="y")
    reply = kserve_stub.ModelInfer(request, timeout=10)
    assert [(o.name, o.datatype) for o in reply.outputs] == [("flipped", "BOOL"), ("y", "FP16")]
    outputs = _outputs(reply)
    np.testing.assert_array_equal(outputs["y"], x * np.float16(2))
    np.testing.assert_array_equal(outputs["flipped"], ~mask)
    # The same request with typed contents (BOOL has bool_contents; FP16 travels raw only).
    typed = pb.ModelInferRequest(model_name="tiny_image")
    image = rng.standard_normal((1, 1, 8, 8)).astype(np.float32)
    typed.inputs.add(
        name="input", datatype="FP32", shape=[1, 1, 8, 8]
    ).contents.fp32_contents.extend(image.ravel().tolist())
    by_contents = _outputs(kserve_stub.ModelInfer(typed, timeout=10))["logits"]
    by_raw = _outputs(kserve_stub.ModelInfer(_request("tiny_image", image), timeout=10))["logits"]
    np.testing.assert_array_equal(by_contents, by_raw)


def test_classification_extension(
    server: ServerThread, kserve_stub: Stub, rng: np.random.Generator
) -> None:
    x = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)
    request = _request("tiny_image", x)
    request.outputs.add(name="logits").parameters["classification"].int64_param = 3
    reply = kserve_stub.ModelInfer(request, timeout=10)
    (out,) = reply.outputs
    assert (out.datatype, list(out.shape)) == ("BYTES", [2, 3])
    rows = tensors.deserialize_bytes(reply.raw_output_contents[0])
    logits = _session(server, "tiny_image").run(None, {"input": x})[0]
    for r in range(2):
        order = np.argsort(-logits[r], kind="stable")[:3]
        expected = [f"{logits[r, i]:f}:{i}:{IMAGE_LABELS[i]}".encode() for i in order]
        assert rows[r * 3 : r * 3 + 3] == expected


def _bad_requests(
    rng: np.random.Generator,
) -> Iterator[tuple[str, pb.ModelInferRequest, grpc.StatusCode, str]]:
    x = rng.standard_normal((1, 1, 8, 8)).astype(np.float32)
    yield "no model", _request("", x), grpc.StatusCode.INVALID_ARGUMENT, "model_name is required"
    yield "unknown model", _request("nope", x), grpc.StatusCode.NOT_FOUND, "'nope' not found"
    yield (
        "unknown version",
        _request("tiny_image", x, model_version="4"),
        grpc.StatusCode.NOT_FOUND,
        "no version '4'",
    )
    yield (
        "wrong datatype",
        _request("tiny_image", x.astype(np.float16)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "expected datatype FP32, got FP16",
    )
    yield (
        "wrong shape",
        _request("tiny_image", x.reshape(1, 1, 4, 16)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "expected shape [-1, 1, 8, 8], got [1, 1, 4, 16]",
    )
    yield (
        "batch too big",
        _request("tiny_image", np.repeat(x, 9, axis=0)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "batch size 9 exceeds max_batch_size 8",
    )
    yield (
        "unknown input",
        _request("tiny_image", x, name="pixels"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "unknown input 'pixels'",
    )
    missing = pb.ModelInferRequest(model_name="half")
    missing.inputs.add(name="x", datatype="FP16", shape=[1, 4])
    missing.raw_input_contents.append(np.zeros(4, np.float16).tobytes())
    yield "missing input", missing, grpc.StatusCode.INVALID_ARGUMENT, "missing input(s) 'mask'"
    short = _request("tiny_image", x)
    short.raw_input_contents[0] = short.raw_input_contents[0][:-4]
    yield (
        "short raw",
        short,
        grpc.StatusCode.INVALID_ARGUMENT,
        "raw content is 252 bytes, expected 256",
    )
    extra = _request("tiny_image", x)
    extra.raw_input_contents.append(b"")
    yield "raw count", extra, grpc.StatusCode.INVALID_ARGUMENT, "raw_input_contents has 2 entries"
    unknown_out = _request("tiny_image", x)
    unknown_out.outputs.add(name="probs")
    yield "unknown output", unknown_out, grpc.StatusCode.INVALID_ARGUMENT, "unknown output 'probs'"
    bad_k = _request("tiny_image", x)
    bad_k.outputs.add(name="logits").parameters["classification"].string_param = "3"
    yield (
        "bad k",
        bad_k,
        grpc.StatusCode.INVALID_ARGUMENT,
        "classification must be a positive integer",
    )


def test_infer_errors_name_what_was_expected(kserve_stub: Stub, rng: np.random.Generator) -> None:
    for label, request, code, message in _bad_requests(rng):
        got_code, got_message = _fail(kserve_stub.ModelInfer, request)
        assert (got_code, label) == (code, label), got_message
        assert message in got_message, (label, got_message)
    x = rng.standard_normal((1, 1, 8, 8)).astype(np.float32)
    assert kserve_stub.ModelInfer(_request("tiny_image", x), timeout=10).outputs  # still serving


def test_stream_infer_reports_errors_in_band(kserve_stub: Stub, rng: np.random.Generator) -> None:
    good = [rng.standard_normal((1, 1, 8, 8)).astype(np.float32) for _ in range(4)]
    requests = [_request("tiny_image", x, id=f"good-{i}") for i, x in enumerate(good)]
    requests.insert(2, _request("tiny_image", good[0].reshape(1, 64), id="bad"))
    requests.insert(4, _request("nope", good[0], id="unknown"))
    replies = list(kserve_stub.ModelStreamInfer(iter(requests), timeout=20))
    assert len(replies) == 6
    by_id = {r.infer_response.id: r for r in replies}
    assert "expected shape" in by_id["bad"].error_message
    assert "not found" in by_id["unknown"].error_message
    for i, x in enumerate(good):
        reply = by_id[f"good-{i}"]
        assert not reply.error_message
        single = kserve_stub.ModelInfer(_request("tiny_image", x), timeout=10)
        np.testing.assert_array_equal(
            _outputs(reply.infer_response)["logits"], _outputs(single)["logits"]
        )


# ---- statistics and repository ------------------------------------------------------------------


def test_model_statistics(kserve_stub: Stub, rng: np.random.Generator) -> None:
    def stats() -> pb.ModelStatistics:
        reply = kserve_stub.ModelStatistics(pb.ModelStatisticsRequest(name="tiny_image"), timeout=5)
        (only,) = reply.model_stats
        return only

    before = stats()
    x = rng.standard_normal((3, 1, 8, 8)).astype(np.float32)
    kserve_stub.ModelInfer(_request("tiny_image", x), timeout=10)
    after = stats()
    assert (after.name, after.version) == ("tiny_image", "1")
    assert after.inference_count == before.inference_count + 3
    assert after.execution_count == before.execution_count + 1
    s, b = after.inference_stats, before.inference_stats
    assert s.success.count == b.success.count + 1 and s.success.ns > b.success.ns
    assert s.queue.count == b.queue.count + 1 and s.compute_infer.count == b.compute_infer.count + 1
    assert 3 in {row.batch_size for row in after.batch_stats}
    everything = kserve_stub.ModelStatistics(pb.ModelStatisticsRequest(), timeout=5).model_stats
    assert {"tiny_image", "tiny_speech", "batchy"} <= {m.name for m in everything}


def test_repository_index(kserve_stub: Stub) -> None:
    index = kserve_stub.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=5).models
    rows = {m.name: m for m in index}
    assert rows["tiny_image"].state == "READY" and rows["tiny_image"].version == "1"
    assert "broken" in rows  # on disk, not loaded at start
    ready = kserve_stub.RepositoryIndex(pb.RepositoryIndexRequest(ready=True), timeout=5).models
    assert {m.state for m in ready} == {"READY"}
    code, _ = _fail(kserve_stub.RepositoryIndex, pb.RepositoryIndexRequest(repository_name="x"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("name", ["../etc", "a/b", "..", ".hidden", "", "x\\y"])
def test_repository_rejects_path_names(kserve_stub: Stub, name: str) -> None:
    for call, request in [
        (kserve_stub.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name=name)),
        (kserve_stub.RepositoryModelUnload, pb.RepositoryModelUnloadRequest(model_name=name)),
    ]:
        code, message = _fail(call, request)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, message


def test_corrupt_model_is_unavailable_and_the_rest_serve(
    kserve_stub: Stub, rng: np.random.Generator
) -> None:
    x = rng.standard_normal((1, 1, 8, 8)).astype(np.float32)
    code, message = _fail(kserve_stub.ModelInfer, _request("broken", x))
    assert code == grpc.StatusCode.UNAVAILABLE and "not loaded" in message
    code, message = _fail(kserve_stub.ModelMetadata, pb.ModelMetadataRequest(name="broken"))
    assert code == grpc.StatusCode.UNAVAILABLE and "not loaded" in message
    code, message = _fail(
        kserve_stub.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name="broken"), 60
    )
    assert code == grpc.StatusCode.UNAVAILABLE and "failed to load" in message
    code, message = _fail(kserve_stub.ModelInfer, _request("broken", x))
    assert code == grpc.StatusCode.UNAVAILABLE and "UNAVAILABLE" in message
    assert not kserve_stub.ModelReady(pb.ModelReadyRequest(name="broken"), timeout=5).ready
    # Metadata and config of a model that failed to load are still available (for debugging).
    meta = kserve_stub.ModelMetadata(pb.ModelMetadataRequest(name="broken"), timeout=5)
    assert meta.name == "broken" and list(meta.versions) == ["1"]
    config = kserve_stub.ModelConfig(pb.ModelConfigRequest(name="broken"), timeout=5).config
    assert config.name == "broken" and config.max_batch_size == 8
    rows = {
        m.name: m
        for m in kserve_stub.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=5).models
    }
    assert rows["broken"].state == "UNAVAILABLE" and rows["broken"].reason
    # The other models, and the server as a whole, are unaffected.
    assert kserve_stub.ServerReady(pb.ServerReadyRequest(), timeout=5).ready
    assert kserve_stub.ModelInfer(_request("tiny_image", x), timeout=10).outputs
    kserve_stub.RepositoryModelUnload(
        pb.RepositoryModelUnloadRequest(model_name="broken"), timeout=30
    )


def test_unload_and_load_again(kserve_stub: Stub, rng: np.random.Generator) -> None:
    x = rng.standard_normal((1, 1, 8, 8)).astype(np.float32)
    kserve_stub.RepositoryModelUnload(
        pb.RepositoryModelUnloadRequest(model_name="slow"), timeout=30
    )
    assert not kserve_stub.ModelReady(pb.ModelReadyRequest(name="slow"), timeout=5).ready
    code, _ = _fail(kserve_stub.ModelInfer, _request("slow", x))
    assert code == grpc.StatusCode.UNAVAILABLE
    kserve_stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="slow"), timeout=60)
    assert kserve_stub.ModelReady(pb.ModelReadyRequest(name="slow"), timeout=5).ready
    code, message = _fail(
        kserve_stub.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name="zz")
    )
    assert code == grpc.StatusCode.NOT_FOUND, message


# ---- the error table: every status, the server still up ----------------------------------------


def test_queue_full_is_resource_exhausted(kserve_stub: Stub, rng: np.random.Generator) -> None:
    """small_queue holds 2 requests and waits 1 s for a batch: of 6 at once, some are refused."""
    x = rng.standard_normal((1, 1, 8, 8)).astype(np.float32)

    def call(_: int) -> grpc.StatusCode:
        try:
            kserve_stub.ModelInfer(_request("small_queue", x), timeout=10)
            return grpc.StatusCode.OK
        except grpc.RpcError as exc:
            assert exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or "is full" in (
                exc.details() or ""
            )
            return exc.code()

    with ThreadPoolExecutor(6) as pool:
        codes = list(pool.map(call, range(6)))
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
    assert codes.count(grpc.StatusCode.OK) >= 2
    assert kserve_stub.ModelInfer(_request("tiny_image", x), timeout=10).outputs


def test_deadline_exceeded_in_the_queue(kserve_stub: Stub, rng: np.random.Generator) -> None:
    x = rng.standard_normal((1, 1, 8, 8)).astype(np.float32)
    code, _ = _fail(kserve_stub.ModelInfer, _request("slow", x), timeout=0.25)
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert kserve_stub.ModelInfer(_request("tiny_image", x), timeout=10).outputs


def test_unexpected_error_is_internal_with_a_generic_message(
    server: ServerThread,
    kserve_stub: Stub,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    rng: np.random.Generator,
) -> None:
    assert server.server is not None

    async def explode(request: Any, deadline: Any) -> Any:
        raise RuntimeError("secret /etc/path detail")

    monkeypatch.setattr(server.server.plane, "infer", explode)
    x = rng.standard_normal((1, 1, 8, 8)).astype(np.float32)
    with caplog.at_level(logging.ERROR, logger="service.rpc"):
        code, message = _fail(kserve_stub.ModelInfer, _request("tiny_image", x))
        eventually(lambda: any("secret" in r.getMessage() or r.exc_info for r in caplog.records))
    assert code == grpc.StatusCode.INTERNAL
    assert message == "internal error (see server log)" and "secret" not in message
    record = next(r for r in caplog.records if r.exc_info)
    assert "ModelInfer failed" in record.getMessage()
    monkeypatch.undo()
    assert kserve_stub.ModelInfer(_request("tiny_image", x), timeout=10).outputs


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidInputError("bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (ModelNotFoundError("nf"), grpc.StatusCode.NOT_FOUND),
        (ModelNotReadyError("nr"), grpc.StatusCode.UNAVAILABLE),
        (ModelLoadError("load"), grpc.StatusCode.UNAVAILABLE),
        (ServerShuttingDownError("bye"), grpc.StatusCode.UNAVAILABLE),
        (QueueFullError("full"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (DeadlineExceededError("late"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (InferenceError("inference failed for model 'x'"), grpc.StatusCode.INTERNAL),
        (ConvserveError("plain"), grpc.StatusCode.INTERNAL),
    ],
)
def test_to_status_table(error: Exception, code: grpc.StatusCode) -> None:
    assert to_status(error) == (code, str(error))


@pytest.mark.parametrize("error", [RuntimeError("x"), KeyError("k"), ValueError("/secret")])
def test_to_status_hides_unexpected_errors(error: Exception) -> None:
    assert to_status(error) == (grpc.StatusCode.INTERNAL, "internal error (see server log)")


# ---- batching ------------------------------------------------------------------------------------


def test_concurrent_requests_are_batched_and_results_unchanged(
    server: ServerThread, kserve_stub: Stub, rng: np.random.Generator
) -> None:
    """`batchy` waits 50 ms to fill a batch: 24 requests, 8 in flight, share batches, and every
    answer equals the answer to the same request alone."""
    assert server.server is not None
    registry = server.server.metrics.registry
    labels = {"model": "batchy", "version": "1"}

    def batches(le: str | None = None) -> float:
        if le is None:
            return registry.get_sample_value("convserve_batch_size_count", labels) or 0.0
        return registry.get_sample_value("convserve_batch_size_bucket", {**labels, "le": le}) or 0.0

    count0, singles0 = batches(), batches("1.0")
    inputs = [rng.standard_normal((1, 1, 8, 8)).astype(np.float32) for _ in range(24)]
    with ThreadPoolExecutor(8) as pool:
        replies = list(
            pool.map(lambda x: kserve_stub.ModelInfer(_request("batchy", x), timeout=20), inputs)
        )
    count, singles = batches() - count0, batches("1.0") - singles0
    assert count < 24 and count - singles >= 1, (count, singles)  # some batches held > 1 row
    session = _session(server, "batchy")
    for x, reply in zip(inputs, replies, strict=True):
        alone = session.run(None, {"input": x})[0]
        np.testing.assert_array_equal(_outputs(reply)["logits"], alone)


# ---- tritonclient (subprocess: its protos clash with ours in one process) ------------------------


def test_tritonclient(server: ServerThread, tmp_path: Path) -> None:
    script = ROOT / "tests" / "clients" / "triton_check.py"
    proc = subprocess.run(
        [
            sys.executable,
            str(script),
            "--url",
            server.target,
            "--model",
            "tiny_image",
            "--batch",
            "3",
            "--save",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["live"] and result["ready"] and result["model_ready"]
    assert result["server"]["name"] == "convserve"
    assert result["metadata"]["inputs"][0]["shape"] == ["-1", "1", "8", "8"]
    assert result["config"]["max_batch_size"] == 8
    assert result["infer"]["id"] == "triton-check-1" and result["infer"]["shape"] == [3, 10]
    assert len(result["classification"]) == 3 and len(result["classification"][0]) == 3
    assert result["classification"][0][0].count(":") == 2  # score:index:label
    assert result["invalid"]["status"] == "StatusCode.INVALID_ARGUMENT"
    assert result["stream"]["ok"] == ["s1", "s3"] and len(result["stream"]["errors"]) == 1
    assert result["statistics"]["success"] >= 3
    assert "tiny_image" in result["index"]
    # What tritonclient received is bit-for-bit ONNX Runtime's answer for the same input.
    x = np.load(tmp_path / "input0.npy")
    expected = _session(server, "tiny_image").run(None, {"input": x})[0]
    np.testing.assert_array_equal(np.load(tmp_path / "output.npy"), expected)


@pytest.mark.slow
def test_perf_analyzer_streaming(server: ServerThread) -> None:
    """perf_analyzer's gRPC streaming mode (ModelStreamInfer) with server-side statistics."""
    tools = ROOT / ".cache" / "tools"
    binary = tools / "bin" / "perf_analyzer"
    if not binary.is_file():
        pytest.skip("perf_analyzer not installed (scripts/install_test_tools.sh; make test does)")
    proc = subprocess.run(
        [str(binary), "-m", "tiny_image", "-u", server.target, "-i", "grpc", "--streaming",
         "-b", "2", "--concurrency-range", "2", "--measurement-interval", "500",
         # Stability is not what this checks, and a loaded CI machine varies a lot.
         "--max-trials", "10", "--stability-percentage", "999"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "LD_LIBRARY_PATH": str(tools / "lib")},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Server:" in proc.stdout and "Execution count" in proc.stdout

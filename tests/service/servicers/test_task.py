"""convserve.v1.Inference against the real in-process server, with real gRPC clients."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from service._proto.convserve.v1 import inference_pb2 as pb
from service._proto.convserve.v1 import inference_pb2_grpc as pb_grpc
from service._proto.inference import grpc_service_pb2 as kserve_pb2
from service.dataplane import postprocess
from service.preprocess.audio import AudioSpec, split_windows
from service.preprocess.image import ImageSpec, decode_image
from service.servicers.kserve import KServeServicer
from service.servicers.rpc import wrapped_method
from service.servicers.task import TaskServicer
from tests.service.conftest import (
    IMAGE_LABELS,
    ServerThread,
    eventually,
    png,
    speech_clip,
    wav,
    with_text_chunks,
)

SPEECH_SPEC = AudioSpec(sample_rate=16000, window_samples=1600, hop_samples=800)


def _code(exc: pytest.ExceptionInfo[grpc.RpcError]) -> grpc.StatusCode:
    return exc.value.code()


def _details(exc: pytest.ExceptionInfo[grpc.RpcError]) -> str:
    return str(exc.value.details())


def _session(server: ServerThread, name: str) -> ort.InferenceSession:
    path = server.settings.repository / name / "1" / "model.onnx"
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _image(rng: np.random.Generator) -> bytes:
    h, w = rng.integers(6, 40, size=2)
    return png(rng.integers(0, 256, size=(h, w), dtype=np.uint8))


# ---- every RPC goes through the one wrapper ----------------------------------------------------


@pytest.mark.parametrize(
    ("servicer", "descriptor"),
    [
        (TaskServicer, pb.DESCRIPTOR.services_by_name["Inference"]),
        (KServeServicer, kserve_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]),
    ],
)
def test_every_rpc_of_both_services_is_wrapped(servicer: type, descriptor: Any) -> None:
    methods = list(descriptor.methods)
    assert methods
    for method in methods:
        handler = getattr(servicer, method.name)
        assert wrapped_method(handler) == method.name, f"{method.name} is not wrapped by rpc()"


def test_registered_handlers_are_the_wrapped_ones(server: ServerThread) -> None:
    """What grpc dispatches to is the wrapped bound method (not a base-class stub)."""
    assert server.server is not None
    for obj in (server.server.task, server.server.kserve):
        for name in dir(type(obj)):
            if name[0].isupper():
                assert wrapped_method(getattr(obj, name)) == name


# ---- ClassifyImage ------------------------------------------------------------------------------


def test_classify_image_default_model_matches_in_process_onnx_runtime(
    server: ServerThread, task_stub: pb_grpc.InferenceStub, rng: np.random.Generator
) -> None:
    image = _image(rng)
    reply = task_stub.ClassifyImage(pb.ClassifyImageRequest(image=image), timeout=10)
    assert (reply.model, reply.version) == ("tiny_image", "1")
    assert len(reply.classes) == 5  # top_k 0 means 5
    spec = ImageSpec.from_parameters(
        {"image_size": "8", "color": "grayscale", "mean": "0.5", "std": "0.25"}, (1, 8, 8)
    )
    x = decode_image(image, spec)
    logits = _session(server, "tiny_image").run(None, {"input": x[None]})[0][0]
    expected = postprocess.top_k(postprocess.activate(logits, "softmax"), 5, IMAGE_LABELS)
    assert [(c.index, c.label) for c in reply.classes] == [(e.index, e.label) for e in expected]
    assert [c.score for c in reply.classes] == [np.float32(e.score) for e in expected]
    assert all(c.label == IMAGE_LABELS[c.index] for c in reply.classes)


@pytest.mark.parametrize(
    ("size", "text_chunks", "inline"),
    [((20, 30), 0, True), ((100, 90), 0, False), ((20, 30), 8, False)],
)
def test_small_images_decode_on_the_loop_large_ones_in_the_pool(
    server: ServerThread,
    task_stub: pb_grpc.InferenceStub,
    rng: np.random.Generator,
    size: tuple[int, int],
    text_chunks: int,
    inline: bool,
) -> None:
    """600 pixels decode in place; 9,000 (over INLINE_PIXELS) in the pool, and so does a small
    PNG whose compressed text chunks Pillow would inflate while opening it; same answers."""
    assert server.server is not None
    plane = server.server.plane
    image = with_text_chunks(png(rng.integers(0, 256, size=size, dtype=np.uint8)), text_chunks)
    before = plane.inline_decodes
    reply = task_stub.ClassifyImage(
        pb.ClassifyImageRequest(model="tiny_image", image=image, top_k=3), timeout=10
    )
    assert plane.inline_decodes - before == int(inline)
    spec = ImageSpec.from_parameters(
        {"image_size": "8", "color": "grayscale", "mean": "0.5", "std": "0.25"}, (1, 8, 8)
    )
    logits = _session(server, "tiny_image").run(None, {"input": decode_image(image, spec)[None]})
    expected = postprocess.top_k(postprocess.activate(logits[0][0], "softmax"), 3, IMAGE_LABELS)
    assert [(c.index, c.score) for c in reply.classes] == [
        (e.index, np.float32(e.score)) for e in expected
    ]


def test_classify_tensor_raw_and_values_agree(
    server: ServerThread, task_stub: pb_grpc.InferenceStub, rng: np.random.Generator
) -> None:
    assert server.server is not None
    plane = server.server.plane
    x = rng.standard_normal((1, 8, 8)).astype(np.float32)
    before = plane.inline_decodes
    raw = task_stub.ClassifyImage(
        pb.ClassifyImageRequest(
            model="tiny_image", top_k=50, tensor=pb.Tensor(shape=[1, 8, 8], raw=x.tobytes())
        ),
        timeout=10,
    )
    assert plane.inline_decodes - before == 1  # small raw tensors: on the loop
    values = task_stub.ClassifyImage(
        pb.ClassifyImageRequest(
            model="tiny_image", top_k=50, tensor=pb.Tensor(values=x.ravel().tolist())
        ),
        timeout=10,
    )
    assert plane.inline_decodes - before == 1  # typed values: in the pool
    assert len(raw.classes) == 10  # top_k capped at the number of classes
    assert list(raw.classes) == list(values.classes)
    assert math.isclose(sum(c.score for c in raw.classes), 1.0, rel_tol=1e-5)
    scores = [c.score for c in raw.classes]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize(
    ("request_kwargs", "code", "message"),
    [
        ({}, grpc.StatusCode.INVALID_ARGUMENT, "exactly one of image"),
        (
            {"image": b"x", "tensor": pb.Tensor(values=[1.0])},
            grpc.StatusCode.INVALID_ARGUMENT,
            "exactly one of image",
        ),
        ({"image": b"GIF89a not really"}, grpc.StatusCode.INVALID_ARGUMENT, "cannot decode"),
        ({"image": b"\x89PNG\r\n\x1a\n" + b"\0" * 40}, grpc.StatusCode.INVALID_ARGUMENT, "decode"),
        (
            {"tensor": pb.Tensor(shape=[3, 8, 8], values=[0.5] * 192)},
            grpc.StatusCode.INVALID_ARGUMENT,
            "expected 1×8×8",
        ),
        (
            {"image": b"x", "model": "no_such_model"},
            grpc.StatusCode.NOT_FOUND,
            "'no_such_model' not found",
        ),
        (
            {"image": b"x", "model": "tiny_image", "version": "7"},
            grpc.StatusCode.NOT_FOUND,
            "no version '7'",
        ),
        (
            {"image": b"x", "model": "tiny_speech"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "speech_detection model; this RPC needs a image_classification",
        ),
    ],
)
def test_classify_errors(
    task_stub: pb_grpc.InferenceStub,
    request_kwargs: dict[str, Any],
    code: grpc.StatusCode,
    message: str,
    rng: np.random.Generator,
) -> None:
    with pytest.raises(grpc.RpcError) as exc:
        task_stub.ClassifyImage(pb.ClassifyImageRequest(**request_kwargs), timeout=10)
    assert _code(exc) == code
    assert message in _details(exc)
    # The server keeps serving after every error.
    ok = task_stub.ClassifyImage(pb.ClassifyImageRequest(image=_image(rng)), timeout=10)
    assert ok.classes


def test_deadline_expires_in_the_queue(
    server: ServerThread, task_stub: pb_grpc.InferenceStub, rng: np.random.Generator
) -> None:
    """`slow` batches every 1.5 s: a 0.3 s deadline expires while queued, and is recorded."""
    srv = server.server
    assert srv is not None
    registry = srv.metrics.registry
    labels = {"model": "slow", "method": "ClassifyImage", "status": "DEADLINE_EXCEEDED"}
    before = registry.get_sample_value("convserve_requests_total", labels) or 0.0
    with pytest.raises(grpc.RpcError) as exc:
        task_stub.ClassifyImage(
            pb.ClassifyImageRequest(model="slow", image=_image(rng)), timeout=0.3
        )
    assert _code(exc) == grpc.StatusCode.DEADLINE_EXCEEDED
    eventually(lambda: registry.get_sample_value("convserve_requests_total", labels) == before + 1)
    # Dropped from the queue at its deadline, not left for the 1.5 s batch.
    eventually(lambda: srv.plane.models.resolve("slow").queue_depth == 0, timeout=0.5)
    ok = task_stub.ClassifyImage(pb.ClassifyImageRequest(image=_image(rng)), timeout=10)
    assert ok.model == "tiny_image"


def test_client_cancellation_leaves_the_queue(
    server: ServerThread, task_stub: pb_grpc.InferenceStub, rng: np.random.Generator
) -> None:
    """A cancelled call is dropped from the batch queue and recorded as CANCELLED."""
    srv = server.server
    assert srv is not None
    registry = srv.metrics.registry
    labels = {"model": "slow", "method": "ClassifyImage", "status": "CANCELLED"}
    before = registry.get_sample_value("convserve_requests_total", labels) or 0.0
    call = task_stub.ClassifyImage.future(
        pb.ClassifyImageRequest(model="slow", image=_image(rng)), timeout=10
    )
    eventually(lambda: srv.plane.models.resolve("slow").queue_depth == 1)
    call.cancel()
    eventually(lambda: srv.plane.models.resolve("slow").queue_depth == 0, timeout=0.5)
    eventually(lambda: registry.get_sample_value("convserve_requests_total", labels) == before + 1)
    assert registry.get_sample_value("convserve_inflight_requests", {"model": "slow"}) == 0


def test_client_deadline_reaches_infer(
    server: ServerThread,
    task_stub: pb_grpc.InferenceStub,
    monkeypatch: pytest.MonkeyPatch,
    rng: np.random.Generator,
) -> None:
    """infer() gets the client's deadline on the monotonic clock (one process: same clock)."""
    assert server.server is not None
    served = server.server.plane.models.resolve("tiny_image")
    seen: list[float | None] = []
    original = served.infer

    async def recording(inputs: Any, *, deadline: float | None = None) -> Any:
        seen.append(deadline)
        return await original(inputs, deadline=deadline)

    monkeypatch.setattr(served, "infer", recording)
    sent = time.monotonic()
    task_stub.ClassifyImage(pb.ClassifyImageRequest(image=_image(rng)), timeout=5)
    task_stub.ClassifyImage(pb.ClassifyImageRequest(image=_image(rng)))
    assert len(seen) == 2 and seen[1] is None
    assert seen[0] is not None and 4.0 < seen[0] - sent < 5.5


# ---- DetectSpeech -------------------------------------------------------------------------------


def _expected_windows(server: ServerThread, clip: np.ndarray) -> list[postprocess.WindowResult]:
    windows, starts = split_windows(clip, SPEECH_SPEC)
    logits = _session(server, "tiny_speech").run(None, {"audio": windows})[0]
    p = postprocess.speech_probabilities(logits, "softmax", 1)
    ends = np.minimum(starts + 1600, len(clip))
    return postprocess.window_results(starts, ends, p, 16000)


def test_detect_speech_wav(server: ServerThread, task_stub: pb_grpc.InferenceStub) -> None:
    clip, loud = speech_clip()
    assert server.server is not None
    before = server.server.plane.models.resolve("tiny_speech").stats.execution_count
    reply = task_stub.DetectSpeech(pb.DetectSpeechRequest(audio=wav(clip)), timeout=10)
    after = server.server.plane.models.resolve("tiny_speech").stats.execution_count
    assert (reply.model, reply.version) == ("tiny_speech", "1")
    expected = _expected_windows(server, clip)
    assert len(reply.windows) == len(expected) == 63
    # 63 windows, max_batch_size 4: at least 16 batches.
    assert after - before >= math.ceil(len(expected) / 4)
    for got, want in zip(reply.windows, expected, strict=True):
        assert (got.start_s, got.end_s) == pytest.approx((want.start_s, want.end_s))
        assert got.speech_probability == pytest.approx(want.probability, abs=1e-6)
    assert reply.is_speech and reply.speech_probability == max(w.probability for w in expected)
    assert reply.duration_s == pytest.approx(len(clip) / 16000)
    segments = [(s.start_s, s.end_s) for s in reply.segments]
    assert len(segments) == len(loud) == 2
    for (start, end), (loud_start, loud_end) in zip(segments, loud, strict=True):
        assert start <= loud_start + 0.05 and end >= loud_end - 0.05
        assert end - start < loud_end - loud_start + 0.2


def test_detect_speech_samples_resampled_and_threshold(task_stub: pb_grpc.InferenceStub) -> None:
    rate = 8000
    t = np.arange(rate) / rate
    # mean |x| = 0.0605: logit difference 80·0.0605 - 4 ≈ 0.84, p ≈ 0.70 in every window.
    tone = (0.095 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    reply = task_stub.DetectSpeech(
        pb.DetectSpeechRequest(samples=tone.tolist(), sample_rate=rate), timeout=10
    )
    assert reply.duration_s == pytest.approx(1.0)
    assert 0.6 < reply.speech_probability < 0.8
    assert reply.is_speech and reply.segments  # the model's threshold 0.5
    strict = task_stub.DetectSpeech(
        pb.DetectSpeechRequest(samples=tone.tolist(), sample_rate=rate, threshold=0.9),
        timeout=10,
    )
    assert not strict.is_speech and not strict.segments


def test_detect_speech_silence_is_not_speech(
    task_stub: pb_grpc.InferenceStub, rng: np.random.Generator
) -> None:
    quiet = (0.001 * rng.standard_normal(4000)).astype(np.float32)
    reply = task_stub.DetectSpeech(pb.DetectSpeechRequest(audio=wav(quiet)), timeout=10)
    assert not reply.is_speech and reply.speech_probability < 0.1 and not reply.segments
    assert len(reply.windows) == 4  # 0, 800, 1600, 2400 (end-aligned)


@pytest.mark.parametrize(
    ("request_kwargs", "code", "message"),
    [
        ({}, grpc.StatusCode.INVALID_ARGUMENT, "exactly one of audio"),
        ({"samples": [0.1] * 100}, grpc.StatusCode.INVALID_ARGUMENT, "positive sample_rate"),
        ({"audio": b"RIFF....WAVEfmt "}, grpc.StatusCode.INVALID_ARGUMENT, "cannot decode audio"),
        (
            {"samples": [0.1] * 100, "sample_rate": 16000, "model": "tiny_image"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "needs a speech_detection model",
        ),
        (
            {"samples": [0.1] * 100, "sample_rate": 16000, "model": "nope"},
            grpc.StatusCode.NOT_FOUND,
            "not found",
        ),
    ],
)
def test_detect_speech_errors(
    task_stub: pb_grpc.InferenceStub,
    request_kwargs: dict[str, Any],
    code: grpc.StatusCode,
    message: str,
) -> None:
    with pytest.raises(grpc.RpcError) as exc:
        task_stub.DetectSpeech(pb.DetectSpeechRequest(**request_kwargs), timeout=10)
    assert _code(exc) == code and message in _details(exc)


# ---- StreamDetectSpeech -------------------------------------------------------------------------


def _stream(chunks: list[pb.StreamDetectSpeechRequest]) -> Iterator[pb.StreamDetectSpeechRequest]:
    yield from chunks


def test_stream_matches_whole_clip(server: ServerThread, task_stub: pb_grpc.InferenceStub) -> None:
    clip, _ = speech_clip()
    whole = task_stub.DetectSpeech(pb.DetectSpeechRequest(audio=wav(clip)), timeout=10)
    sizes = np.random.default_rng(1).integers(1, 5000, size=200)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    messages = [
        pb.StreamDetectSpeechRequest(samples=clip[a:b].tolist())
        for a, b in itertools.pairwise(offsets)
        if a < len(clip)
    ]
    messages[0].model = "tiny_speech"
    messages[0].sample_rate = 16000
    replies = list(task_stub.StreamDetectSpeech(_stream(messages), timeout=20))
    assert [r.final for r in replies] == [False] * (len(replies) - 1) + [True]
    assert all(r.model == "tiny_speech" and r.version == "1" for r in replies)
    windows = [w for r in replies for w in r.windows]
    assert [(w.start_s, w.end_s) for w in windows] == [(w.start_s, w.end_s) for w in whole.windows]
    np.testing.assert_allclose(
        [w.speech_probability for w in windows],
        [w.speech_probability for w in whole.windows],
        atol=1e-6,
    )
    segments = [(s.start_s, s.end_s) for r in replies for s in r.segments]
    assert segments == [(s.start_s, s.end_s) for s in whole.segments]
    # Segments are reported as soon as they close, not all at the end.
    first = next(r for r in replies if r.segments)
    assert not first.final
    assert max(w.start_s for w in first.windows) < first.segments[0].end_s + 0.2


def test_stream_pcm_s16le(task_stub: pb_grpc.InferenceStub) -> None:
    clip, _ = speech_clip()
    pcm = np.clip(np.round(clip * 32767), -32768, 32767).astype("<i2").tobytes()
    messages = [
        pb.StreamDetectSpeechRequest(pcm_s16le=pcm[i : i + 6400]) for i in range(0, len(pcm), 6400)
    ]
    replies = list(task_stub.StreamDetectSpeech(_stream(messages), timeout=20))
    assert replies[-1].final and replies[-1].model == "tiny_speech"  # the default model
    assert len([(s.start_s, s.end_s) for r in replies for s in r.segments]) == 2


def test_stream_empty_and_errors(task_stub: pb_grpc.InferenceStub) -> None:
    replies = list(task_stub.StreamDetectSpeech(_stream([]), timeout=10))
    assert len(replies) == 1 and replies[0].final and not replies[0].windows
    with pytest.raises(grpc.RpcError) as exc:
        list(
            task_stub.StreamDetectSpeech(
                _stream([pb.StreamDetectSpeechRequest(pcm_s16le=b"\0\0\0")]), timeout=10
            )
        )
    assert _code(exc) == grpc.StatusCode.INVALID_ARGUMENT and "even" in _details(exc)
    with pytest.raises(grpc.RpcError) as exc:
        list(
            task_stub.StreamDetectSpeech(
                _stream([pb.StreamDetectSpeechRequest(model="tiny_image")]), timeout=10
            )
        )
    assert _code(exc) == grpc.StatusCode.INVALID_ARGUMENT


# ---- ListModels / GetModel ----------------------------------------------------------------------


def test_list_models(task_stub: pb_grpc.InferenceStub) -> None:
    models = {m.name: m for m in task_stub.ListModels(pb.ListModelsRequest(), timeout=10).models}
    assert {"tiny_image", "tiny_speech", "batchy", "slow", "small_queue"} <= set(models)
    image = models["tiny_image"]
    assert image.task == "image_classification" and image.is_default and image.num_labels == 10
    assert not models["batchy"].is_default
    (v,) = image.versions
    assert (v.version, v.state, v.provider, v.requested_device) == (
        "1",
        "READY",
        "CPUExecutionProvider",
        "cpu",
    )
    assert v.max_batch_size == 8 and list(v.batch_buckets) == [1, 2, 4, 8] and v.instances == 1
    assert [(t.name, t.datatype, list(t.shape)) for t in v.inputs] == [
        ("input", "FP32", [-1, 1, 8, 8])
    ]
    assert [(t.name, list(t.shape)) for t in v.outputs] == [("logits", [-1, 10])]
    speech = models["tiny_speech"]
    assert speech.is_default and speech.task == "speech_detection" and speech.num_labels == 2


def test_get_model(task_stub: pb_grpc.InferenceStub) -> None:
    info = task_stub.GetModel(pb.GetModelRequest(name="tiny_speech", version="1"), timeout=10)
    assert info.name == "tiny_speech" and [v.version for v in info.versions] == ["1"]
    for request, message in [
        (pb.GetModelRequest(name="nope"), "unknown model 'nope'"),
        (pb.GetModelRequest(name="tiny_speech", version="3"), "no version '3'"),
    ]:
        with pytest.raises(grpc.RpcError) as exc:
            task_stub.GetModel(request, timeout=10)
        assert _code(exc) == grpc.StatusCode.NOT_FOUND and message in _details(exc)


# ---- metrics -------------------------------------------------------------------------------------


def test_request_metrics_by_model_method_status(
    server: ServerThread, task_stub: pb_grpc.InferenceStub, rng: np.random.Generator
) -> None:
    assert server.server is not None
    registry = server.server.metrics.registry

    def count(model: str, status: str) -> float:
        labels = {"model": model, "method": "ClassifyImage", "status": status}
        return registry.get_sample_value("convserve_requests_total", labels) or 0.0

    ok, bad, unknown = (
        count("tiny_image", "OK"),
        count("tiny_image", "INVALID_ARGUMENT"),
        count("", "NOT_FOUND"),
    )
    task_stub.ClassifyImage(pb.ClassifyImageRequest(image=_image(rng)), timeout=10)
    with pytest.raises(grpc.RpcError):
        task_stub.ClassifyImage(pb.ClassifyImageRequest(image=b"junk"), timeout=10)
    with pytest.raises(grpc.RpcError):
        task_stub.ClassifyImage(pb.ClassifyImageRequest(image=b"x", model="zz9"), timeout=10)
    # An error's status reaches the client as the handler unwinds: allow the wrapper a moment.
    eventually(lambda: count("tiny_image", "OK") == ok + 1)
    eventually(lambda: count("tiny_image", "INVALID_ARGUMENT") == bad + 1)
    # Unknown names never become label values.
    eventually(lambda: count("", "NOT_FOUND") == unknown + 1)
    assert registry.get_sample_value(
        "convserve_request_duration_seconds_count",
        {"model": "tiny_image", "method": "ClassifyImage", "status": "OK"},
    )
    assert registry.get_sample_value("convserve_inflight_requests", {"model": "tiny_image"}) == 0
    assert registry.get_sample_value(
        "convserve_preprocess_duration_seconds_count", {"model": "tiny_image", "kind": "image"}
    )

"""What the bad-input matrix checks beyond a status: the expected answers of the valid cases, and
the cases that are scenarios rather than one request (an expiring deadline, a client that goes
away, a full queue), each over gRPC and over HTTP.

A scenario answers an Outcome: the status the client saw (a grpc.StatusCode, or an HTTP status)
and the error message, None when the client is gone before an answer (a cancel); what the server
must have done besides (metrics, the queue emptied) is asserted inside.
"""

from __future__ import annotations

import contextlib
import math
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort

from service._proto.convserve.v1 import inference_pb2 as pb
from service._proto.convserve.v1 import inference_pb2_grpc as pb_grpc
from service._proto.inference import grpc_service_pb2_grpc as kpb_grpc
from service.dataplane import postprocess
from service.errors import HTTP_STATUS
from service.preprocess.audio import AudioSpec, prepare_audio, split_windows
from service.preprocess.image import ImageLimits, ImageSpec, decode_image
from tests.service import bad_inputs
from tests.service.bad_inputs_http import HttpRequest, send, task_path
from tests.service.conftest import ServerThread, eventually

LIMITS = bad_inputs.load().server
IMAGE_SPEC = ImageSpec(height=8, width=8, channels=1, mean=(0.5,), std=(0.25,))
IMAGE_LIMITS = ImageLimits(
    max_pixels=LIMITS["max_image_pixels"], max_bytes=LIMITS["max_image_bytes"]
)
AUDIO_SPEC = AudioSpec(
    sample_rate=16000,
    window_samples=1600,
    hop_samples=800,
    max_seconds=LIMITS["max_audio_seconds"],
)

Outcome = tuple[grpc.StatusCode | int, str | None]


@dataclass
class Ctx:
    server: ServerThread
    task: pb_grpc.InferenceStub
    kserve: kpb_grpc.GRPCInferenceServiceStub
    image_session: ort.InferenceSession
    speech_session: ort.InferenceSession

    @property
    def http(self) -> str:
        """host:port of the HTTP port."""
        return self.server.http.removeprefix("http://")

    def metric(self, **labels: str) -> float:
        assert self.server.server is not None
        registry = self.server.server.metrics.registry
        return registry.get_sample_value("convserve_requests_total", labels) or 0.0

    def queue_depth(self, model: str) -> int:
        assert self.server.server is not None
        return self.server.server.plane.models.resolve(model).queue_depth


def gray_png(rng: np.random.Generator, h: int = 16, w: int = 16) -> bytes:
    return bad_inputs.image(rng, size=(h, w))


# ---- expected answers (in-process preprocessing + ONNX Runtime) ---------------------------------


def expect_image(c: Ctx, request: pb.ClassifyImageRequest, reply: pb.ClassifyImageResponse) -> None:
    x = decode_image(request.image, IMAGE_SPEC, IMAGE_LIMITS)
    logits = c.image_session.run(None, {"input": x[None]})[0][0]
    scores = postprocess.activate(logits, "softmax")
    k = min(request.top_k or 5, 10)
    order = np.argsort(-scores.astype(np.float64), kind="stable")[:k]
    assert [cl.index for cl in reply.classes] == order.tolist()
    np.testing.assert_allclose([cl.score for cl in reply.classes], scores[order], rtol=1e-5)
    assert reply.model == (request.model or "tiny_image") and reply.version == "1"


def expect_speech(c: Ctx, request: pb.DetectSpeechRequest, reply: pb.DetectSpeechResponse) -> None:
    samples = np.asarray(request.samples, np.float32) if len(request.samples) else None
    x = prepare_audio(request.audio or None, samples, request.sample_rate, AUDIO_SPEC)
    windows, _ = split_windows(x, AUDIO_SPEC)
    logits = c.speech_session.run(None, {"audio": windows})[0]
    p = postprocess.speech_probabilities(logits, "softmax", 1)
    assert len(reply.windows) == len(windows)
    np.testing.assert_allclose(
        [w.speech_probability for w in reply.windows], p, rtol=1e-5, atol=1e-7
    )
    assert math.isclose(reply.speech_probability, float(p.max()), rel_tol=1e-5)
    assert math.isclose(reply.duration_s, len(x) / 16000, rel_tol=1e-6)
    assert reply.is_speech  # every clip used here has a loud stretch


CHECKS: dict[str, Any] = {"ClassifyImage": expect_image, "DetectSpeech": expect_speech}


# ---- scenarios over gRPC ------------------------------------------------------------------------


def _grpc_error(call: Any) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""  # type: ignore[attr-defined]
    raise AssertionError("the request was answered")


def grpc_expired_deadline(c: Ctx, rng: np.random.Generator) -> Outcome:
    """`slow` batches every 1.5 s; a 0.3 s deadline passes in its queue."""
    request = pb.ClassifyImageRequest(model="slow", image=gray_png(rng))
    with _expires_in_queue(c):
        code, message = _grpc_error(lambda: c.task.ClassifyImage(request, timeout=0.3))
    # Either side's timer may fire first: the server's message, or the client library's.
    assert "deadline" in message.lower(), message
    return code, message


def grpc_client_cancel(c: Ctx, rng: np.random.Generator) -> Outcome:
    with _leaves_queue_cancelled(c):
        future = c.task.ClassifyImage.future(
            pb.ClassifyImageRequest(model="slow", image=gray_png(rng)), timeout=10
        )
        eventually(lambda: c.queue_depth("slow") == 1)
        assert future.cancel()
    return future.code(), future.details() or ""


def grpc_queue_overflow(c: Ctx, rng: np.random.Generator) -> Outcome:
    """`small_queue` holds 2 requests for up to 1 s: the third is refused at once, and the two
    queued ones are still answered."""

    def request() -> pb.ClassifyImageRequest:
        return pb.ClassifyImageRequest(model="small_queue", image=gray_png(rng))

    queued = [c.task.ClassifyImage.future(request(), timeout=10) for _ in range(2)]
    eventually(lambda: c.queue_depth("small_queue") == 2)
    code, message = _grpc_error(lambda: c.task.ClassifyImage(request(), timeout=10))
    for future in queued:
        assert len(future.result(timeout=10).classes) == 5
    return code, message


# ---- the same scenarios over HTTP ---------------------------------------------------------------


def _classify(model: str, image: bytes, timeout_ms: int = 0) -> HttpRequest:
    path = task_path("ClassifyImage", {"model": model})
    return HttpRequest(path + (f"&timeout_ms={timeout_ms}" if timeout_ms else ""), image)


def http_expired_deadline(c: Ctx, rng: np.random.Generator) -> Outcome:
    """The deadline as the task API takes it, `timeout_ms`."""
    with _expires_in_queue(c):
        answer = send(c.http, _classify("slow", gray_png(rng), timeout_ms=300))
    assert "deadline" in answer.error, answer.body
    return answer.status, answer.error


def http_client_cancel(c: Ctx, rng: np.random.Generator) -> Outcome:
    """The client closes its connection while the request is queued: the server must drop the
    request (as gRPC does), not run it for nobody."""
    image = gray_png(rng)
    head = (
        f"POST {_classify('slow', image).path} HTTP/1.1\r\nHost: test\r\n"
        f"Content-Type: image/png\r\nContent-Length: {len(image)}\r\n\r\n"
    )
    host, port = c.http.rsplit(":", 1)
    with _leaves_queue_cancelled(c):
        sock = socket.create_connection((host, int(port)), timeout=10)
        sock.sendall(head.encode() + image)
        eventually(lambda: c.queue_depth("slow") == 1)
        sock.close()
    return HTTP_STATUS[grpc.StatusCode.CANCELLED], None


def http_queue_overflow(c: Ctx, rng: np.random.Generator) -> Outcome:
    images = [gray_png(rng) for _ in range(3)]
    with ThreadPoolExecutor(2) as pool:
        queued = [pool.submit(send, c.http, _classify("small_queue", im)) for im in images[:2]]
        eventually(lambda: c.queue_depth("small_queue") == 2)
        answer = send(c.http, _classify("small_queue", images[2]))
        for future in queued:
            done = future.result(timeout=10)
            assert done.status == 200 and len(done.document["classes"]) == 5, done.body
    return answer.status, answer.error


GRPC_RUNS = {
    "expired_deadline": grpc_expired_deadline,
    "client_cancel": grpc_client_cancel,
    "queue_overflow": grpc_queue_overflow,
}
HTTP_RUNS = {
    "expired_deadline": http_expired_deadline,
    "client_cancel": http_client_cancel,
    "queue_overflow": http_queue_overflow,
}


# ---- what the server must have done -------------------------------------------------------------


@contextlib.contextmanager
def _expires_in_queue(c: Ctx) -> Iterator[None]:
    """The request is answered DEADLINE_EXCEEDED before `slow` runs its batch (1.5 s), the server
    counts it, and it leaves the queue."""
    labels = {"model": "slow", "method": "ClassifyImage", "status": "DEADLINE_EXCEEDED"}
    before = c.metric(**labels)
    started = time.monotonic()
    yield
    assert time.monotonic() - started < 1.2  # not held until the batch ran
    eventually(lambda: c.metric(**labels) == before + 1)
    eventually(lambda: c.queue_depth("slow") == 0, timeout=1.0)


@contextlib.contextmanager
def _leaves_queue_cancelled(c: Ctx) -> Iterator[None]:
    """A request queued for `slow` and cancelled inside the block leaves the queue before its
    batch runs (1.5 s) and is counted CANCELLED."""
    labels = {"model": "slow", "method": "ClassifyImage", "status": "CANCELLED"}
    before = c.metric(**labels)
    yield
    eventually(lambda: c.queue_depth("slow") == 0, timeout=1.0)
    eventually(lambda: c.metric(**labels) == before + 1)

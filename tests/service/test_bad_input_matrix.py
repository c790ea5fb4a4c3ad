"""The bad-input matrix: every kind of broken, odd or oversized input a client can send, one test
each, against the real server with real gRPC clients.

The cases are data, tests/service/bad_inputs.toml (what is sent, protocol-neutral, and the status
and message fragments expected); tests/service/bad_inputs.py builds their inputs and
bad_inputs_grpc.py turns them into gRPC requests. Each case asserts the documented gRPC status
and that the message is actionable (it names the problem: the limit, or what was expected and
what came), or for valid-but-unusual inputs (16-bit, CMYK, animated, stereo, 48 kHz...) that the
answer equals in-process preprocessing + ONNX Runtime. After every case the server must still
answer a good request.

The case table is also docs/errors.md's: each case's status and message are compared with the
documented row (numbers and byte strings masked), and `test_docs_list_every_case` checks that
the doc lists exactly these cases. CONVSERVE_UPDATE_DOCS=1 rewrites the table from a run.

The server here has tight limits (the table's [server]) so that the limit cases are cheap: 1 MiB
messages, 512 KiB images, 4 M pixels, 5 s of audio.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from service._proto.convserve.v1 import inference_pb2 as pb
from service._proto.convserve.v1 import inference_pb2_grpc as pb_grpc
from service._proto.inference import grpc_service_pb2_grpc as kpb_grpc
from service.dataplane import postprocess
from service.errors import INTERNAL_MESSAGE
from service.preprocess.audio import AudioSpec, prepare_audio, split_windows
from service.preprocess.image import ImageLimits, ImageSpec, decode_image
from service.settings import Settings
from tests.service import bad_inputs
from tests.service.bad_inputs import Case
from tests.service.bad_inputs_grpc import grpc_request
from tests.service.conftest import STARTED, ServerThread, eventually, make_settings
from tests.service.doc_sections import DOCS, check_section, parse_table, section, table, updating

OK = grpc.StatusCode.OK
ERRORS_DOC = DOCS / "errors.md"
MATRIX = bad_inputs.load()
CASES = MATRIX.cases
LIMITS = MATRIX.server
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


# ---- the server and what a case gets to work with -----------------------------------------------


@dataclass
class Ctx:
    server: ServerThread
    task: pb_grpc.InferenceStub
    kserve: kpb_grpc.GRPCInferenceServiceStub
    image_session: ort.InferenceSession
    speech_session: ort.InferenceSession

    def metric(self, **labels: str) -> float:
        assert self.server.server is not None
        registry = self.server.server.metrics.registry
        return registry.get_sample_value("convserve_requests_total", labels) or 0.0

    def queue_depth(self, model: str) -> int:
        assert self.server.server is not None
        return self.server.server.plane.models.resolve(model).queue_depth


@pytest.fixture(scope="module")
def ctx(repository: Path) -> Iterator[Ctx]:
    settings = make_settings(repository, **LIMITS, load_models=STARTED, metrics_port=-1)
    thread = ServerThread(settings).start()

    def session(name: str) -> ort.InferenceSession:
        path = repository / name / "1" / "model.onnx"
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    # The client's own receive limit is raised so that replies are limited by the server only.
    options = [("grpc.max_receive_message_length", 8 * LIMITS["max_message_bytes"])]
    with grpc.insecure_channel(thread.target, options=options) as channel:
        yield Ctx(
            thread,
            pb_grpc.InferenceStub(channel),
            kpb_grpc.GRPCInferenceServiceStub(channel),
            session("tiny_image"),
            session("tiny_speech"),
        )
    thread.stop()


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


# ---- special runners (deadlines, cancels, queues, message size) ---------------------------------

Outcome = tuple[grpc.StatusCode, str, Any]


def run_expired_deadline(c: Ctx, rng: np.random.Generator) -> Outcome:
    """`slow` batches every 1.5 s; a 0.3 s deadline passes in its queue."""
    labels = {"model": "slow", "method": "ClassifyImage", "status": "DEADLINE_EXCEEDED"}
    before = c.metric(**labels)
    request = pb.ClassifyImageRequest(model="slow", image=gray_png(rng))
    started = time.monotonic()
    try:
        c.task.ClassifyImage(request, timeout=0.3)
    except grpc.RpcError as exc:
        code, message = exc.code(), exc.details() or ""  # type: ignore[attr-defined]
    else:
        raise AssertionError("the deadline did not expire")
    assert time.monotonic() - started < 1.2  # not held until the batch ran
    # Either side's timer may fire first: the server's message, or the client library's.
    assert "deadline" in message.lower(), message
    eventually(lambda: c.metric(**labels) == before + 1)  # the server saw it expire too
    eventually(lambda: c.queue_depth("slow") == 0, timeout=1.0)  # and dropped it from the queue
    return code, message, None


def run_client_cancel(c: Ctx, rng: np.random.Generator) -> Outcome:
    labels = {"model": "slow", "method": "ClassifyImage", "status": "CANCELLED"}
    before = c.metric(**labels)
    future = c.task.ClassifyImage.future(
        pb.ClassifyImageRequest(model="slow", image=gray_png(rng)), timeout=10
    )
    eventually(lambda: c.queue_depth("slow") == 1)
    assert future.cancel()
    eventually(lambda: c.queue_depth("slow") == 0, timeout=1.0)
    eventually(lambda: c.metric(**labels) == before + 1)
    return future.code(), future.details() or "", None


def run_queue_overflow(c: Ctx, rng: np.random.Generator) -> Outcome:
    """`small_queue` holds 2 requests for up to 1 s: the third is refused at once, and the two
    queued ones are still answered."""
    queued = [
        c.task.ClassifyImage.future(
            pb.ClassifyImageRequest(model="small_queue", image=gray_png(rng)), timeout=10
        )
        for _ in range(2)
    ]
    eventually(lambda: c.queue_depth("small_queue") == 2)
    try:
        c.task.ClassifyImage(
            pb.ClassifyImageRequest(model="small_queue", image=gray_png(rng)), timeout=10
        )
    except grpc.RpcError as exc:
        code, message = exc.code(), exc.details() or ""  # type: ignore[attr-defined]
    else:
        raise AssertionError("the third request was not refused")
    for future in queued:
        assert len(future.result(timeout=10).classes) == 5
    return code, message, None


# ---- running a case -----------------------------------------------------------------------------

RUNS = {
    "expired_deadline": run_expired_deadline,
    "client_cancel": run_client_cancel,
    "queue_overflow": run_queue_overflow,
}
CHECKS = {"ClassifyImage": expect_image, "DetectSpeech": expect_speech}
RPCS = ("ClassifyImage", "DetectSpeech", "StreamDetectSpeech", "ModelInfer")


def _invoke(c: Ctx, case: Case, rng: np.random.Generator) -> tuple[Outcome, Any]:
    if case.run is not None:
        return RUNS[case.run](c, rng), None
    request = grpc_request(case, rng)
    try:
        if case.rpc == "StreamDetectSpeech":
            reply: Any = list(c.task.StreamDetectSpeech(iter(request), timeout=10))
        elif case.rpc == "ModelInfer":
            reply = c.kserve.ModelInfer(request, timeout=10)
        else:
            reply = getattr(c.task, case.rpc)(request, timeout=10)
    except grpc.RpcError as exc:
        return (exc.code(), exc.details() or "", None), request  # type: ignore[attr-defined]
    return (OK, "", reply), request


# ---- the documentation table --------------------------------------------------------------------

_observed: dict[str, tuple[str, str]] = {}


def mask(message: str) -> str:
    """Stable form of a message: byte strings and numbers replaced."""
    message = re.sub(r"""b(['"])(?:\\.|(?!\1).)*\1""", "b'…'", message)
    return re.sub(r"\d+(?:\.\d+)?", "N", message)


def _example(case: Case, message: str) -> str:
    return "— (answered)" if case.status == "OK" else message


def _doc_rows() -> dict[str, list[str]]:
    return {r[0].strip("`"): r for r in parse_table(section(ERRORS_DOC, "matrix"))}


def render_doc() -> str:
    rows = []
    for case in CASES:
        status, message = _observed[case.id]
        rows.append((f"`{case.id}`", case.rpc, case.note, status, message))
    return table(("case", "RPC", "input", "status", "example message"), rows)


@pytest.fixture(scope="module")
def doc_rows() -> Iterator[dict[str, list[str]]]:
    yield {} if updating() else _doc_rows()
    if updating() and len(_observed) == len(CASES):
        check_section(ERRORS_DOC, "matrix", render_doc())


def test_docs_list_every_case() -> None:
    if updating():
        pytest.skip("rewriting docs/errors.md")
    documented = [(r[0].strip("`"), r[3]) for r in parse_table(section(ERRORS_DOC, "matrix"))]
    expected = [(case.id, case.status) for case in CASES]
    assert documented == expected, "docs/errors.md is out of date: run with CONVSERVE_UPDATE_DOCS=1"


def _makes(value: Any) -> Iterator[str]:
    """The builders a `send` value names."""
    if isinstance(value, dict):
        if "make" in value:
            yield value["make"]
        for v in value.values():
            yield from _makes(v)
    elif isinstance(value, list):
        for v in value:
            yield from _makes(v)


def test_the_matrix_is_big_enough_and_well_formed() -> None:
    assert len(CASES) >= 78
    assert len({case.id for case in CASES}) == len(CASES)
    assert set(MATRIX.server) <= {f.name for f in dataclasses.fields(Settings)}
    for case in CASES:
        assert case.rpc in RPCS, case.id
        assert case.status in grpc.StatusCode.__members__, case.id
        assert case.status != "OK" or (case.rpc in CHECKS and not case.message), case.id
        assert case.status == "OK" or case.message or not case.masked, case.id
        assert case.run is None or case.run in RUNS, case.id
    used = {make for case in CASES for make in _makes(case.send)}
    assert used == set(bad_inputs.BUILDERS), "every builder named exists, and each is used"


# ---- the test -----------------------------------------------------------------------------------


def _good_request(c: Ctx, rng: np.random.Generator) -> None:
    request = pb.ClassifyImageRequest(image=gray_png(rng, 8, 8))
    expect_image(c, request, c.task.ClassifyImage(request, timeout=10))


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(
    ctx: Ctx, doc_rows: dict[str, list[str]], case: Case, rng: np.random.Generator
) -> None:
    (code, message, reply), request = _invoke(ctx, case, rng)
    assert code.name == case.status, f"{case.id}: {code.name}: {message}"
    if code == OK:
        CHECKS[case.rpc](ctx, request, reply)
    else:
        # Actionable: says what is wrong, never the generic INTERNAL text.
        assert message and message != INTERNAL_MESSAGE and len(message) >= 15, message
        for fragment in case.message:
            assert fragment in message, f"{case.id}: {fragment!r} not in {message!r}"
    _observed[case.id] = (code.name, _example(case, message))
    if not updating():
        documented = doc_rows.get(case.id)
        assert documented is not None, f"{case.id} is not in docs/errors.md"
        assert documented[3] == code.name
        if case.masked:
            assert mask(documented[4]) == mask(_example(case, message)), (
                f"{case.id}: docs/errors.md says {documented[4]!r}, the server said {message!r} "
                "(regenerate with CONVSERVE_UPDATE_DOCS=1)"
            )
    # Whatever happened, the server still answers a good request correctly.
    _good_request(ctx, rng)

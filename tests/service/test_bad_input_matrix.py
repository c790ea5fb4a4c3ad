"""The bad-input matrix: every kind of broken, odd or oversized input a client can send, one test
each per protocol, against the real server with real clients: gRPC, and HTTP (KServe v2 REST
and the task API, as curl or tritonclient.http would send them).

The cases are data, tests/service/bad_inputs.toml (what is sent, protocol-neutral, and the status
and message fragments expected); tests/service/bad_inputs.py builds their inputs,
bad_inputs_grpc.py and bad_inputs_http.py turn them into requests, bad_input_scenarios.py holds
the expected answers and the cases that are scenarios (deadline, cancel, full queue). Each case
asserts the documented status (over HTTP: the gRPC status's, through service.errors.HTTP_STATUS)
and that the message is actionable (it names the problem: the limit, or what was expected and
what came), or for valid-but-unusual inputs (16-bit, CMYK, animated, stereo, 48 kHz...) that the
answer equals in-process preprocessing + ONNX Runtime. After every case the server must still
answer a good request on the same protocol.

The case table is also docs/errors.md's: each case's statuses and message are compared with the
documented row (numbers and byte strings masked), over HTTP with the row of the HTTP messages
table where HTTP words it differently, and `test_docs_list_every_case` checks that the doc lists
exactly these cases. CONVSERVE_UPDATE_DOCS=1 rewrites the tables from a run.

The server here has tight limits (the table's [server]) so that the limit cases are cheap: 1 MiB
messages, 512 KiB images, 4 M pixels, 5 s of audio.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import onnxruntime as ort
import pytest
from google.protobuf import json_format

from service import errors
from service._proto.convserve.v1 import inference_pb2 as pb
from service._proto.convserve.v1 import inference_pb2_grpc as pb_grpc
from service._proto.inference import grpc_service_pb2_grpc as kpb_grpc
from service.errors import HTTP_STATUS, INTERNAL_MESSAGE
from service.settings import Settings
from tests.service import bad_inputs
from tests.service import bad_inputs_http as over_http
from tests.service.bad_input_scenarios import (
    CHECKS,
    GRPC_RUNS,
    HTTP_RUNS,
    Ctx,
    Outcome,
    expect_image,
    gray_png,
)
from tests.service.bad_inputs import Case
from tests.service.bad_inputs_grpc import grpc_request
from tests.service.conftest import STARTED, ServerThread, make_settings
from tests.service.doc_sections import DOCS, check_section, parse_table, section, table, updating

OK = grpc.StatusCode.OK
ERRORS_DOC = DOCS / "errors.md"
MATRIX = bad_inputs.load()
CASES = MATRIX.cases
LIMITS = MATRIX.server
RPCS = ("ClassifyImage", "DetectSpeech", "StreamDetectSpeech", "ModelInfer")
RESPONSES = {"ClassifyImage": pb.ClassifyImageResponse, "DetectSpeech": pb.DetectSpeechResponse}
REQUESTS = {"ClassifyImage": pb.ClassifyImageRequest, "DetectSpeech": pb.DetectSpeechRequest}
HTTP_CASES = [case for case in CASES if over_http.no_http_form(case) is None]
# Cases whose HTTP message is worded apart from gRPC's: docs/errors.md lists them on their own.
HTTP_WORDED = [
    c.id for c in HTTP_CASES if "message" in (c.http or {}) and not over_http.known_bug(c)
]


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


# ---- running a case -----------------------------------------------------------------------------


def _invoke_grpc(c: Ctx, case: Case, rng: Any) -> tuple[Outcome, Any, Any]:
    """(outcome, reply, request)."""
    if case.run is not None:
        return GRPC_RUNS[case.run](c, rng), None, None
    request = grpc_request(case, rng)
    try:
        if case.rpc == "StreamDetectSpeech":
            reply: Any = list(c.task.StreamDetectSpeech(iter(request), timeout=10))
        elif case.rpc == "ModelInfer":
            reply = c.kserve.ModelInfer(request, timeout=10)
        else:
            reply = getattr(c.task, case.rpc)(request, timeout=10)
    except grpc.RpcError as exc:
        return (exc.code(), exc.details() or ""), None, request  # type: ignore[attr-defined]
    return (OK, ""), reply, request


def _invoke_http(c: Ctx, case: Case, rng: Any) -> tuple[Outcome, Any, Any]:
    """(outcome, reply, request): a valid case's reply and request as the gRPC messages they
    stand for, so that one check serves both protocols."""
    if case.run is not None:
        return HTTP_RUNS[case.run](c, rng), None, None
    request = over_http.http_request(case, rng)
    answer = over_http.send(c.http, request)
    if answer.status != 200 or case.rpc not in RESPONSES:
        return (answer.status, answer.error), None, None
    # Parsing with the .proto names and no unknown field proves the JSON mapping as well.
    reply = json_format.ParseDict(answer.document, RESPONSES[case.rpc]())
    return (answer.status, ""), reply, REQUESTS[case.rpc](**request.fields)


def _check_error(case: Case, message: str | None, fragments: tuple[str, ...]) -> None:
    if message is None:  # the client left before any answer (a cancel)
        return
    # Actionable: says what is wrong, never the generic INTERNAL text.
    assert message and message != INTERNAL_MESSAGE and len(message) >= 15, message
    for fragment in fragments:
        assert fragment in message, f"{case.id}: {fragment!r} not in {message!r}"


def _good_request_grpc(c: Ctx, rng: Any) -> None:
    request = pb.ClassifyImageRequest(image=gray_png(rng, 8, 8))
    expect_image(c, request, c.task.ClassifyImage(request, timeout=10))


def _good_request_http(c: Ctx, rng: Any) -> None:
    image = gray_png(rng, 8, 8)
    answer = over_http.send(c.http, over_http.HttpRequest("/v1/classify", image))
    assert answer.status == 200, answer.body
    reply = json_format.ParseDict(answer.document, pb.ClassifyImageResponse())
    expect_image(c, pb.ClassifyImageRequest(image=image), reply)


# ---- the documentation tables -------------------------------------------------------------------

_observed: dict[str, str] = {}  # case id -> gRPC example message
_observed_http: dict[str, str] = {}  # case id -> HTTP example message


def mask(message: str) -> str:
    """Stable form of a message: byte strings and numbers replaced."""
    message = re.sub(r"""b(['"])(?:\\.|(?!\1).)*\1""", "b'…'", message)
    return re.sub(r"\d+(?:\.\d+)?", "N", message)


def _example(case: Case, message: str) -> str:
    return "— (answered)" if case.status == "OK" else message


def http_cell(case: Case) -> str:
    """The matrix's HTTP column: the status to expect, or why there is none."""
    missing = over_http.no_http_form(case)
    if missing is not None:
        return f"— {missing}"
    return f"{over_http.expected_status(case)}{' †' if over_http.known_bug(case) else ''}"


def render_matrix() -> str:
    rows: list[tuple[str, ...]] = [
        (f"`{c.id}`", c.rpc, c.note, c.status, http_cell(c), _observed[c.id]) for c in CASES
    ]
    text = table(("case", "RPC", "input", "status", "HTTP", "example message"), rows)
    bugs = [f"- `{c.id}`: {over_http.known_bug(c)}." for c in CASES if over_http.known_bug(c)]
    if not bugs:
        return text
    lead = "† HTTP still answers otherwise here (reported; a strict expected failure until fixed):"
    return text + "\n" + "\n".join([lead, "", *bugs]) + "\n"


def render_http_messages() -> str:
    by_id = {c.id: c for c in CASES}
    rows: list[tuple[str, ...]] = [
        (f"`{i}`", http_cell(by_id[i]), _observed_http[i]) for i in HTTP_WORDED
    ]
    return table(("case", "HTTP", "example message over HTTP"), rows)


def render_status_table() -> str:
    """service.errors.HTTP_STATUS, then the errors that refine it."""
    rows: list[tuple[str, ...]] = [(f"`{c.name}`", str(http)) for c, http in HTTP_STATUS.items()]
    refined = [
        error
        for error in vars(errors).values()
        if isinstance(error, type)
        and issubclass(error, errors.ConvserveError)
        and error.http_status is not None
    ]
    for error in refined:
        why = (error.__doc__ or "").strip().splitlines()[0].rstrip(".")
        why = why[0].lower() + why[1:]
        rows.append((f"`{error.status.name}`, `{error.__name__}`: {why}", str(error.http_status)))
    return table(("gRPC status", "HTTP status"), rows)


def _rows(name: str) -> dict[str, list[str]]:
    return {r[0].strip("`"): r for r in parse_table(section(ERRORS_DOC, name))}


@pytest.fixture(scope="module")
def doc_rows() -> Iterator[tuple[dict[str, list[str]], dict[str, list[str]]]]:
    yield ({}, {}) if updating() else (_rows("matrix"), _rows("matrix-http"))
    if updating() and len(_observed) == len(CASES):
        check_section(ERRORS_DOC, "matrix", render_matrix())
    if updating() and set(HTTP_WORDED) <= set(_observed_http):
        check_section(ERRORS_DOC, "matrix-http", render_http_messages())


def test_docs_list_every_case() -> None:
    if updating():
        pytest.skip("rewriting docs/errors.md")
    documented = [(r[0].strip("`"), r[3], r[4]) for r in parse_table(section(ERRORS_DOC, "matrix"))]
    expected = [(case.id, case.status, http_cell(case)) for case in CASES]
    assert documented == expected, "docs/errors.md is out of date: run with CONVSERVE_UPDATE_DOCS=1"
    assert list(_rows("matrix-http")) == HTTP_WORDED


def test_docs_http_status_table() -> None:
    check_section(ERRORS_DOC, "http-status", render_status_table())


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
        assert case.run is None or case.run in GRPC_RUNS, case.id
        assert set(case.http or {}) <= {"message", "error", "none", "bug"}, case.id
        over_http.expected_status(case)  # names a real error of the same status
    assert set(GRPC_RUNS) == set(HTTP_RUNS)
    assert len(HTTP_CASES) >= 60  # most cases go over HTTP too
    used = {make for case in CASES for make in _makes(case.send)}
    assert used == set(bad_inputs.BUILDERS), "every builder named exists, and each is used"


# ---- the tests ----------------------------------------------------------------------------------


def _documented(case: Case, message: str, documented: str) -> None:
    if case.masked:
        assert mask(documented) == mask(message), (
            f"{case.id}: docs/errors.md says {documented!r}, the server said {message!r} "
            "(regenerate with CONVSERVE_UPDATE_DOCS=1)"
        )


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(
    ctx: Ctx, doc_rows: tuple[dict[str, list[str]], dict[str, list[str]]], case: Case, rng: Any
) -> None:
    (code, message), reply, request = _invoke_grpc(ctx, case, rng)
    assert isinstance(code, grpc.StatusCode) and message is not None
    assert code.name == case.status, f"{case.id}: {code.name}: {message}"
    if code == OK:
        CHECKS[case.rpc](ctx, request, reply)
    else:
        _check_error(case, message, case.message)
    _observed[case.id] = _example(case, message)
    if not updating():
        documented = doc_rows[0].get(case.id)
        assert documented is not None, f"{case.id} is not in docs/errors.md"
        assert documented[3] == code.name
        _documented(case, _example(case, message), documented[5])
    # Whatever happened, the server still answers a good request correctly.
    _good_request_grpc(ctx, rng)


def _http_param(case: Case) -> Any:
    bug = over_http.known_bug(case)
    marks = [pytest.mark.xfail(strict=True, reason=f"service/http: {bug}")] if bug else []
    return pytest.param(case, marks=marks, id=case.id)


@pytest.mark.parametrize("case", [_http_param(case) for case in HTTP_CASES])
def test_bad_input_http(
    ctx: Ctx, doc_rows: tuple[dict[str, list[str]], dict[str, list[str]]], case: Case, rng: Any
) -> None:
    (status, message), reply, request = _invoke_http(ctx, case, rng)
    assert status == over_http.expected_status(case), f"{case.id}: HTTP {status}: {message}"
    if status == 200:
        CHECKS[case.rpc](ctx, request, reply)
    else:
        _check_error(case, message, over_http.expected_message(case))
    if message is not None:
        _observed_http[case.id] = _example(case, message)
        if not updating():
            # Worded as gRPC words it, unless the HTTP messages table lists the case.
            documented = doc_rows[1].get(case.id) or doc_rows[0][case.id]
            _documented(case, _example(case, message), documented[-1])
    _good_request_http(ctx, rng)

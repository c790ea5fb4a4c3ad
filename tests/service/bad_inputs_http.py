"""The bad-input matrix's cases as HTTP requests: a case's built `send` fields
(tests/service/bad_inputs.py) to the request a curl or tritonclient.http user would send.

    ClassifyImage  POST /v1/classify?model=&version=&top_k=       body: the image
    DetectSpeech   POST /v1/detect-speech?model=&version=&threshold=  body: the audio
    ModelInfer     POST /v2/models/{m}[/versions/{v}]/infer       JSON tensors; `raw` inputs as
                   Triton's binary tensor extension (Inference-Header-Content-Length)

The expected HTTP status is the gRPC status's through service.errors.HTTP_STATUS, or the
refinement of the error a case's `http.error` names (a body over --max-message-bytes: 413), and
the message fragments are the gRPC ones unless `http.message` gives the protocol's own wording.

Some cases have no HTTP form; `no_http_form` says why, and the docs table says so in its HTTP
column. Mostly that follows from what a case sends (a raw tensor, raw samples, a stream), so a
new case gets the right answer without a second list to keep; `http.none` gives the reason for
one that cannot follow.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

from service import errors
from service.errors import HTTP_STATUS, to_http_status
from tests.service import bad_inputs
from tests.service.bad_inputs import Case

TASK_PATHS = {"ClassifyImage": "/v1/classify", "DetectSpeech": "/v1/detect-speech"}
QUERY = ("model", "version", "top_k", "threshold")  # the task API's query parameters


@dataclass(frozen=True)
class HttpRequest:
    path: str  # with its query string
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)  # the built `send` fields it carries


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    document: Any  # the JSON body (None when the body is not JSON)
    body: bytes

    @property
    def error(self) -> str:
        doc = self.document
        return str(doc.get("error", "")) if isinstance(doc, dict) else ""


def no_http_form(case: Case) -> str | None:
    """Why a case cannot be sent over HTTP, or None when it can."""
    send = case.send or {}
    if "none" in (case.http or {}):
        return str((case.http or {})["none"])
    if case.rpc == "StreamDetectSpeech":
        return "gRPC only (streaming)"
    if case.rpc == "ClassifyImage" and "tensor" in send:
        return "gRPC only (raw tensor)"
    if case.rpc == "DetectSpeech" and "samples" in send:
        return "gRPC only (raw samples)"
    return None


def expected_status(case: Case) -> int:
    """The HTTP status a case must answer."""
    name = (case.http or {}).get("error")
    if name is None:
        return HTTP_STATUS[grpc.StatusCode[case.status]]
    error = getattr(errors, name)
    assert error.status.name == case.status, f"{case.id}: {name} is not {case.status}"
    return to_http_status(error(case.id))[0]


def expected_message(case: Case) -> tuple[str, ...]:
    """The fragments the HTTP error message must contain."""
    return tuple((case.http or {}).get("message", case.message))


def known_bug(case: Case) -> str | None:
    """A difference from gRPC that the HTTP routes still have (reported, to be fixed)."""
    bug = (case.http or {}).get("bug")
    return None if bug is None else str(bug)


def http_request(case: Case, rng: np.random.Generator) -> HttpRequest:
    """The case's request, built fresh."""
    assert case.send is not None and no_http_form(case) is None, case.id
    fields = bad_inputs.build(case.send, rng)
    if case.rpc in TASK_PATHS:
        body = fields.get("image", fields.get("audio", b""))
        return HttpRequest(task_path(case.rpc, fields), body, {}, fields)
    assert case.rpc == "ModelInfer", case.rpc
    return _model_infer(fields)


def task_path(rpc: str, fields: dict[str, Any]) -> str:
    params = {key: _text(fields[key]) for key in QUERY if key in fields}
    query = urllib.parse.urlencode(params)
    return TASK_PATHS[rpc] + (f"?{query}" if query else "")


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, float) else str(value)  # nan, inf as Python


def _model_infer(fields: dict[str, Any]) -> HttpRequest:
    inputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for spec in fields["inputs"]:
        x = np.asarray(spec["data"])
        entry: dict[str, Any] = {
            "name": spec.get("name", "input"),
            "datatype": spec["datatype"],
            "shape": spec.get("shape", list(x.shape)),
        }
        encoding = spec.get("encoding", "raw")
        if encoding in ("contents", "both"):
            entry["data"] = x.ravel().tolist()
        if encoding in ("raw", "both"):
            raw = x.tobytes()
            raw = raw[: len(raw) - spec.get("raw_trim", 0)]
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        inputs.append(entry)
    # gRPC's extra raw_input_contents entries; over HTTP, bytes that no input claims.
    chunks.extend(b"\0" * 8 for _ in range(fields.get("extra_raw", 0)))
    document: dict[str, Any] = {"inputs": inputs}
    if fields.get("outputs"):
        document["outputs"] = [{"name": name} for name in fields["outputs"]]
    model = urllib.parse.quote(fields["model_name"], safe="")
    version = fields.get("model_version", "")
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    header = json.dumps(document).encode()
    if not chunks:
        return HttpRequest(path, header, {"Content-Type": "application/json"}, fields)
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(header)),
    }
    return HttpRequest(path, b"".join([header, *chunks]), headers, fields)


def send(host: str, request: HttpRequest, timeout: float = 30.0) -> HttpAnswer:
    """POST the request and read the answer. The server may answer (413) before it has read a
    large body and close the connection, so a send cut short is not an error: the answer is."""
    conn = http.client.HTTPConnection(host, timeout=timeout)
    try:
        conn.putrequest("POST", request.path)
        for key, value in {"Content-Length": str(len(request.body)), **request.headers}.items():
            conn.putheader(key, value)
        conn.endheaders()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.send(request.body)
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        document = None
    return HttpAnswer(response.status, document, body)

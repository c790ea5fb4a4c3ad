"""KServe v2 over REST against the real server: tritonclient.http for the protocol, raw HTTP for
the wire details (binary extension, errors, compression), and gRPC beside it for equality."""

from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import urllib.error
import urllib.request
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from service._proto.inference import grpc_service_pb2 as pb
from service._proto.inference import grpc_service_pb2_grpc as pb_grpc
from service.errors import HTTP_STATUS
from service.servicers import converters
from tests.service.conftest import IMAGE_LABELS, ServerThread

Stub = pb_grpc.GRPCInferenceServiceStub


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Any:
    c = httpclient.InferenceServerClient(server.http.removeprefix("http://"), network_timeout=30)
    yield c
    c.close()


def _reference(server: ServerThread, name: str, x: np.ndarray) -> np.ndarray:
    path = server.settings.repository / name / "1" / "model.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def request(
    server: ServerThread, method: str, path: str, body: bytes | None = None, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(server.http + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _early_answer(server: ServerThread, path: str, body: bytes) -> tuple[int, bytes]:
    """POST a body the server may refuse before reading it: keep sending until it answers."""
    conn = http.client.HTTPConnection(server.http.removeprefix("http://"), timeout=30)
    try:
        conn.putrequest("POST", path)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.send(body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_health_and_metadata(client: Any) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tiny_image") and client.is_model_ready("tiny_image", "1")
    assert not client.is_model_ready("no_such_model")
    meta = client.get_server_metadata()
    assert meta["name"] == "convserve" and "classification" in meta["extensions"]
    model = client.get_model_metadata("tiny_image")
    assert model["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    assert model["versions"] == ["1"] and model["platform"] == "onnxruntime_onnx"
    config = client.get_model_config("tiny_image")
    assert config["max_batch_size"] == 8 and config["input"][0]["dims"] == [1, 8, 8]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 2000


@pytest.mark.parametrize("binary", [False, True])
def test_infer_json_and_binary_equal_onnx_runtime(
    server: ServerThread, client: Any, binary: bool, rng: np.random.Generator
) -> None:
    x = rng.standard_normal((3, 1, 8, 8)).astype(np.float32)
    tensor = httpclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    out = httpclient.InferRequestedOutput("logits", binary_data=binary)
    result = client.infer("tiny_image", [tensor], outputs=[out], request_id="r-7")
    np.testing.assert_array_equal(result.as_numpy("logits"), _reference(server, "tiny_image", x))
    assert result.get_response()["id"] == "r-7"


def test_http_and_grpc_answer_bit_for_bit(
    server: ServerThread, client: Any, kserve_stub: Stub, rng: np.random.Generator
) -> None:
    x = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)
    message = pb.ModelInferRequest(model_name="tiny_image")
    message.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
    message.raw_input_contents.append(x.tobytes())
    reply = kserve_stub.ModelInfer(message, timeout=10)
    over_grpc = converters.raw_tensors(reply.outputs, reply.raw_output_contents)["logits"]
    for binary in (False, True):
        tensor = httpclient.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=binary)
        result = client.infer("tiny_image", [tensor])  # no outputs named: all, binary
        over_http = result.as_numpy("logits")
        assert over_http.tobytes() == over_grpc.tobytes()


def test_other_datatypes_and_nested_json(server: ServerThread) -> None:
    x = np.array([[1.5, -2.0, 0.25, 3.0]], np.float16)
    mask = np.array([[True, False, True, True]])
    body = {
        "inputs": [
            {"name": "x", "datatype": "FP16", "shape": [1, 4], "data": x.tolist()},  # nested
            {"name": "mask", "datatype": "BOOL", "shape": [1, 4], "data": mask.ravel().tolist()},
        ]
    }
    status, _, raw = request(server, "POST", "/v2/models/half/infer", json.dumps(body).encode())
    assert status == 200, raw
    outputs = {o["name"]: o for o in json.loads(raw)["outputs"]}
    assert outputs["y"]["datatype"] == "FP16" and outputs["y"]["data"] == (x * 2).ravel().tolist()
    assert outputs["flipped"]["data"] == (~mask).ravel().tolist()


def test_classification_extension(
    server: ServerThread, client: Any, rng: np.random.Generator
) -> None:
    x = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)
    tensor = httpclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    out = httpclient.InferRequestedOutput("logits", class_count=3)
    rows = client.infer("tiny_image", [tensor], outputs=[out]).as_numpy("logits")
    logits = _reference(server, "tiny_image", x)
    for r in range(2):
        order = np.argsort(-logits[r], kind="stable")[:3]
        want = [f"{logits[r][i]:f}:{i}:{IMAGE_LABELS[i]}".encode() for i in order]
        assert list(rows[r]) == want


def test_statistics_and_repository(
    client: Any, server: ServerThread, rng: np.random.Generator
) -> None:
    before = client.get_inference_statistics("tiny_image")["model_stats"][0]["inference_count"]
    x = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)
    tensor = httpclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    client.infer("tiny_image", [tensor])
    stats = client.get_inference_statistics("tiny_image")["model_stats"][0]
    assert stats["inference_count"] == before + 2 and isinstance(stats["execution_count"], int)
    index = {
        (m["name"], m.get("version", "")): m["state"] for m in client.get_model_repository_index()
    }
    assert index[("tiny_image", "1")] == "READY" and index[("broken", "")] == "UNAVAILABLE"
    client.unload_model("batchy")
    assert not client.is_model_ready("batchy")
    client.load_model("batchy")
    assert client.is_model_ready("batchy")
    with pytest.raises(InferenceServerException, match="not found"):
        client.load_model("no_such_model")


def test_load_with_a_config_override(client: Any, server: ServerThread) -> None:
    config = client.get_model_config("batchy")
    config["dynamic_batching"]["max_queue_delay_microseconds"] = 1234
    client.load_model("batchy", config=json.dumps(config))
    assert (
        client.get_model_config("batchy")["dynamic_batching"]["max_queue_delay_microseconds"]
        == 1234
    )
    client.load_model("batchy")  # without the override: config.pbtxt again
    assert (
        client.get_model_config("batchy")["dynamic_batching"]["max_queue_delay_microseconds"]
        == 50_000
    )
    with pytest.raises(InferenceServerException, match="not a ModelConfig"):
        client.load_model("batchy", config='{"max_batch_size": "many"}')


def test_errors_have_statuses_from_the_grpc_table(
    server: ServerThread, rng: np.random.Generator
) -> None:
    x = rng.standard_normal((1, 1, 8, 8)).astype(np.float32)
    good = {
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": x.ravel().tolist()}
        ]
    }
    wrong_shape = {"inputs": [{**good["inputs"][0], "shape": [1, 64]}]}
    cases = [
        ("/v2/models/nope/infer", good, 404, "not found"),
        ("/v2/models/tiny_image/versions/9/infer", good, 404, "no version '9'"),
        ("/v2/models/tiny_image/infer", wrong_shape, 400, "expected shape [-1, 1, 8, 8]"),
        ("/v2/models/broken/infer", good, 503, "not loaded"),
        ("/v2/models/tiny_image/infer", {"inputs": "x"}, 400, "'inputs' list"),
    ]
    for path, body, status, fragment in cases:
        code, headers, raw = request(server, "POST", path, json.dumps(body).encode())
        assert code == status, (path, raw)
        assert headers["content-type"] == "application/json"
        assert fragment in json.loads(raw)["error"], raw
    code, _, raw = request(server, "POST", "/v2/models/tiny_image/infer", b"{not json")
    assert code == 400 and "not valid JSON" in json.loads(raw)["error"]
    code, _, raw = request(server, "GET", "/v2/no/such/route")
    assert code == 404 and "error" in json.loads(raw)


def test_compressed_and_oversized_bodies(server: ServerThread, rng: np.random.Generator) -> None:
    x = rng.standard_normal((1, 1, 8, 8)).astype(np.float32)
    body = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": [1, 1, 8, 8],
                    "data": x.ravel().tolist(),
                }
            ]
        }
    ).encode()
    code, _, raw = request(
        server,
        "POST",
        "/v2/models/tiny_image/infer",
        gzip.compress(body),
        **{"Content-Encoding": "gzip"},
    )
    assert code == 200, raw
    limit = server.settings.max_message_bytes
    code, raw = _early_answer(server, "/v2/models/tiny_image/infer", b" " * (limit + 1))
    assert code == 413 and "max-message-bytes" in json.loads(raw)["error"]
    bomb = gzip.compress(b" " * (limit + 10))
    code, _, raw = request(
        server, "POST", "/v2/models/tiny_image/infer", bomb, **{"Content-Encoding": "gzip"}
    )
    assert code == 413 and "decompressed" in json.loads(raw)["error"]


def test_status_table_covers_every_grpc_status() -> None:
    assert set(HTTP_STATUS) == set(grpc.StatusCode)
    assert HTTP_STATUS[grpc.StatusCode.INVALID_ARGUMENT] == 400
    assert HTTP_STATUS[grpc.StatusCode.NOT_FOUND] == 404
    assert HTTP_STATUS[grpc.StatusCode.UNAVAILABLE] == 503
    assert HTTP_STATUS[grpc.StatusCode.RESOURCE_EXHAUSTED] == 429
    assert HTTP_STATUS[grpc.StatusCode.DEADLINE_EXCEEDED] == 504
    assert HTTP_STATUS[grpc.StatusCode.INTERNAL] == 500


def test_replies_are_not_held_back_by_nagle(server: ServerThread) -> None:
    """Accepted HTTP connections have TCP_NODELAY: without it every reply on a keep-alive
    connection waited for the client's delayed ACK (~40 ms). asyncio sets it only on sockets
    whose proto reads IPPROTO_TCP, which the listening socket must therefore report."""
    import socket

    assert server.server is not None
    front = server.server.http
    assert front._socket is not None and front._socket.proto == socket.IPPROTO_TCP
    conn = http.client.HTTPConnection(server.http.removeprefix("http://"), timeout=10)
    try:
        conn.request("GET", "/v2/health/live")
        assert conn.getresponse().read() == b'{"live":true}'  # the connection stays open
        assert front._server is not None
        nodelay = {
            c.transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            for c in front._server.server_state.connections
        }
        assert nodelay == {1}
    finally:
        conn.close()

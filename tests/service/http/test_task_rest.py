"""The task API over HTTP with curl, as a user types it: /v1/classify and /v1/detect-speech answer
the JSON of the matching gRPC response, field for field."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf import json_format

from service._proto.convserve.v1 import inference_pb2 as pb
from service._proto.convserve.v1 import inference_pb2_grpc as pb_grpc
from tests.service.conftest import ServerThread, png, speech_clip, wav

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")


def curl(server: ServerThread, path: str, *args: str) -> tuple[int, Any]:
    """Run curl; (HTTP status, parsed JSON body)."""
    done = subprocess.run(
        ["curl", "-sS", "-w", "\n%{http_code}", *args, server.http + path],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    body, _, status = done.stdout.rpartition("\n")
    return int(status), json.loads(body)


def as_json(message: Any) -> dict[str, Any]:
    """protobuf's JSON mapping with the .proto field names, every field present; int64 shapes
    as numbers, not the mapping's strings (checked separately below)."""
    document = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    for model in document.get("models", [document]):
        for version in model.get("versions", []):
            for tensor in version.get("inputs", []) + version.get("outputs", []):
                tensor["shape"] = [int(d) for d in tensor["shape"]]
    return document


@pytest.fixture
def image_file(tmp_path: Path, rng: np.random.Generator) -> Path:
    path = tmp_path / "digit.png"
    path.write_bytes(png(rng.integers(0, 256, size=(8, 8), dtype=np.uint8)))
    return path


def test_classify_with_curl_equals_grpc(
    server: ServerThread, task_stub: pb_grpc.InferenceStub, image_file: Path
) -> None:
    status, body = curl(server, "/v1/classify?top_k=3", "--data-binary", f"@{image_file}")
    assert status == 200, body
    reply = task_stub.ClassifyImage(
        pb.ClassifyImageRequest(image=image_file.read_bytes(), top_k=3), timeout=10
    )
    assert body == as_json(reply)
    assert list(body) == ["classes", "model", "version"] and len(body["classes"]) == 3
    assert set(body["classes"][0]) == {"index", "label", "score"}
    status, form = curl(server, "/v1/classify?top_k=3", "-F", f"image=@{image_file}")
    assert status == 200 and form == body  # multipart: the same answer


def test_detect_speech_with_curl_equals_grpc(
    server: ServerThread, task_stub: pb_grpc.InferenceStub, tmp_path: Path
) -> None:
    clip, _ = speech_clip()
    path = tmp_path / "clip.wav"
    path.write_bytes(wav(clip))
    status, body = curl(server, "/v1/detect-speech?threshold=0.6", "--data-binary", f"@{path}")
    assert status == 200, body
    reply = task_stub.DetectSpeech(
        pb.DetectSpeechRequest(audio=path.read_bytes(), threshold=0.6), timeout=10
    )
    assert body == as_json(reply)
    assert body["windows"] and {"speech_probability", "is_speech", "segments"} <= set(body)


def test_models_listing(server: ServerThread, task_stub: pb_grpc.InferenceStub) -> None:
    status, body = curl(server, "/v1/models")
    assert status == 200
    assert body == as_json(task_stub.ListModels(pb.ListModelsRequest(), timeout=10))
    status, one = curl(server, "/v1/models/tiny_image")
    assert status == 200 and one["name"] == "tiny_image" and one["is_default"] is True


@pytest.mark.parametrize(
    ("path", "args", "status", "fragment"),
    [
        ("/v1/classify", ["--data-binary", "hello"], 400, "cannot decode image"),
        ("/v1/classify", ["-X", "POST"], 400, "image is empty"),
        ("/v1/classify?model=nope", ["--data-binary", "x"], 404, "not found"),
        ("/v1/classify?model=tiny_speech", ["--data-binary", "x"], 400, "speech_detection model"),
        ("/v1/classify?top_k=many", ["--data-binary", "x"], 400, "top_k must be int"),
        ("/v1/detect-speech?threshold=2", ["--data-binary", "x"], 400, "threshold must be in"),
        ("/v1/detect-speech", ["--data-binary", "not audio"], 400, "audio"),
        ("/v1/classify", ["-X", "GET"], 405, "Method Not Allowed"),
    ],
)
def test_errors(
    server: ServerThread, path: str, args: list[str], status: int, fragment: str
) -> None:
    code, body = curl(server, path, *args)
    assert code == status and fragment in body["error"], body

"""End to end on real data: models trained and exported by export/, served by a real
`convserve serve` process, called over gRPC with real photos, Fashion-MNIST images and speech."""

from __future__ import annotations

import gzip
import io
import subprocess
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from service._proto.convserve.v1 import inference_pb2 as pb
from service._proto.convserve.v1 import inference_pb2_grpc as pb_grpc
from service._proto.inference import grpc_service_pb2 as kpb
from service._proto.inference import grpc_service_pb2_grpc as kpb_grpc
from tests.integration.serverproc import ServerProcess

FASHION = Path("/usr/share/datasets/fashion-mnist")
IMAGENET_CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> pb_grpc.InferenceStub:
    return pb_grpc.InferenceStub(grpc.insecure_channel(server.grpc_target))


@pytest.fixture(scope="module")
def kstub(server: ServerProcess) -> kpb_grpc.GRPCInferenceServiceStub:
    return kpb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.grpc_target))


def _fashion_test(n: int) -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(FASHION / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FASHION / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    idx = np.random.default_rng(7).choice(len(images), n, replace=False)
    return images[idx], labels[idx]


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def test_default_models_listed_ready_on_cpu(stub: pb_grpc.InferenceStub) -> None:
    models = {m.name: m for m in stub.ListModels(pb.ListModelsRequest(), timeout=30).models}
    assert {"lenet5_fashion", "mobilenet_v2", "resnet_fashion", "speech_cnn"} <= set(models)
    for m in models.values():
        assert m.versions and m.versions[0].state == "READY", m
        assert m.versions[0].provider == "CPUExecutionProvider"
    assert models["mobilenet_v2"].is_default and models["speech_cnn"].is_default
    assert models["mobilenet_v2"].num_labels == 1000


def test_mobilenet_recognises_a_real_cat_photo(stub: pb_grpc.InferenceStub) -> None:
    skimage_data = pytest.importorskip("skimage.data")
    buf = io.BytesIO()
    Image.fromarray(skimage_data.chelsea()).save(buf, format="JPEG", quality=90)
    # No model named: the default image model answers.
    reply = stub.ClassifyImage(pb.ClassifyImageRequest(image=buf.getvalue()), timeout=60)
    assert reply.model == "mobilenet_v2"
    assert len(reply.classes) == 5
    scores = [c.score for c in reply.classes]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0001
    assert {c.index for c in reply.classes} & IMAGENET_CATS, reply
    assert all(c.label for c in reply.classes)


@pytest.mark.parametrize("model", ["lenet5_fashion", "resnet_fashion"])
def test_fashion_models_classify_real_test_images(stub: pb_grpc.InferenceStub, model: str) -> None:
    images, labels = _fashion_test(60)
    correct = 0
    for img, label in zip(images, labels, strict=True):
        reply = stub.ClassifyImage(
            pb.ClassifyImageRequest(model=model, image=_png(img), top_k=3), timeout=30
        )
        assert len(reply.classes) == 3
        correct += int(reply.classes[0].index == int(label))
    # Chance is 10%; even the --quick models (trained on a subset) are far above it.
    assert correct / len(labels) >= 0.6, f"{model}: {correct}/{len(labels)}"


def _espeak(text: str, voice: str) -> bytes:
    return subprocess.run(
        ["espeak-ng", "-v", voice, "--stdout", text], capture_output=True, check=True, timeout=60
    ).stdout


def _wav(samples: np.ndarray, rate: int) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def test_speech_detection_on_real_speech_and_noise(stub: pb_grpc.InferenceStub) -> None:
    speech = _espeak("The quick brown fox jumps over the lazy dog, twice.", "en-us")  # 22.05 kHz
    said = stub.DetectSpeech(pb.DetectSpeechRequest(audio=speech), timeout=60)
    assert said.model == "speech_cnn"
    assert said.windows and said.duration_s > 1.0
    rng = np.random.default_rng(3)
    noise = (0.1 * rng.standard_normal(16000 * 3)).astype(np.float32)
    quiet = stub.DetectSpeech(pb.DetectSpeechRequest(audio=_wav(noise, 16000)), timeout=60)
    assert said.speech_probability > quiet.speech_probability
    assert said.is_speech and not quiet.is_speech, (said, quiet)
    assert said.segments, said


def test_served_results_equal_in_process_onnx_runtime(
    kstub: kpb_grpc.GRPCInferenceServiceStub, model_repository: Path
) -> None:
    """ModelInfer with a raw tensor gives bit-for-bit the same logits as ONNX Runtime in-process."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((5, 1, 32, 32)).astype(np.float32)
    request = kpb.ModelInferRequest(model_name="lenet5_fashion")
    request.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
    request.raw_input_contents.append(x.tobytes())
    reply = kstub.ModelInfer(request, timeout=30)
    served = np.frombuffer(reply.raw_output_contents[0], np.float32).reshape(reply.outputs[0].shape)
    version = reply.model_version or "1"
    model_file = model_repository / "lenet5_fashion" / version / "model.onnx"
    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"input": x})[0]
    assert served.shape == expected.shape
    np.testing.assert_array_equal(served, expected)

"""Served MobileNetV2 against torchvision's reference pipeline on real photographs.

The photos ship inside packages the dev extra installs (scikit-image's data, matplotlib's
sample data): JPEGs and PNGs, colour and grey, 300 px to 1411 px. Each file's own bytes go to
ClassifyImage; the reference decodes the same file with PIL, runs torchvision's eval transforms
and the same ONNX model in-process. The top-5 classes must be equal, in order, and every
probability within 1e-3 (the preprocessing is bit-identical, so in practice they are equal).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import onnxruntime as ort
import pytest
import skimage
from PIL import Image

from service.client import ConvserveClient
from tests.integration.serverproc import ServerProcess
from tests.torchvision_reference import imagenet_eval_transform

SKIMAGE = Path(skimage.__file__).parent / "data"
MATPLOTLIB = Path(matplotlib.get_data_path()) / "sample_data"
PHOTOS = [
    *(SKIMAGE / n for n in (
        "astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png",
        "motorcycle_right.png", "rocket.jpg", "hubble_deep_field.jpg", "retina.jpg",
        "camera.png", "moon.png", "coins.png", "brick.png", "gravel.png",
    )),
    MATPLOTLIB / "grace_hopper.jpg",
]  # fmt: skip


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max())
    return e / e.sum()


@pytest.fixture(scope="module")
def reference(model_repository: Path) -> ort.InferenceSession:
    model_dir = model_repository / "mobilenet_v2"
    version = max(int(p.name) for p in model_dir.iterdir() if p.name.isdigit())
    path = model_dir / str(version) / "model.onnx"
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_photos_are_real_and_varied() -> None:
    assert len(PHOTOS) >= 10 and all(p.is_file() for p in PHOTOS)
    assert {p.suffix for p in PHOTOS} == {".png", ".jpg"}


@pytest.mark.parametrize("photo", PHOTOS, ids=lambda p: p.name)
def test_served_top5_equals_torchvision(
    server: ServerProcess, reference: ort.InferenceSession, photo: Path
) -> None:
    transform = imagenet_eval_transform()
    with Image.open(photo) as im:
        x = transform(im.convert("RGB")).numpy()[None]
    probs = _softmax(reference.run(None, {"input": x})[0][0])
    want = np.argsort(-probs, kind="stable")[:5]
    with ConvserveClient(server.grpc_target, timeout=60) as client:
        reply = client.classify(photo.read_bytes(), model="mobilenet_v2", top_k=5)
    got = [c.index for c in reply.classes]
    assert got == want.tolist(), (photo.name, got, want.tolist())
    delta = max(abs(c.score - probs[c.index]) for c in reply.classes)
    assert delta <= 1e-3, (photo.name, delta)

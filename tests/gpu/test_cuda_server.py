"""The real server on a real GPU with its default device (auto): the provider it reports is
CUDA, and ClassifyImage answers what the CPU pipeline computes."""

from __future__ import annotations

import io
import time
from pathlib import Path

import grpc
import numpy as np
from PIL import Image

from benchmarks.gpu import cuda, serving
from service._proto.convserve.v1 import inference_pb2 as pb
from service._proto.convserve.v1 import inference_pb2_grpc as pb_grpc
from service.preprocess.image import decode_image
from service.runtime import CUDA, OrtRuntime
from tests.gpu.conftest import requires_gpu

pytestmark = requires_gpu


def photo() -> bytes:
    """scikit-image's astronaut as a JPEG, with a random crop so each run sends a new image."""
    import skimage.data

    pixels = skimage.data.astronaut()
    rng = np.random.default_rng()
    top, left = (int(v) for v in rng.integers(0, 64, 2))
    buf = io.BytesIO()
    Image.fromarray(pixels[top : top + 448, left : left + 448]).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_served_on_cuda_with_the_cpu_pipelines_answer(mobilenet: Path, tmp_path: Path) -> None:
    image = photo()
    model = cuda.load(mobilenet)
    assert model.spec.image is not None
    cpu = OrtRuntime(model.path, model.spec, "cpu")
    logits = cpu.run({"input": decode_image(image, model.spec.image)[None]})["logits"][0]
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    with serving.server(
        mobilenet.parent, model.name, tmp_path, time.time() + 180, device="auto"
    ) as proc:
        assert serving.provider(proc, model.name) == CUDA
        with grpc.insecure_channel(str(proc.endpoint("grpc"))) as channel:
            reply = pb_grpc.InferenceStub(channel).ClassifyImage(
                pb.ClassifyImageRequest(image=image, model=model.name, top_k=5), timeout=60
            )
    assert reply.model == model.name and len(reply.classes) == 5
    assert reply.classes[0].index == int(np.argmax(probs))
    for c in reply.classes:
        assert abs(c.score - probs[c.index]) <= 5e-3, (c.index, c.score, probs[c.index])

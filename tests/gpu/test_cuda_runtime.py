"""convserve's ONNX Runtime session on a real GPU: the provider is really CUDA, IO binding gives the
CPU EP's results, every bucket is warmed before READY, FP16 ResNet-50 keeps parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.gpu import cuda
from service import loader
from service.metrics import Metrics
from service.model import ModelState, ServedModel
from service.runtime import CPU, CUDA, OrtRuntime
from service.settings import Settings
from tests.gpu.conftest import requires_gpu, staged_model

pytestmark = requires_gpu

# TF32 (ONNX Runtime's CUDA default on Ampere and later) keeps ~10 mantissa bits in convolutions:
# ~3e-4 relative per product, a little more through MobileNetV2's 50 layers.
TF32_REL = 5e-3


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "auto"])
def test_the_provider_in_use_is_really_cuda(mobilenet: Path, device: str) -> None:
    model = cuda.load(mobilenet)
    runtime = OrtRuntime(model.path, model.spec, device)
    assert runtime.provider == CUDA, f"{device}: ONNX Runtime runs on {runtime.provider}"
    assert runtime.on_gpu and runtime.use_io_binding


def test_io_binding_matches_the_cpu_ep(mobilenet: Path) -> None:
    model = cuda.load(mobilenet)
    gpu, cpu = OrtRuntime(model.path, model.spec, "cuda"), OrtRuntime(model.path, model.spec, "cpu")
    assert (gpu.provider, cpu.provider) == (CUDA, CPU)
    rng = np.random.default_rng()
    for batch in (1, 5):  # 5: not a bucket, the batch axis is really dynamic
        data = cuda.feed(model, batch, rng)
        bound = gpu.run(data)["logits"]
        ref = cpu.run(data)["logits"]
        assert bound.shape == (batch, 1000)
        assert cuda.rel_error(bound, ref) <= TF32_REL
        gpu.use_io_binding = False  # the plain path on the same GPU session
        plain = gpu.run(data)["logits"]
        gpu.use_io_binding = True
        assert cuda.rel_error(bound, plain) <= 1e-5


async def test_every_bucket_is_warmed_on_cuda_before_ready(
    mobilenet: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = mobilenet.parent
    settings = Settings(repository=repo, device="cuda")
    spec, versions = loader.read_model(repo, mobilenet.name, settings)
    model = ServedModel(
        mobilenet.name, versions[-1], spec, mobilenet / versions[-1], notify=lambda m: None
    )
    seen: list[tuple[int, ModelState, str]] = []
    real_run = OrtRuntime.run

    def watched(self: OrtRuntime, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        seen.append((next(iter(inputs.values())).shape[0], model.state, self.provider))
        return real_run(self, inputs)

    monkeypatch.setattr(OrtRuntime, "run", watched)
    await loader.start_version(model, settings, Metrics())
    try:
        assert model.state is ModelState.READY, model.reason
        assert spec.buckets == (1, 2, 4, 8, 16, 32, 64)
        assert [size for size, _, _ in seen] == list(spec.buckets)
        assert {state for _, state, _ in seen} == {ModelState.LOADING}
        assert {provider for _, _, provider in seen} == {CUDA}
    finally:
        await loader.retire(model, drain=False)


def test_fp16_resnet50_keeps_parity() -> None:
    """FP16 on CUDA against the same model on the CPU EP (same FP16 weights: the kernels' error)
    and against the FP32 export of the same seeded weights (FP16's own error).

    Random-weight ResNet-50 amplifies rounding far more than trained nets do: on the CPU EP its
    FP16 export is 3.3% (relative L2) from the FP32 one, at batch 1 and 7 alike. Two FP16
    implementations that round at different points (cuDNN's fused kernels, the CPU EP's casts
    around each node) differ by a fraction of that; a broken FP16 path (overflow, NaN, wrong
    kernels) lands near 100%."""
    half, full = cuda.load(staged_model("resnet50_fp16")), cuda.load(staged_model("resnet50"))
    gpu = cuda.runtime(half)
    cpu_half = OrtRuntime(half.path, half.spec, "cpu")
    cpu_full = OrtRuntime(full.path, full.spec, "cpu")
    rng = np.random.default_rng()
    for batch in (1, 7):
        data = cuda.feed(half, batch, rng)
        got = gpu.run(data)["logits"]
        assert got.dtype == np.float32 and got.shape == (batch, 1000)
        assert cuda.rel_error(got, cpu_half.run(data)["logits"]) <= 3e-2
        assert cuda.rel_error(got, cpu_full.run(data)["logits"]) <= 8e-2

"""tests/gpu: the CUDA tests, and the CPU-runnable parts of the GPU run.

CUDA tests carry `requires_gpu`: without an NVIDIA GPU (benchmarks/gpu/device.py: no device node,
none listed by nvidia-smi) they skip and say why. A GPU that is present but unusable (CUDA
libraries missing, provider falling back to CPU) fails them instead. Their models come from the
folder benchmarks/gpu/run.sh staged (CONVSERVE_GPU_MODELS): resnet50_fp16 and resnet50 (FP32, the
same seeded weights) and mobilenet_v2 (ImageNet weights), exported by benchmarks/gpu/prepare.sh.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from benchmarks.gpu.device import no_gpu_reason

NO_GPU = no_gpu_reason()
requires_gpu = pytest.mark.skipif(NO_GPU is not None, reason=NO_GPU or "a GPU is present")


def staged_model(name: str) -> Path:
    """The staged model folder `name`; skip when the run did not stage it."""
    folder = os.environ.get("CONVSERVE_GPU_MODELS")
    if not folder:
        pytest.skip("CONVSERVE_GPU_MODELS is not set (benchmarks/gpu/run.sh sets it)")
    path = Path(folder) / name
    if not (path / "config.pbtxt").is_file():
        pytest.skip(f"{name} is not among the staged models in {folder}")
    return path


def private_copy(model_dir: Path, into: Path) -> Path:
    """A copy of a model folder whose config a test may edit (the model file is linked)."""
    target = into / model_dir.name
    for path in model_dir.rglob("*"):
        dest = target / path.relative_to(model_dir)
        if path.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".onnx":
            os.link(path, dest)
        else:
            shutil.copyfile(path, dest)
    return target


@pytest.fixture
def mobilenet() -> Path:
    return staged_model("mobilenet_v2")

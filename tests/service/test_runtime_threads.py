"""service.runtime automatic intra-op threads: a model too small for ONNX Runtime's thread pool to
pay gets one thread after warm-up; explicit thread counts and bigger models are left alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service import runtime as runtime_module
from service.runtime import OrtRuntime
from tests.service import onnx_builders


@pytest.fixture(scope="module")
def linear_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return onnx_builders.write_model(
        tmp_path_factory.mktemp("threads"), "linear", kind="linear", max_batch_size=8
    )


def _runtime(model_dir: Path, threads: int) -> OrtRuntime:
    spec = onnx_builders.spec_of(model_dir)
    return OrtRuntime(model_dir / "1" / "model.onnx", spec, "cpu", intra_op_threads=threads)


def test_tiny_model_gets_one_thread_and_still_computes(
    linear_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A generous threshold: the mechanism is under test, not this machine's timing (a loaded CI
    # machine could push a microsecond run past the real one).
    monkeypatch.setattr(runtime_module, "SMALL_RUN_S", 10.0)
    runtime = _runtime(linear_dir, 0)
    x = np.random.default_rng(3).standard_normal((3, 1, 4, 4)).astype(np.float32)
    before = runtime.run({"input": x})["logits"]
    runtime.warmup(runtime.spec.buckets)
    assert runtime.intra_op_threads == 1
    np.testing.assert_allclose(runtime.run({"input": x})["logits"], before, rtol=1e-6, atol=1e-6)


def test_explicit_thread_count_is_kept(linear_dir: Path) -> None:
    runtime = _runtime(linear_dir, 2)
    runtime.warmup(runtime.spec.buckets)
    assert runtime.intra_op_threads == 2


def test_model_slower_than_the_threshold_keeps_the_default_pool(
    linear_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime_module, "SMALL_RUN_S", 0.0)  # every model counts as big
    runtime = _runtime(linear_dir, 0)
    runtime.warmup(runtime.spec.buckets)
    assert runtime.intra_op_threads == 0

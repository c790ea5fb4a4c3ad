"""service.runtime: provider reporting, config-vs-graph checks, run, IO binding, warm-up."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from service import devices
from service.errors import ModelLoadError, ModelNotReadyError
from service.runtime import CPU, CUDA, TENSORRT, OrtRuntime, choose_providers, parse_device
from tests.service import onnx_builders

HAS_GPU = False  # set by the first session that really lands on CUDA


@pytest.fixture
def linear_dir(tmp_path: Path) -> Path:
    return onnx_builders.write_model(tmp_path, "linear")


def reference(model_dir: Path, x: np.ndarray) -> np.ndarray:
    model = onnx.load(model_dir / "1" / "model.onnx")
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return x.reshape(len(x), -1) @ weights["weight"] + weights["bias"]


def test_cpu_runtime_runs_and_reports_cpu(linear_dir: Path) -> None:
    spec = onnx_builders.spec_of(linear_dir)
    runtime = OrtRuntime(linear_dir / "1" / "model.onnx", spec, "cpu")
    assert runtime.provider == CPU and runtime.requested_device == "cpu" and not runtime.on_gpu
    x = np.random.default_rng(3).standard_normal((5, 1, 4, 4)).astype(np.float32)
    out = runtime.run({"input": x})
    assert list(out) == ["logits"] and out["logits"].shape == (5, 3)
    np.testing.assert_allclose(out["logits"], reference(linear_dir, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", ["auto", "cuda", "cuda:0"])
def test_provider_actually_in_use_is_reported(
    linear_dir: Path, device: str, caplog: pytest.LogCaptureFixture
) -> None:
    spec = onnx_builders.spec_of(linear_dir)
    with caplog.at_level(logging.WARNING, logger="service.runtime"):
        runtime = OrtRuntime(linear_dir / "1" / "model.onnx", spec, device)
    if runtime.provider in (CUDA, TENSORRT):
        pytest.skip("a usable GPU is present: nothing falls back")
    # This machine has the CUDA build of ONNX Runtime but no GPU: it runs on CPU and says so.
    assert runtime.provider == CPU
    assert runtime.requested_device == device
    if device == "auto":
        # Without a usable GPU, auto does not ask ONNX Runtime for CUDA at all (service.devices):
        # nothing fell back, so nothing to warn about.
        assert devices.cuda_unavailable_reason() is not None
        assert "asked for CUDA" not in caplog.text
    elif CUDA in ort.get_available_providers():
        # An explicit CUDA device stays loud when it cannot be had.
        assert "asked for CUDA but ONNX Runtime runs it on CPUExecutionProvider" in caplog.text
    x = np.ones((2, 1, 4, 4), np.float32)
    assert runtime.run({"input": x})["logits"].shape == (2, 3)


def test_io_binding_path_gives_the_same_results(linear_dir: Path) -> None:
    spec = onnx_builders.spec_of(linear_dir)
    runtime = OrtRuntime(linear_dir / "1" / "model.onnx", spec, "cpu")
    x = np.random.default_rng(4).standard_normal((3, 1, 4, 4)).astype(np.float32)
    plain = runtime.run({"input": x})["logits"]
    runtime.use_io_binding = True  # the GPU path, exercised on CPU
    bound = runtime.run({"input": x[::1]})["logits"]
    np.testing.assert_array_equal(plain, bound)


def test_warmup_runs_every_bucket(linear_dir: Path) -> None:
    spec = onnx_builders.spec_of(linear_dir)
    assert spec.buckets == (2, 4, 8)
    runtime = OrtRuntime(linear_dir / "1" / "model.onnx", spec, "cpu")
    seen: list[tuple[int, ...]] = []
    real_run = runtime.run

    def spy(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        seen.append(inputs["input"].shape)
        assert np.any(inputs["input"] != 0)  # random data, not zeros
        return real_run(inputs)

    runtime.run = spy  # type: ignore[method-assign]
    runtime.warmup(spec.buckets)
    assert seen == [(2, 1, 4, 4), (4, 1, 4, 4), (8, 1, 4, 4)]


def test_warmup_of_a_model_without_batching(tmp_path: Path) -> None:
    model_dir = tmp_path / "fixed"
    (model_dir / "1").mkdir(parents=True)
    onnx.save(onnx_builders.fixed_batch(), model_dir / "1" / "model.onnx")
    (model_dir / "config.pbtxt").write_text(
        'max_batch_size: 0 input [ { name: "x" data_type: TYPE_FP32 dims: [ 1, 2 ] } ] '
        'output [ { name: "y" data_type: TYPE_FP32 dims: [ 1, 2 ] } ]'
    )
    spec = onnx_builders.spec_of(model_dir)
    runtime = OrtRuntime(model_dir / "1" / "model.onnx", spec, "cpu")
    runtime.warmup(spec.buckets)
    x = np.array([[1.5, -2.0]], np.float32)
    np.testing.assert_array_equal(runtime.run({"x": x})["y"], x)


def test_warmup_failure_is_a_load_error(tmp_path: Path) -> None:
    model_dir = onnx_builders.write_model(tmp_path, "echo", kind="echo")
    spec = onnx_builders.spec_of(model_dir)
    runtime = OrtRuntime(model_dir / "1" / "model.onnx", spec, "cpu")
    runtime.warmup(spec.buckets)  # random data stays within the echo model's Gather table
    x = np.array([[7.0, 3.0], [8.0, onnx_builders.FAIL]], np.float32)
    with pytest.raises(Exception, match="out of"):
        runtime.run({"x": x})

    def broken(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise RuntimeError("CUDA out of memory\nlong ORT text")

    runtime.run = broken  # type: ignore[method-assign]
    with pytest.raises(
        ModelLoadError, match=r"warm-up with batch size 1 failed: CUDA out of memory$"
    ):
        runtime.warmup(spec.buckets)


def test_close_then_run(linear_dir: Path) -> None:
    runtime = OrtRuntime(linear_dir / "1" / "model.onnx", onnx_builders.spec_of(linear_dir), "cpu")
    runtime.close()
    with pytest.raises(ModelNotReadyError, match="closed"):
        runtime.run({"input": np.ones((1, 1, 4, 4), np.float32)})


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        ('name: "input"', 'name: "image"', "input 'image' is not in the model"),
        ('name: "input" data_type: TYPE_FP32', 'name: "input" data_type: TYPE_FP64',
         "FP32 in the model, FP64"),
        ("dims: [ 1, 4, 4 ]", "dims: [ 1, 4, 5 ]", "has shape"),
        ("dims: [ 1, 4, 4 ]", "dims: [ 16 ]", "has shape"),
        ("dims: [ 3 ]", "dims: [ -1 ]", None),  # -1 in config accepts the fixed 3 of the graph
    ],
)  # fmt: skip
def test_config_must_agree_with_the_graph(
    tmp_path: Path, old: str, new: str, needle: str | None
) -> None:
    model_dir = onnx_builders.write_model(tmp_path, "linear")
    config = model_dir / "config.pbtxt"
    text = config.read_text()
    assert old in text
    config.write_text(text.replace(old, new).replace('label_filename: "labels.txt"', ""))
    spec = onnx_builders.spec_of(model_dir)
    if needle is None:
        OrtRuntime(model_dir / "1" / "model.onnx", spec, "cpu")
        return
    with pytest.raises(ModelLoadError, match=needle):
        OrtRuntime(model_dir / "1" / "model.onnx", spec, "cpu")


def test_fixed_batch_dimension_needs_max_batch_size_zero(tmp_path: Path) -> None:
    model_dir = tmp_path / "fixed"
    (model_dir / "1").mkdir(parents=True)
    onnx.save(onnx_builders.fixed_batch(), model_dir / "1" / "model.onnx")
    (model_dir / "config.pbtxt").write_text(
        'max_batch_size: 4 input [ { name: "x" data_type: TYPE_FP32 dims: [ 2 ] } ] '
        'output [ { name: "y" data_type: TYPE_FP32 dims: [ 2 ] } ]'
    )
    with pytest.raises(ModelLoadError, match="fixed batch dimension 1"):
        OrtRuntime(model_dir / "1" / "model.onnx", onnx_builders.spec_of(model_dir), "cpu")


def test_corrupt_model_file(linear_dir: Path) -> None:
    path = linear_dir / "1" / "model.onnx"
    path.write_bytes(np.random.default_rng(5).bytes(1000))
    with pytest.raises(ModelLoadError, match="ONNX Runtime cannot load it"):
        OrtRuntime(path, onnx_builders.spec_of(linear_dir), "cpu")


def test_provider_choice(linear_dir: Path) -> None:
    spec = onnx_builders.spec_of(linear_dir)
    assert choose_providers(spec, "cpu") == [CPU]
    available = ort.get_available_providers()
    if CUDA not in available:
        assert choose_providers(spec, "auto") == [CPU]
        return
    providers = choose_providers(spec, "cuda:1")
    assert providers[-1] == CPU
    name, options = providers[0]
    assert name == CUDA and options["device_id"] == "1"
    assert options["cudnn_conv_algo_search"] == "HEURISTIC"
    assert options["arena_extend_strategy"] == "kSameAsRequested"
    assert options["do_copy_in_default_stream"] == "1"


def test_tensorrt_accelerator_from_config(linear_dir: Path) -> None:
    if TENSORRT not in ort.get_available_providers():
        pytest.skip("this ONNX Runtime has no TensorRT EP")
    config = linear_dir / "config.pbtxt"
    config.write_text(
        config.read_text()
        + "optimization { execution_accelerators { gpu_execution_accelerator : [ { name : "
        '"tensorrt" parameters { key: "precision_mode" value: "FP16" } } ] } }'
    )
    spec = onnx_builders.spec_of(linear_dir)
    providers = choose_providers(spec, "cuda:0")
    assert [p[0] if isinstance(p, tuple) else p for p in providers] == [TENSORRT, CUDA, CPU]
    trt_options = providers[0][1]  # type: ignore[index]
    assert trt_options["trt_fp16_enable"] is True and trt_options["device_id"] == 0
    assert choose_providers(spec, "cpu") == [CPU]


def test_parse_device() -> None:
    assert parse_device("cuda:3") == ("cuda", 3)
    assert parse_device("cuda") == ("cuda", 0)
    assert parse_device("cpu") == ("cpu", 0)


def test_auto_without_a_usable_gpu_asks_for_cpu_only(linear_dir: Path) -> None:
    if devices.cuda_unavailable_reason() is None:
        pytest.skip("CUDA can work here")
    assert choose_providers(onnx_builders.spec_of(linear_dir), "auto") == [CPU]


def test_cudnn_conv_algo_search_from_config(linear_dir: Path) -> None:
    if CUDA not in ort.get_available_providers():
        pytest.skip("this ONNX Runtime has no CUDA EP")
    config = linear_dir / "config.pbtxt"
    config.write_text(
        config.read_text()
        + 'parameters { key: "cudnn_conv_algo_search" value: { string_value: "exhaustive" } }\n'
    )
    providers = choose_providers(onnx_builders.spec_of(linear_dir), "cuda:0")
    assert providers[0] == (CUDA, {**providers[0][1], "cudnn_conv_algo_search": "EXHAUSTIVE"})  # type: ignore[index]

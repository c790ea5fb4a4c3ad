"""service.config: config.pbtxt parsing, unknown Triton fields, validation, auto-complete."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest

from service.autocomplete import autocomplete_config
from service.config import ModelConfig, load_spec, parse_config
from service.errors import ModelLoadError
from service.spec import TensorSpec
from tests.service import onnx_builders

# Verbatim from docs/model-repository.md.
DOCUMENTED = """
name: "lenet5_fashion"
platform: "onnxruntime_onnx"
max_batch_size: 64
input [ { name: "input" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [ 1, 32, 32 ] } ]
output [ { name: "logits" data_type: TYPE_FP32 dims: [ 10 ] label_filename: "labels.txt" } ]
dynamic_batching {
  preferred_batch_size: [ 8, 16, 32, 64 ]
  max_queue_delay_microseconds: 1000
  default_queue_policy { max_queue_size: 1024 }
}
instance_group [ { count: 1 kind: KIND_AUTO } ]
version_policy: { latest: { num_versions: 1 } }
parameters { key: "task" value: { string_value: "image_classification" } }
parameters { key: "image_size" value: { string_value: "32" } }
parameters { key: "color" value: { string_value: "grayscale" } }
parameters { key: "mean" value: { string_value: "0.2860" } }
parameters { key: "std" value: { string_value: "0.3530" } }
parameters { key: "output_activation" value: { string_value: "softmax" } }
"""
FASHION = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip


def write(tmp_path: Path, text: str, name: str = "lenet5_fashion", labels: int = 10) -> Path:
    model_dir = tmp_path / name
    model_dir.mkdir(exist_ok=True)
    (model_dir / "config.pbtxt").write_text(text)
    (model_dir / "labels.txt").write_text("\n".join(FASHION[:labels]) + "\n\n")
    return model_dir


def spec_from(model_dir: Path, default_queue: int = 512):
    config = parse_config(model_dir / "config.pbtxt", default_max_queue_size=default_queue)
    return load_spec(model_dir, config, default_max_queue_size=default_queue)


def test_documented_config(tmp_path: Path) -> None:
    spec = spec_from(write(tmp_path, DOCUMENTED))
    assert spec.name == "lenet5_fashion"
    assert spec.task == "image_classification"
    assert spec.inputs == (TensorSpec("input", "FP32", (1, 32, 32), np.dtype(np.float32)),)
    assert spec.outputs[0].name == "logits" and spec.outputs[0].dims == (10,)
    assert spec.max_batch_size == 64 and spec.batching
    assert spec.max_queue_delay_s == pytest.approx(0.001)
    assert spec.max_queue_size == 1024
    assert spec.buckets == (8, 16, 32, 64)
    assert spec.instances == 1 and spec.instance_devices == ("auto",)
    assert spec.labels == tuple(FASHION)
    assert spec.output_activation == "softmax"
    assert spec.parameters["image_size"] == "32" and spec.parameters["color"] == "grayscale"
    assert spec.model_filename == "model.onnx"
    assert spec.config.name == "lenet5_fashion"


def test_unknown_triton_fields_are_skipped_with_one_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = (
        DOCUMENTED.replace('platform: "onnxruntime_onnx"', 'backend: "onnxruntime"')
        .replace(
            "dynamic_batching",
            "sequence_batching { max_sequence_idle_microseconds: 5 }\ndynamic_batching",
        )
        .replace(
            "instance_group [ { count: 1 kind: KIND_AUTO } ]",
            "instance_group [ { count: 1 kind: KIND_AUTO secondary_devices [ { kind: KIND_NVDLA "
            "device_id: 0 } ] } ]",
        )
        + """
model_warmup [ {
  name: "zeros" batch_size: 1
  inputs { key: "input" value: { data_type: TYPE_FP32 dims: [ 1, 32, 32 ] zero_data: true } }
} ]
model_transaction_policy { decoupled: false }
"""
    )
    with caplog.at_level(logging.WARNING, logger="service.config"):
        spec = spec_from(write(tmp_path, text))
    assert spec.config.backend == "onnxruntime"
    assert spec.max_batch_size == 64 and spec.instances == 1  # the known fields still parsed
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    line = warnings[0].getMessage()
    for skipped in (
        "ModelConfig.model_warmup",
        "ModelConfig.sequence_batching",
        "ModelConfig.model_transaction_policy",
        "ModelInstanceGroup.secondary_devices",
    ):
        assert skipped in line
    # Fields nested inside a skipped message are not separate findings.
    assert "zero_data" not in line and "batch_size" not in line
    assert "config.pbtxt" in line


def test_known_config_logs_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="service.config"):
        spec_from(write(tmp_path, DOCUMENTED))
    assert not caplog.records


def test_empty_name_is_set_from_the_directory(tmp_path: Path) -> None:
    spec = spec_from(write(tmp_path, DOCUMENTED.replace('name: "lenet5_fashion"', "")))
    assert spec.name == "lenet5_fashion"


def test_name_must_match_the_directory(tmp_path: Path) -> None:
    model_dir = write(tmp_path, DOCUMENTED, name="other")
    with pytest.raises(ModelLoadError, match="does not match its directory 'other'"):
        parse_config(model_dir / "config.pbtxt", default_max_queue_size=1)


def test_syntax_error_names_the_file(tmp_path: Path) -> None:
    model_dir = write(tmp_path, DOCUMENTED + "\nmax_batch_size: [[[\n")
    with pytest.raises(ModelLoadError, match=r"config\.pbtxt: not a valid ModelConfig"):
        parse_config(model_dir / "config.pbtxt", default_max_queue_size=1)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="cannot read"):
        parse_config(tmp_path / "nope" / "config.pbtxt", default_max_queue_size=1)


def test_queue_size_defaults_when_unset(tmp_path: Path) -> None:
    text = DOCUMENTED.replace("default_queue_policy { max_queue_size: 1024 }", "")
    spec = spec_from(write(tmp_path, text), default_queue=77)
    assert spec.max_queue_size == 77
    assert spec.config.dynamic_batching.default_queue_policy.max_queue_size == 77


def test_without_dynamic_batching(tmp_path: Path) -> None:
    start, end = DOCUMENTED.index("dynamic_batching"), DOCUMENTED.index("instance_group")
    spec = spec_from(write(tmp_path, DOCUMENTED[:start] + DOCUMENTED[end:]), default_queue=9)
    assert spec.max_queue_delay_s == 0 and spec.max_queue_size == 9
    assert spec.buckets == (1, 2, 4, 8, 16, 32, 64)  # powers of two: a lone request stays small
    assert not spec.config.HasField("dynamic_batching")


@pytest.mark.parametrize(
    ("override", "buckets"), [("1, 3", (1, 3, 64)), ("none", ()), ("64", (64,))]
)
def test_batch_buckets_parameter(tmp_path: Path, override: str, buckets: tuple[int, ...]) -> None:
    text = (
        DOCUMENTED
        + f'parameters {{ key: "batch_buckets" value: {{ string_value: "{override}" }} }}'
    )
    assert spec_from(write(tmp_path, text)).buckets == buckets


def test_no_batching_model(tmp_path: Path) -> None:
    text = DOCUMENTED.replace("max_batch_size: 64", "max_batch_size: 0").replace(
        "preferred_batch_size: [ 8, 16, 32, 64 ]", ""
    )
    spec = spec_from(write(tmp_path, text))
    assert not spec.batching and spec.buckets == ()


def test_instance_groups(tmp_path: Path) -> None:
    text = DOCUMENTED.replace(
        "instance_group [ { count: 1 kind: KIND_AUTO } ]",
        "instance_group [ { count: 2 kind: KIND_CPU }, "
        "{ count: 2 kind: KIND_GPU gpus: [ 0, 1 ] } ]",
    )
    spec = spec_from(write(tmp_path, text))
    assert spec.instance_devices == ("cpu", "cpu", "cuda:0", "cuda:0", "cuda:1", "cuda:1")
    assert spec.instances == 6


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        ('platform: "onnxruntime_onnx"', 'platform: "tensorflow_savedmodel"', "not ONNX Runtime"),
        ('platform: "onnxruntime_onnx"', 'backend: "python"', "not ONNX Runtime"),
        ("max_batch_size: 64", "max_batch_size: -1", "max_batch_size"),
        ("TYPE_FP32 format", "TYPE_BF16 format", "TYPE_BF16 is not supported"),
        ("TYPE_FP32 format", "TYPE_INVALID format", "not supported"),
        ("dims: [ 1, 32, 32 ]", "dims: [ 1, 0, 32 ]", "positive or -1"),
        ("dims: [ 1, 32, 32 ]", "dims: [ 1, 32, 32 ] reshape { shape: [ 1024 ] }", "reshape"),
        ('string_value: "image_classification"', 'string_value: "detection"', "task"),
        ('string_value: "softmax"', 'string_value: "relu"', "output_activation"),
        ('label_filename: "labels.txt"', 'label_filename: "missing.txt"', "missing.txt"),
        ('label_filename: "labels.txt"', 'label_filename: "../labels.txt"', "outside"),
        ("dims: [ 10 ]", "dims: [ 9 ]", "10 labels but output 'logits' has 9 classes"),
        ('name: "logits"', 'name: "input"', "unique"),
        ("[ 8, 16, 32, 64 ]", "[ 8, 128 ]", r"\[128\] are outside"),
        ("output [", "#", "needs at least one input and one output"),
    ],
)
def test_invalid_configs_raise_model_load_error(
    tmp_path: Path, old: str, new: str, needle: str
) -> None:
    assert old in DOCUMENTED
    text = DOCUMENTED.replace(old, new, 1)
    with pytest.raises(ModelLoadError, match=needle) as info:
        spec_from(write(tmp_path, text))
    assert "config.pbtxt" in str(info.value)


def test_bad_batch_buckets(tmp_path: Path) -> None:
    text = DOCUMENTED + 'parameters { key: "batch_buckets" value: { string_value: "8,x" } }'
    with pytest.raises(ModelLoadError, match="batch_buckets"):
        spec_from(write(tmp_path, text))


@pytest.mark.parametrize(
    ("dims", "task"), [("[ 3, 8, 8 ]", "image_classification"), ("[ 16000 ]", "speech_detection"),
                       ("[ 4, 4 ]", "generic")],
)  # fmt: skip
def test_task_is_inferred_from_the_input_rank(tmp_path: Path, dims: str, task: str) -> None:
    text = DOCUMENTED.replace("dims: [ 1, 32, 32 ]", f"dims: {dims}").replace(
        'parameters { key: "task" value: { string_value: "image_classification" } }', ""
    )
    assert spec_from(write(tmp_path, text)).task == task


def test_tensor_spec_matches() -> None:
    spec = TensorSpec("x", "FP32", (-1, 3), np.dtype(np.float32))
    assert spec.matches((5, 3)) and spec.matches((1, 3))
    assert not spec.matches((5, 4)) and not spec.matches((3,)) and not spec.matches((1, 1, 3))


def test_autocomplete_dynamic_batch(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    onnx.save(onnx_builders.linear(), path)
    config = autocomplete_config(path, "auto")
    assert isinstance(config, ModelConfig)
    assert config.name == "auto" and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 32 and config.HasField("dynamic_batching")
    assert list(config.input[0].dims) == [1, 4, 4]
    assert list(config.output[0].dims) == [3]
    spec = load_spec(tmp_path, config, default_max_queue_size=5)
    assert spec.max_queue_size == 5 and spec.buckets == (1, 2, 4, 8, 16, 32)


def test_autocomplete_fixed_batch(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    onnx.save(onnx_builders.fixed_batch(), path)
    config = autocomplete_config(path, "fixed")
    assert config.max_batch_size == 0 and list(config.input[0].dims) == [1, 2]


def test_autocomplete_corrupt_model(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(np.random.default_rng(1).bytes(256))
    with pytest.raises(ModelLoadError, match="cannot read ONNX model"):
        autocomplete_config(path, "bad")


def test_fields_unknown_to_triton_too_are_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Parsed with protobuf's public text_format API only (service/config_text.py): a field of a
    # newer Triton, or a typo, is skipped and named; lists of messages without a colon too.
    extra = '\nresponse_cache_v2: 1\nfuture_list [ { a: "[ x" b: [ -1, 2 ] } ]\n'
    with caplog.at_level(logging.WARNING, logger="service.config"):
        spec = spec_from(write(tmp_path, DOCUMENTED + extra))
    assert spec.max_batch_size == 64
    assert "ModelConfig.response_cache_v2" in caplog.text
    assert "ModelConfig.future_list" in caplog.text

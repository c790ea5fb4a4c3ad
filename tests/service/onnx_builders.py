"""Tiny ONNX models and model directories for the service tests (built with onnx.helper, no torch).

- `linear`: input [N,1,4,4] → Flatten → MatMul → Add → logits [N,3] (random weights).
- `speech`: audio [N,W] → mean |x| → logits [N,2] = (2 - 40·m, 40·m - 2): loud windows are speech.
- `echo`: x [N,2] → y [N,2] where y[:,0] = x[:,0] (an id echoed back) and y[:,1] = table[x[:,1]]
  via Gather: column 1 must be in [-10, 9] (random warm-up data always is), a value such as 100
  makes ONNX Runtime fail the whole run ("indices element out of data bounds"). So one model
  both echoes ids and fails on demand.

Their configs name Triton's waiting rule (`batch_policy: delay`): the tests built on them make
requests queue (deadlines, full queues, batches that form) by holding a batch for its delay.
The default rule (eager) is tested in test_batch_policy.py and end to end on exported models.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from service.config import read_spec
from service.spec import ModelSpec

OPSET = 17
ECHO_TABLE = np.arange(10, dtype=np.float32) * 10 + 5  # y[:,1] = ECHO_TABLE[int(x[:,1])]
FAIL = 100.0  # put this in column 1 to make the echo model fail


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # readable by every ONNX Runtime we support
    onnx.checker.check_model(model)
    return model


def linear(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((16, 3)).astype(np.float32)
    bias = rng.standard_normal(3).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["input"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "weight"], ["mm"]),
            helper.make_node("Add", ["mm", "bias"], ["logits"]),
        ],
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(weight, "weight"), numpy_helper.from_array(bias, "bias")],
    )
    return _model(graph)


def echo(width: int = 2) -> onnx.ModelProto:
    assert width == 2
    graph = helper.make_graph(
        [
            helper.make_node("Split", ["x", "split"], ["ids", "sel"], axis=1),
            helper.make_node("Cast", ["sel"], ["index"], to=TensorProto.INT64),
            helper.make_node("Gather", ["table", "index"], ["picked"], axis=0),
            helper.make_node("Concat", ["ids", "picked"], ["y"], axis=1),
        ],
        "echo",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        [
            numpy_helper.from_array(np.array([1, 1], dtype=np.int64), "split"),
            numpy_helper.from_array(ECHO_TABLE, "table"),
        ],
    )
    return _model(graph)


def speech(window: int = 1600) -> onnx.ModelProto:
    scale = np.array([[-40.0, 40.0]], dtype=np.float32)
    bias = np.array([2.0, -2.0], dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Abs", ["audio"], ["magnitude"]),
            helper.make_node("ReduceMean", ["magnitude"], ["level"], axes=[1], keepdims=1),
            helper.make_node("Mul", ["level", "scale"], ["scaled"]),
            helper.make_node("Add", ["scaled", "bias"], ["logits"]),
        ],
        "speech",
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["N", window])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(scale, "scale"), numpy_helper.from_array(bias, "bias")],
    )
    return _model(graph)


def fixed_batch() -> onnx.ModelProto:
    """x [1,2] → y [1,2] (Identity): a model without a dynamic batch axis."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
    )
    return _model(graph)


LINEAR_CONFIG = """
name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: {max_batch_size}
input [ {{ name: "input" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [ 1, 4, 4 ] }} ]
output [ {{ name: "logits" data_type: TYPE_FP32 dims: [ 3 ] label_filename: "labels.txt" }} ]
dynamic_batching {{
  preferred_batch_size: [ 2, 4 ]
  max_queue_delay_microseconds: {delay_us}
  default_queue_policy {{ max_queue_size: {queue} }}
}}
instance_group [ {{ count: {instances} kind: {instance_kind} }} ]
parameters {{ key: "batch_policy" value: {{ string_value: "delay" }} }}
parameters {{ key: "task" value: {{ string_value: "image_classification" }} }}
"""

ECHO_CONFIG = """
name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: {max_batch_size}
input [ {{ name: "x" data_type: TYPE_FP32 dims: [ 2 ] }} ]
output [ {{ name: "y" data_type: TYPE_FP32 dims: [ 2 ] }} ]
dynamic_batching {{
  max_queue_delay_microseconds: {delay_us}
  default_queue_policy {{ max_queue_size: {queue} }}
}}
instance_group [ {{ count: {instances} kind: {instance_kind} }} ]
parameters {{ key: "batch_policy" value: {{ string_value: "delay" }} }}
parameters {{ key: "task" value: {{ string_value: "generic" }} }}
"""

SPEECH_CONFIG = """
name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: {max_batch_size}
input [ {{ name: "audio" data_type: TYPE_FP32 dims: [ 1600 ] }} ]
output [ {{ name: "logits" data_type: TYPE_FP32 dims: [ 2 ] label_filename: "labels.txt" }} ]
dynamic_batching {{
  max_queue_delay_microseconds: {delay_us}
  default_queue_policy {{ max_queue_size: {queue} }}
}}
instance_group [ {{ count: {instances} kind: {instance_kind} }} ]
parameters {{ key: "batch_policy" value: {{ string_value: "delay" }} }}
parameters {{ key: "task" value: {{ string_value: "speech_detection" }} }}
parameters {{ key: "sample_rate" value: {{ string_value: "16000" }} }}
parameters {{ key: "window_samples" value: {{ string_value: "1600" }} }}
parameters {{ key: "hop_samples" value: {{ string_value: "800" }} }}
"""
_KINDS = {  # kind -> (config template, builder, labels)
    "linear": (LINEAR_CONFIG, linear, "cat\ndog\nbird\n"),
    "echo": (ECHO_CONFIG, echo, "cat\ndog\nbird\n"),
    "speech": (SPEECH_CONFIG, speech, "no_speech\nspeech\n"),
}


def write_model(
    root: Path,
    name: str,
    kind: str = "linear",
    *,
    versions: tuple[int, ...] = (1,),
    max_batch_size: int = 8,
    delay_us: int = 2000,
    queue: int = 64,
    instances: int = 1,
    instance_kind: str = "KIND_CPU",
    extra_config: str = "",
) -> Path:
    """Write <root>/<name>/{config.pbtxt, labels.txt, <v>/model.onnx}; return the model dir."""
    model_dir = root / name
    model_dir.mkdir(parents=True, exist_ok=True)
    template, build, labels = _KINDS[kind]
    fields = dict(
        name=name, max_batch_size=max_batch_size, delay_us=delay_us, queue=queue,
        instances=instances, instance_kind=instance_kind,
    )  # fmt: skip
    (model_dir / "config.pbtxt").write_text(template.format(**fields) + extra_config)
    (model_dir / "labels.txt").write_text(labels)
    model = build()
    for version in versions:
        (model_dir / str(version)).mkdir(exist_ok=True)
        onnx.save(model, model_dir / str(version) / "model.onnx")
    return model_dir


def spec_of(model_dir: Path, default_max_queue_size: int = 1024) -> ModelSpec:
    return read_spec(model_dir, default_max_queue_size=default_max_queue_size)

"""config.pbtxt: parsing Triton's ModelConfig text and turning it into a validated ModelSpec.

`parse_config` reads the file (fields of Triton's schema that our subset lacks are skipped with
one warning line); `load_spec` checks what convserve needs and derives batching, labels and task
settings; `autocomplete_config` builds a config from model.onnx when config.pbtxt is missing,
as Triton's auto-complete does. Every problem is a ModelLoadError naming the file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from google.protobuf import text_format

from service._proto.inference import model_config_pb2
from service.errors import ModelLoadError

logger = logging.getLogger(__name__)

ModelConfig = model_config_pb2.ModelConfig
DataType = model_config_pb2.DataType

CONFIG_FILENAME = "config.pbtxt"
DEFAULT_MODEL_FILENAME = "model.onnx"
# Triton's auto-complete uses this when the ONNX batch dimension is dynamic.
AUTOCOMPLETE_MAX_BATCH_SIZE = 32
TASKS = ("image_classification", "speech_detection", "generic")
ACTIVATIONS = ("softmax", "sigmoid", "none")
# How an idle instance treats max_queue_delay (parameter `batch_policy`; see service/batcher.py).
BATCH_POLICIES = ("delay", "eager")

# Triton TYPE_* → (KServe v2 datatype name, numpy dtype). BF16 has no numpy dtype: not servable.
_DATATYPES: dict[int, tuple[str, np.dtype[Any]]] = {
    DataType.TYPE_BOOL: ("BOOL", np.dtype(np.bool_)),
    DataType.TYPE_UINT8: ("UINT8", np.dtype(np.uint8)),
    DataType.TYPE_UINT16: ("UINT16", np.dtype(np.uint16)),
    DataType.TYPE_UINT32: ("UINT32", np.dtype(np.uint32)),
    DataType.TYPE_UINT64: ("UINT64", np.dtype(np.uint64)),
    DataType.TYPE_INT8: ("INT8", np.dtype(np.int8)),
    DataType.TYPE_INT16: ("INT16", np.dtype(np.int16)),
    DataType.TYPE_INT32: ("INT32", np.dtype(np.int32)),
    DataType.TYPE_INT64: ("INT64", np.dtype(np.int64)),
    DataType.TYPE_FP16: ("FP16", np.dtype(np.float16)),
    DataType.TYPE_FP32: ("FP32", np.dtype(np.float32)),
    DataType.TYPE_FP64: ("FP64", np.dtype(np.float64)),
    DataType.TYPE_STRING: ("BYTES", np.dtype(np.object_)),
}
# ONNX Runtime's type strings (NodeArg.type) → Triton TYPE_*; used by auto-complete.
_ORT_TYPES: dict[str, int] = {
    "tensor(bool)": DataType.TYPE_BOOL,
    "tensor(uint8)": DataType.TYPE_UINT8,
    "tensor(uint16)": DataType.TYPE_UINT16,
    "tensor(uint32)": DataType.TYPE_UINT32,
    "tensor(uint64)": DataType.TYPE_UINT64,
    "tensor(int8)": DataType.TYPE_INT8,
    "tensor(int16)": DataType.TYPE_INT16,
    "tensor(int32)": DataType.TYPE_INT32,
    "tensor(int64)": DataType.TYPE_INT64,
    "tensor(float16)": DataType.TYPE_FP16,
    "tensor(float)": DataType.TYPE_FP32,
    "tensor(double)": DataType.TYPE_FP64,
    "tensor(string)": DataType.TYPE_STRING,
}


_Fail = Callable[[str], ModelLoadError]


@dataclass(frozen=True)
class TensorSpec:
    """One input or output; `dims` exclude the batch axis and may hold -1 (any size)."""

    name: str
    datatype: str
    dims: tuple[int, ...]
    np_dtype: np.dtype[Any]

    def matches(self, shape: tuple[int, ...]) -> bool:
        """Whether a shape without the batch axis fits these dims."""
        return len(shape) == len(self.dims) and all(
            d == -1 or d == s for d, s in zip(self.dims, shape, strict=True)
        )


@dataclass(frozen=True)
class ModelSpec:
    """Everything convserve derived from one model's config.pbtxt (shared by all its versions)."""

    name: str
    config: model_config_pb2.ModelConfig = field(repr=False)
    task: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int
    max_queue_delay_s: float
    max_queue_size: int
    buckets: tuple[int, ...]
    instances: int
    parameters: Mapping[str, str]
    labels: tuple[str, ...] | None
    output_activation: str
    instance_devices: tuple[str, ...] = ()
    """Per instance: "auto" (use the server's --device), "cpu" (KIND_CPU) or "cuda:N" (gpus)."""
    model_filename: str = DEFAULT_MODEL_FILENAME
    batch_policy: str = "delay"
    """"delay" (Triton's rule): a batch waits for max_batch_size rows or max_queue_delay;
    "eager": an idle instance takes what is queued at once (service/batcher.py)."""

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 0


# Private protobuf API, but the only hook that names skipped fields; `_parse_text` falls back.
class _RecordingParser(text_format._Parser):
    """Text-format parser that records the names of the unknown fields it skips.

    Only the outermost unknown field is recorded: the fields inside a skipped message pass
    through the same hook but are not separate findings.
    """

    def __init__(self) -> None:
        super().__init__(allow_unknown_field=True)
        self.skipped: list[str] = []
        self._depth = 0

    def _SkipFieldContents(  # noqa: N802
        self, tokenizer: Any, field_name: str, immediate_message_type: Any
    ) -> None:
        if self._depth == 0:
            self.skipped.append(f"{immediate_message_type}.{field_name}")
        if tokenizer.LookingAt("["):
            # `model_warmup [ { ... } ]`: Triton's list-of-messages form without a colon, which
            # protobuf's skipper does not expect (it accepts the form for known fields only).
            self._SkipRepeatedFieldValue(tokenizer, immediate_message_type)  # type: ignore[attr-defined]
        else:
            super()._SkipFieldContents(  # type: ignore[misc]
                tokenizer, field_name, immediate_message_type
            )

    def _SkipFieldMessage(self, tokenizer: Any, immediate_message_type: Any) -> None:  # noqa: N802
        self._depth += 1
        try:
            super()._SkipFieldMessage(tokenizer, immediate_message_type)  # type: ignore[misc]
        finally:
            self._depth -= 1


def _parse_text(text: str, config: ModelConfig) -> list[str]:
    """Parse into `config`; return the unknown fields skipped (qualified names)."""
    try:
        parser = _RecordingParser()
        parser.ParseLines(text.split("\n"), config)
        return parser.skipped
    except (AttributeError, TypeError):
        # protobuf changed its private parser: fall back to naming only the first unknown field.
        config.Clear()
        try:
            text_format.Parse(text, config)
            return []
        except text_format.ParseError as exc:
            config.Clear()
            text_format.Parse(text, config, allow_unknown_field=True)
            return [f"{exc} (and possibly more)"]


def datatype_name(dtype: np.dtype[Any]) -> str:
    """KServe datatype name of a numpy dtype (its numpy name when it has none), for messages."""
    for name, np_dtype in _DATATYPES.values():
        if np_dtype == dtype:
            return name
    return str(dtype)


def parse_config(path: Path, *, default_max_queue_size: int) -> ModelConfig:
    """Read `<model>/config.pbtxt`; its `name` must be empty (then set) or match the directory."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path}: cannot read: {exc}") from None
    config = ModelConfig()
    try:
        skipped = _parse_text(text, config)
    except text_format.ParseError as exc:
        raise ModelLoadError(f"{path}: not a valid ModelConfig: {exc}") from None
    if skipped:
        logger.warning(
            "%s: skipping fields convserve does not use: %s", path, ", ".join(sorted(set(skipped)))
        )
    directory = path.parent.name
    if not config.name:
        config.name = directory
    elif config.name != directory:
        raise ModelLoadError(
            f"{path}: name {config.name!r} does not match its directory {directory!r}"
        )
    if config.HasField("dynamic_batching"):
        policy = config.dynamic_batching.default_queue_policy
        # Triton reads 0 as "unbounded"; we never run unbounded, so show the bound we enforce.
        if policy.max_queue_size == 0:
            policy.max_queue_size = default_max_queue_size
    return config


def autocomplete_config(model_file: Path, name: str) -> ModelConfig:
    """Derive a config from the ONNX graph when config.pbtxt is missing (Triton auto-complete).

    A dynamic first dimension on every input and output means the model batches
    (max_batch_size 32, dynamic batching on); otherwise max_batch_size is 0.
    """
    import onnxruntime as ort  # heavy import, only needed on this path

    try:
        session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises several unrelated types for a bad file
        raise ModelLoadError(f"{model_file}: cannot read ONNX model: {_first_line(exc)}") from None
    args = [*session.get_inputs(), *session.get_outputs()]
    batching = all(a.shape and not isinstance(a.shape[0], int) for a in args)
    config = ModelConfig(name=name, platform="onnxruntime_onnx")
    config.max_batch_size = AUTOCOMPLETE_MAX_BATCH_SIZE if batching else 0
    for arg, is_input in [(a, True) for a in session.get_inputs()] + [
        (a, False) for a in session.get_outputs()
    ]:
        if arg.type not in _ORT_TYPES:
            raise ModelLoadError(f"{model_file}: {arg.name} has unsupported type {arg.type}")
        shape = arg.shape[1:] if batching else arg.shape
        dims = [d if isinstance(d, int) and d > 0 else -1 for d in shape]
        tensor = config.input.add() if is_input else config.output.add()
        tensor.name = arg.name
        tensor.data_type = _ORT_TYPES[arg.type]  # type: ignore[assignment]
        tensor.dims.extend(dims)
    if batching:
        config.dynamic_batching.SetInParent()
    logger.info("%s: no config.pbtxt, derived one from the ONNX graph", model_file.parent.parent)
    return config


def load_spec(model_dir: Path, config: ModelConfig, *, default_max_queue_size: int) -> ModelSpec:
    """Validate a parsed config against what convserve can serve and derive the ModelSpec."""
    where = model_dir / CONFIG_FILENAME

    def fail(problem: str) -> ModelLoadError:
        return ModelLoadError(f"{where}: {problem}")

    if config.platform not in ("", "onnxruntime_onnx") or config.backend not in ("", "onnxruntime"):
        raise fail(
            f"platform {config.platform!r} / backend {config.backend!r} is not ONNX Runtime "
            '(use platform: "onnxruntime_onnx")'
        )
    if config.max_batch_size < 0:
        raise fail(f"max_batch_size must be 0 or more, got {config.max_batch_size}")
    if not config.input or not config.output:
        raise fail("needs at least one input and one output")
    inputs = tuple(
        _tensor(t.name, t.data_type, t.dims, t.HasField("reshape"), fail) for t in config.input
    )
    outputs = tuple(
        _tensor(t.name, t.data_type, t.dims, t.HasField("reshape"), fail) for t in config.output
    )
    names = [t.name for t in inputs + outputs]
    if len(set(names)) != len(names):
        raise fail(f"input/output names must be unique, got {names}")

    parameters = MappingProxyType({k: v.string_value for k, v in config.parameters.items()})
    task = parameters.get("task") or _infer_task(inputs)
    if task not in TASKS:
        raise fail(f"parameter task must be one of {', '.join(TASKS)}, got {task!r}")
    activation = parameters.get("output_activation", "softmax").strip().lower()
    if activation not in ACTIVATIONS:
        raise fail(f"parameter output_activation must be one of {', '.join(ACTIVATIONS)}")

    policy = parameters.get("batch_policy", "delay").strip().lower()
    if policy not in BATCH_POLICIES:
        raise fail(f"parameter batch_policy must be one of {', '.join(BATCH_POLICIES)}")

    labels = _labels(model_dir, config.output[0], outputs[0], fail)
    devices = _instance_devices(config)
    batching = config.dynamic_batching
    max_queue_size = batching.default_queue_policy.max_queue_size or default_max_queue_size
    return ModelSpec(
        name=config.name,
        config=config,
        task=task,
        inputs=inputs,
        outputs=outputs,
        max_batch_size=config.max_batch_size,
        max_queue_delay_s=batching.max_queue_delay_microseconds / 1e6,
        max_queue_size=max_queue_size,
        buckets=_buckets(config, parameters.get("batch_buckets"), fail),
        instances=len(devices),
        parameters=parameters,
        labels=labels,
        output_activation=activation,
        instance_devices=devices,
        model_filename=config.default_model_filename or DEFAULT_MODEL_FILENAME,
        batch_policy=policy,
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _tensor(
    name: str, data_type: int, dims: Sequence[int], reshape: bool, fail: _Fail
) -> TensorSpec:
    if not name:
        raise fail("every input and output needs a name")
    if data_type not in _DATATYPES:
        type_name = DataType.Name(data_type) if data_type in DataType.values() else data_type  # type: ignore[arg-type]
        raise fail(f"{name}: data_type {type_name} is not supported")
    if reshape:
        # Triton's reshape changes the tensor the model sees; ignoring it would feed wrong shapes.
        raise fail(f"{name}: reshape is not supported")
    bad = [d for d in dims if d == 0 or d < -1]
    if bad:
        raise fail(f"{name}: dims must be positive or -1, got {list(dims)}")
    datatype, np_dtype = _DATATYPES[data_type]
    return TensorSpec(
        name=name, datatype=datatype, dims=tuple(int(d) for d in dims), np_dtype=np_dtype
    )


def _infer_task(inputs: tuple[TensorSpec, ...]) -> str:
    """Documented default: CHW input → images, one flat axis → audio samples."""
    rank = len(inputs[0].dims)
    if len(inputs) == 1 and rank == 3:
        return "image_classification"
    if len(inputs) == 1 and rank == 1:
        return "speech_detection"
    return "generic"


def _labels(
    model_dir: Path, output: model_config_pb2.ModelOutput, spec: TensorSpec, fail: _Fail
) -> tuple[str, ...] | None:
    if not output.label_filename:
        return None
    path = (model_dir / output.label_filename).resolve()
    if not path.is_relative_to(model_dir.resolve()):
        raise fail(f"label_filename {output.label_filename!r} points outside the model directory")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"cannot read label_filename {output.label_filename!r}: {exc}") from None
    while lines and not lines[-1].strip():
        lines.pop()
    labels = tuple(line.strip() for line in lines)
    classes = spec.dims[-1] if spec.dims else -1
    if classes != -1 and len(labels) != classes:
        raise fail(
            f"{output.label_filename} has {len(labels)} labels but output {spec.name!r} "
            f"has {classes} classes"
        )
    return labels


def _buckets(config: ModelConfig, override: str | None, fail: _Fail) -> tuple[int, ...]:
    """Batch sizes a batch is padded up to, so the accelerator sees a handful of shapes.

    Documented default: preferred_batch_size ∪ max_batch_size. Without preferred sizes we use the
    powers of two up to max_batch_size rather than max_batch_size alone, which would pad a lone
    request to the largest batch. `batch_buckets: "none"` turns padding off.
    """
    limit = config.max_batch_size
    if limit == 0:
        return ()
    if override is not None and override.strip().lower() == "none":
        return ()
    if override is not None and override.strip():
        try:
            sizes = {int(part) for part in override.split(",") if part.strip()}
        except ValueError:
            raise fail(f"parameter batch_buckets must be integers, got {override!r}") from None
    else:
        sizes = set(config.dynamic_batching.preferred_batch_size)
        if not sizes:
            sizes = {1 << i for i in range(limit.bit_length()) if 1 << i <= limit}
    bad = sorted(s for s in sizes if not 1 <= s <= limit)
    if bad:
        raise fail(f"batch sizes {bad} are outside 1..max_batch_size ({limit})")
    return tuple(sorted(sizes | {limit}))


def _instance_devices(config: ModelConfig) -> tuple[str, ...]:
    kinds = model_config_pb2.ModelInstanceGroup
    devices: list[str] = []
    for group in config.instance_group or [model_config_pb2.ModelInstanceGroup(count=1)]:
        count = max(group.count, 1)
        if group.kind == kinds.KIND_CPU:
            devices += ["cpu"] * count
        elif group.gpus:
            # Triton puts `count` instances on each listed GPU.
            devices += [f"cuda:{gpu}" for gpu in group.gpus for _ in range(count)]
        else:
            devices += ["auto"] * count
    return tuple(devices)

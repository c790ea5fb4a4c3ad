"""config.pbtxt -> ModelSpec: read Triton's ModelConfig, check what convserve needs, derive more.

`parse_config` reads the file (Triton fields our schema lacks are skipped with one warning line,
service.config_text; when config.pbtxt is missing, service.autocomplete derives one from the
graph); `load_spec` validates and derives the `ModelSpec`:
tensors, batching, labels, instances and the task's own settings (image preprocessing, audio
windows, speech threshold). Every problem is a ModelLoadError naming the file.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from google.protobuf import text_format

from service import datatypes, layout
from service._proto.inference import model_config_pb2
from service.errors import ModelLoadError
from service.preprocess.audio import AudioSpec
from service.preprocess.image import ImageSpec
from service.spec import ACTIVATIONS, BatchPolicy, ModelSpec, SpeechSettings, Task, TensorSpec

logger = logging.getLogger(__name__)

ModelConfig = model_config_pb2.ModelConfig
DataType = model_config_pb2.DataType

# Measured best on this project's benchmarks (benchmarks/results): no queue wait on an idle
# instance, batches still grow under load. Triton's rule stays available as `delay`.
DEFAULT_BATCH_POLICY = BatchPolicy.EAGER
_Fail = Callable[[str], ModelLoadError]
E = TypeVar("E", Task, BatchPolicy)


def parse_config(path: Path, *, default_max_queue_size: int) -> ModelConfig:
    """Read `<model>/config.pbtxt`; its `name` must be empty (then set) or match the directory."""
    from service.config_text import parse

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path}: cannot read: {exc}") from None
    config = ModelConfig()
    try:
        skipped = parse(text, config)
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


def load_spec(
    model_dir: Path,
    config: ModelConfig,
    *,
    default_max_queue_size: int,
    max_audio_seconds: float = 600.0,
) -> ModelSpec:
    """Validate a parsed config against what convserve can serve and derive the ModelSpec."""
    where = model_dir / layout.CONFIG_FILENAME

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
    inputs = tuple(_tensor(t, fail) for t in config.input)
    outputs = tuple(_tensor(t, fail) for t in config.output)
    names = [t.name for t in inputs + outputs]
    if len(set(names)) != len(names):
        raise fail(f"input/output names must be unique, got {names}")

    parameters = MappingProxyType({k: v.string_value for k, v in config.parameters.items()})
    task = _choice(Task, parameters.get("task") or _infer_task(inputs).value, "task", fail)
    activation = parameters.get("output_activation", "softmax").strip().lower()
    if activation not in ACTIVATIONS:
        raise fail(f"parameter output_activation must be one of {', '.join(ACTIVATIONS)}")
    policy = _choice(
        BatchPolicy,
        parameters.get("batch_policy", DEFAULT_BATCH_POLICY.value),
        "batch_policy",
        fail,
    )
    batching = config.dynamic_batching
    task_settings = _task_settings(task, inputs, parameters, max_audio_seconds)
    if "task_problem" in task_settings:
        logger.warning(
            "%s: %s; KServe inference works, the task API refuses the model",
            where,
            task_settings["task_problem"],
        )
    return ModelSpec(
        name=config.name,
        config=config,
        task=task,
        inputs=inputs,
        outputs=outputs,
        max_batch_size=config.max_batch_size,
        max_queue_delay_s=batching.max_queue_delay_microseconds / 1e6,
        max_queue_size=batching.default_queue_policy.max_queue_size or default_max_queue_size,
        buckets=_buckets(config, parameters.get("batch_buckets"), fail),
        parameters=parameters,
        labels=_labels(model_dir, config.output[0], outputs[0], fail),
        output_activation=activation,
        instance_devices=_instance_devices(config),
        model_filename=config.default_model_filename or layout.DEFAULT_MODEL_FILENAME,
        batch_policy=policy,
        pad_batches="batch_buckets" in parameters,
        intra_op_threads=_int(parameters, "intra_op_thread_count", 0, fail, minimum=0),
        **task_settings,
    )


def _tensor(
    t: model_config_pb2.ModelInput | model_config_pb2.ModelOutput, fail: _Fail
) -> TensorSpec:
    if not t.name:
        raise fail("every input and output needs a name")
    datatype = datatypes.by_config_enum(t.data_type)
    if datatype is None:
        known = t.data_type in DataType.values()
        type_name = DataType.Name(t.data_type) if known else t.data_type
        raise fail(f"{t.name}: data_type {type_name} is not supported")
    if t.HasField("reshape"):
        # Triton's reshape changes the tensor the model sees; ignoring it would feed wrong shapes.
        raise fail(f"{t.name}: reshape is not supported")
    if any(d == 0 or d < -1 for d in t.dims):
        raise fail(f"{t.name}: dims must be positive or -1, got {list(t.dims)}")
    return TensorSpec(t.name, datatype.name, tuple(int(d) for d in t.dims), datatype.dtype)


def _choice(kind: type[E], raw: str, key: str, fail: _Fail) -> E:
    value = raw.strip().lower()
    for member in kind:
        if member.value == value:
            return member
    allowed = ", ".join(m.value for m in kind)
    raise fail(f"parameter {key} must be one of {allowed}, got {raw!r}")


def _infer_task(inputs: tuple[TensorSpec, ...]) -> Task:
    """Documented default: CHW input → images, one flat axis → audio samples."""
    rank = len(inputs[0].dims)
    if len(inputs) == 1 and rank == 3:
        return Task.IMAGE
    if len(inputs) == 1 and rank == 1:
        return Task.SPEECH
    return Task.GENERIC


def _int(params: Mapping[str, str], key: str, default: int, fail: _Fail, *, minimum: int) -> int:
    raw = params.get(key, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise fail(f"parameter {key} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise fail(f"parameter {key} must be at least {minimum}, got {value}")
    return value


def _task_settings(
    task: Task,
    inputs: Sequence[TensorSpec],
    params: Mapping[str, str],
    max_audio_seconds: float,
) -> dict[str, Any]:
    """The task's own settings for ModelSpec (image, audio, speech), or its `task_problem`."""
    try:
        if task is Task.GENERIC:
            return {}
        if len(inputs) != 1:
            raise ValueError(f"a {task.value} model needs one input, got {len(inputs)}")
        if task is Task.IMAGE:
            return {"image": ImageSpec.from_parameters(params, inputs[0].dims)}
        audio = AudioSpec.from_parameters(params, inputs[0].dims, max_seconds=max_audio_seconds)
        filled = [audio.window_samples if d == -1 else d for d in inputs[0].dims]
        if math.prod(filled) != audio.window_samples:
            raise ValueError(
                f"input dims {list(inputs[0].dims)} do not hold one "
                f"{audio.window_samples}-sample window"
            )
        return {"audio": audio, "speech": _speech(params)}
    except ValueError as exc:
        return {"task_problem": f"bad {task.value} parameters: {exc}"}


def _speech(params: Mapping[str, str]) -> SpeechSettings:
    try:
        threshold = float(params.get("threshold", "0.5"))
    except ValueError:
        raise ValueError(f"threshold is not a number: {params['threshold']!r}") from None
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold:g}")
    try:
        index = int(params.get("speech_index", "1"))
    except ValueError:
        raise ValueError(f"speech_index is not an integer: {params['speech_index']!r}") from None
    if index < 0:
        raise ValueError(f"speech_index must be 0 or more, got {index}")
    return SpeechSettings(threshold, index)


def _labels(
    model_dir: Path, output: model_config_pb2.ModelOutput, spec: TensorSpec, fail: _Fail
) -> tuple[str, ...] | None:
    if not output.label_filename:
        return None
    path = (model_dir / output.label_filename).resolve()
    if not path.is_relative_to(model_dir.resolve()):
        raise fail(f"label_filename {output.label_filename!r} points outside the model directory")
    try:
        labels = layout.read_labels(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"cannot read label_filename {output.label_filename!r}: {exc}") from None
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


def read_spec(
    model_dir: Path, *, default_max_queue_size: int = 1024, max_audio_seconds: float = 600.0
) -> ModelSpec:
    """The ModelSpec of `<model_dir>/config.pbtxt` (parse_config + load_spec), for tools that
    read a model folder without serving it: scripts, benchmarks, tests."""
    config = parse_config(
        model_dir / layout.CONFIG_FILENAME, default_max_queue_size=default_max_queue_size
    )
    return load_spec(
        model_dir,
        config,
        default_max_queue_size=default_max_queue_size,
        max_audio_seconds=max_audio_seconds,
    )

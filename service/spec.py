"""What convserve knows about a model once its config.pbtxt is loaded: typed, validated records.

`ModelSpec` is built by service.config.load_spec and shared by every version of a model. Besides
Triton's fields it carries what the task needs, derived once at load time: the image preprocessing
(`ImageSpec`), the audio windowing (`AudioSpec`) and the speech decision (`SpeechSettings`). A bad
task setting does not stop the model from loading (KServe inference does not need it): it is kept
as `task_problem`, logged once, and is what the task RPC answers.

The task vocabulary (`Task`) and the batching rules (`BatchPolicy`) are defined here and nowhere
else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from service._proto.inference import model_config_pb2
from service.preprocess.audio import AudioSpec
from service.preprocess.image import ImageSpec


class Task(str, Enum):
    """What a model does: which task RPC may use it (config parameter `task`)."""

    IMAGE = "image_classification"
    SPEECH = "speech_detection"
    GENERIC = "generic"  # KServe v2 inference only


class BatchPolicy(str, Enum):
    """When a batch goes to an instance (config parameter `batch_policy`; service/batcher)."""

    DELAY = "delay"
    """Triton's rule: wait for max_batch_size rows or max_queue_delay, even with an instance
    idle."""
    EAGER = "eager"
    """An idle instance takes what is queued at once; batches grow while instances are busy."""


ACTIVATIONS = ("softmax", "sigmoid", "none")


@dataclass(frozen=True)
class TensorSpec:
    """One input or output; `dims` exclude the batch axis and may hold -1 (any size)."""

    name: str
    datatype: str  # KServe name, see service.datatypes
    dims: tuple[int, ...]
    np_dtype: np.dtype[Any]

    def matches(self, shape: tuple[int, ...]) -> bool:
        """Whether a shape without the batch axis fits these dims."""
        return len(shape) == len(self.dims) and all(
            d == -1 or d == s for d, s in zip(self.dims, shape, strict=True)
        )

    @property
    def variable(self) -> bool:
        return -1 in self.dims


@dataclass(frozen=True)
class SpeechSettings:
    """A speech model's decision: which output class is speech, and the default threshold."""

    threshold: float = 0.5
    speech_index: int = 1


@dataclass(frozen=True)
class ModelSpec:
    """Everything convserve derived from one model's config.pbtxt (shared by all its versions)."""

    name: str
    config: model_config_pb2.ModelConfig = field(repr=False)
    task: Task
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int
    max_queue_delay_s: float
    max_queue_size: int
    buckets: tuple[int, ...]
    parameters: Mapping[str, str]
    labels: tuple[str, ...] | None
    output_activation: str
    instance_devices: tuple[str, ...]
    """Per instance: "auto" (use the server's --device), "cpu" (KIND_CPU) or "cuda:N" (gpus)."""
    model_filename: str
    batch_policy: BatchPolicy
    pad_batches: bool = False
    """Pad every batch up to a bucket size (config parameter batch_buckets given explicitly);
    without it only GPU sessions pad (service/batcher/packing.py)."""
    intra_op_threads: int = 0
    """ONNX Runtime intra-op threads per session (parameter intra_op_thread_count); 0: the
    server's --intra-op-threads."""
    image: ImageSpec | None = None
    audio: AudioSpec | None = None
    speech: SpeechSettings | None = None
    task_problem: str = ""
    """Why the task's own settings (preprocessing, windows, threshold) are unusable: the model
    still serves KServe inference, and its task RPC answers with this."""

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 0

    @property
    def instances(self) -> int:
        return len(self.instance_devices)

    @property
    def variable_inputs(self) -> bool:
        return any(t.variable for t in self.inputs)

    def wire_shape(self, tensor: TensorSpec) -> list[int]:
        """A tensor's shape as clients see it: the batch axis (-1) first when the model batches."""
        return [-1, *tensor.dims] if self.batching else list(tensor.dims)

    def output(self, name: str) -> TensorSpec | None:
        return next((t for t in self.outputs if t.name == name), None)

    @property
    def num_labels(self) -> int:
        """Classes of the first output: its labels, else its last fixed dimension, else 0."""
        if self.labels is not None:
            return len(self.labels)
        dims = self.outputs[0].dims if self.outputs else ()
        return dims[-1] if dims and dims[-1] > 0 else 0

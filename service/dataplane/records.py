"""The data plane's requests and answers: plain records, the same for every wire protocol.

The gRPC servicers and the HTTP routes build these from their messages and turn the answers back
into messages; nothing here knows a protobuf or a JSON document. Tensors are numpy arrays; an
input's payload stays undecoded (`InferInput.decode`) until its header — name, datatype, shape —
has been checked against the model, so a wrong shape is reported as such rather than as a
payload-size mismatch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.dataplane.postprocess import Ranked, WindowResult
from service.datatypes import Datatype

Segment = tuple[float, float]


@dataclass(frozen=True)
class InferInput:
    """One input tensor of a KServe v2 request, as the client declared it.

    `decode(datatype, shape)` reads the payload into an array of that datatype and shape (both
    already validated), raising InvalidInputError when the payload does not match them.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    decode: Callable[[Datatype, tuple[int, ...]], np.ndarray]
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RequestedOutput:
    """An output the client asked for. Parameter `classification: k` (Triton's classification
    extension) asks for the top-k "score:index:label" strings instead of the values."""

    name: str
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InferRequest:
    model: str
    version: str = ""
    id: str = ""
    inputs: Sequence[InferInput] = ()
    outputs: Sequence[RequestedOutput] = ()
    """Empty: every output of the model, as values."""


@dataclass(frozen=True)
class OutputTensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray


@dataclass(frozen=True)
class InferResponse:
    model: str
    version: str
    id: str
    outputs: list[OutputTensor]


@dataclass(frozen=True)
class Classification:
    model: str
    version: str
    classes: list[Ranked]


@dataclass(frozen=True)
class SpeechDetection:
    model: str
    version: str
    speech_probability: float
    is_speech: bool
    windows: list[WindowResult]
    segments: list[Segment]
    duration_s: float


@dataclass(frozen=True)
class SpeechUpdate:
    """What one step of a speech stream produced: new windows, segments that closed."""

    model: str
    version: str
    windows: list[WindowResult]
    segments: list[Segment]
    final: bool


@dataclass(frozen=True)
class TensorMetadata:
    name: str
    datatype: str
    shape: list[int]
    """As clients see it: the batch axis first (-1) when the model batches."""


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


@dataclass(frozen=True)
class VersionInfo:
    version: str
    state: str
    reason: str
    provider: str = ""
    requested_device: str = ""
    max_batch_size: int = 0
    batch_buckets: tuple[int, ...] = ()
    instances: int = 0
    inputs: list[TensorMetadata] = field(default_factory=list)
    outputs: list[TensorMetadata] = field(default_factory=list)


@dataclass(frozen=True)
class ModelInfo:
    """A model as the task API's ListModels/GetModel describe it."""

    name: str
    versions: list[VersionInfo]
    task: str = ""
    is_default: bool = False
    num_labels: int = 0


@dataclass(frozen=True)
class RepositoryEntry:
    name: str
    version: str
    state: str
    reason: str


@dataclass(frozen=True)
class ServerMetadata:
    name: str
    version: str
    extensions: tuple[str, ...]

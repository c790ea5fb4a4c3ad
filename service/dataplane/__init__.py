"""The protocol-independent data plane: every request of every wire protocol ends here.

The gRPC servicers (service.servicers) and the HTTP routes (service.http) only translate their
messages into the records of service.dataplane.records and call one method below; every domain
rule — which version answers, what a valid input is, how an image or a clip becomes model input,
how outputs become answers — is written once, here and in the modules this package holds:

    catalog      which version answers; metadata, config, statistics, model listings
    validation   KServe v2 input/output checks
    tensors      payload bytes/values <-> numpy
    speech       clips and streams through a speech model
    postprocess  activations, top-k, classification strings, speech windows and segments

Decoding and preprocessing are timed into `convserve_preprocess_duration_seconds`. They run in
the server's preprocessing thread pool, except for small images and tensors (INLINE_PIXELS,
INLINE_BYTES): those take less time on the event loop than the hop to the pool and back does,
so they are decoded in place (benchmarks/results/inline_decode/ has the measurement).
Inference goes through the model version's batcher with the caller's deadline
(time.monotonic()).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from google.protobuf import json_format

from service import calls
from service._proto.inference.model_config_pb2 import ModelConfig
from service.dataplane import postprocess, speech, validation
from service.dataplane.catalog import Catalog
from service.dataplane.records import (
    Classification,
    InferRequest,
    InferResponse,
    OutputTensor,
    RepositoryEntry,
    ServerMetadata,
    SpeechDetection,
)
from service.dataplane.speech import SpeechStream
from service.dataplane.tensors import ImageTensor
from service.errors import ConvserveError, InvalidInputError, QueueFullError
from service.metrics import Metrics, package_version
from service.preprocess.audio import AudioSpec, prepare_audio, split_windows
from service.preprocess.image import (
    ImageLimits,
    ImageSpec,
    decode_image,
    finish_image,
    open_image,
    parses_cheaply,
)
from service.repository import ModelRepository
from service.settings import Settings
from service.spec import Task

__all__ = ["Catalog", "DataPlane", "ImageTensor", "SpeechStream"]

T = TypeVar("T")
SERVER_NAME = "convserve"
EXTENSIONS = ("classification", "model_repository", "model_configuration", "statistics")
DEFAULT_TOP_K = 5
# Images whose decoded and resized sizes are both at most 64×64 pixels (and raw tensors of at
# most 3 × that many values) are preprocessed on the event loop: a 28×28 PNG takes 120–270 µs
# there, while the hop through the pool cost more CPU than that and the GIL hand-over on top
# (LeNet-5 PNGs, interleaved: 1.4–1.7× the requests/s at c=16, 0.63–0.75× the CPU per request;
# benchmarks/results/inline_decode/). A larger image
# would stall every other call on the loop, so it goes to the pool. So does any payload over
# INLINE_BYTES, and any PNG with compressed text or ICC chunks (Pillow inflates those while it
# reads the header: a crafted 16 KiB PNG took 45 ms to open): image.parses_cheaply.
INLINE_PIXELS = 64 * 64
INLINE_BYTES = 16 * 1024


class DataPlane:
    """Inference, task answers, server state and repository control over one repository."""

    def __init__(
        self,
        repository: ModelRepository,
        settings: Settings,
        metrics: Metrics | None,
        executor: Executor,
    ) -> None:
        self.models = Catalog(repository, settings)
        self.repository = repository
        self._settings = settings
        self._metrics = metrics
        self._executor = executor
        self._limits = ImageLimits(
            max_pixels=settings.max_image_pixels, max_bytes=settings.max_image_bytes
        )
        self._streams = 0
        self._shutting_down = False
        self._timers: dict[tuple[str, str], Any] = {}
        self.inline_decodes = 0
        """Images and raw tensors preprocessed on the event loop instead of the pool, so far."""

    # -- server ------------------------------------------------------------------------------

    def begin_shutdown(self) -> None:
        """SIGTERM: readiness answers false from now on."""
        self._shutting_down = True

    def ready(self) -> bool:
        return self.repository.is_ready() and not self._shutting_down

    def metadata(self) -> ServerMetadata:
        return ServerMetadata(SERVER_NAME, package_version(), EXTENSIONS)

    def model_ready(self, name: str, version: str = "") -> bool:
        """Unknown or not ready: False, not an error (as Triton)."""
        served = self.models.find(name, version)
        if served is None:
            return False
        calls.set_model(served.name)
        return served.ready

    # -- repository control ------------------------------------------------------------------

    def index(self, repository: str = "", *, ready_only: bool = False) -> list[RepositoryEntry]:
        _check_repository(repository)
        return self.models.index(ready_only=ready_only)

    async def load(
        self, name: str, repository: str = "", parameters: Mapping[str, Any] | None = None
    ) -> None:
        """(Re)load a model from the repository. Parameter `config` (Triton's override: the
        ModelConfig as JSON) replaces its config.pbtxt for this load; `convserve tune` tries
        configurations that way. Model files always come from the repository directory."""
        _check_repository(repository)
        _check_model_name(name)
        parameters = parameters or {}
        files = sorted(k for k in parameters if k.startswith("file:"))
        if files:
            raise InvalidInputError(
                f"load parameters {files} are not supported: convserve loads model files only "
                "from the repository directory"
            )
        config = None
        if "config" in parameters:
            config = _config_override(name, parameters["config"])
        await self.repository.load(name, config)
        calls.set_model(name)

    async def unload(self, name: str, repository: str = "") -> None:
        _check_repository(repository)
        _check_model_name(name)
        await self.repository.unload(name)

    # -- inference ---------------------------------------------------------------------------

    async def infer(self, request: InferRequest, deadline: float | None) -> InferResponse:
        """KServe v2 inference: validate, queue, and shape the outputs asked for."""
        if not request.model:
            raise InvalidInputError("model_name is required")
        served = self.models.resolve(request.model, request.version)
        spec = served.spec
        arrays = validation.inputs(spec, request.inputs)
        wanted = validation.outputs(spec, request.outputs)
        results = await served.infer(arrays, deadline=deadline)
        outputs: list[OutputTensor] = []
        for tensor, k in wanted:
            arr = results[tensor.name]
            if k:
                labels = spec.labels if tensor is spec.outputs[0] else None
                arr = postprocess.classification(arr, k, labels, batched=spec.batching)
                datatype = "BYTES"
            else:
                if arr.dtype != tensor.np_dtype and tensor.datatype != "BYTES":
                    arr = arr.astype(tensor.np_dtype)
                datatype = tensor.datatype
            outputs.append(OutputTensor(tensor.name, datatype, tuple(arr.shape), arr))
        return InferResponse(served.name, served.version, request.id, outputs)

    async def classify_image(
        self,
        *,
        model: str = "",
        version: str = "",
        image: bytes | None = None,
        tensor: ImageTensor | None = None,
        top_k: int = 0,
        deadline: float | None = None,
    ) -> Classification:
        """Top-k classes of an encoded image (or an already preprocessed C×H×W float32 tensor)."""
        if (image is None) == (tensor is None):
            raise InvalidInputError("send exactly one of image (encoded bytes) and tensor")
        served = self.models.resolve(model, version, Task.IMAGE)
        spec = served.spec
        if spec.image is None:
            raise ConvserveError(f"model {served.name!r}: {spec.task_problem}")
        input_spec = spec.inputs[0]
        if image is not None:
            x = await self._decode_image(served.name, image, spec.image)
        else:
            assert tensor is not None
            # Raw bytes become an array without a copy; typed values stay in the pool (a Python
            # float per value to convert).
            inline = not len(tensor.values) and len(tensor.raw) <= 4 * 3 * INLINE_PIXELS
            x = await self._preprocess(
                served.name, "tensor", tensor.array, input_spec.dims, inline=inline
            )
        x = x.astype(input_spec.np_dtype, copy=False)
        outputs = await served.infer(
            {input_spec.name: x[None] if spec.batching else x}, deadline=deadline
        )
        logits = outputs[spec.outputs[0].name]
        scores = postprocess.activate(
            logits[0] if spec.batching else logits, spec.output_activation
        )
        ranked = postprocess.top_k(scores, top_k or DEFAULT_TOP_K, spec.labels)
        return Classification(served.name, served.version, ranked)

    async def detect_speech(
        self,
        *,
        model: str = "",
        version: str = "",
        audio: bytes | None = None,
        samples: Sequence[float] | npt.NDArray[np.floating[Any]] | None = None,
        sample_rate: int = 0,
        threshold: float = 0.0,
        deadline: float | None = None,
    ) -> SpeechDetection:
        """Speech probability, decision, windows and segments of a clip (bytes or samples)."""
        if (audio is None) == (samples is None):
            raise InvalidInputError("send exactly one of audio (encoded bytes) and samples")
        served = self.models.resolve(model, version, Task.SPEECH)
        spec = served.spec
        if spec.audio is None or spec.speech is None:
            raise ConvserveError(f"model {served.name!r}: {spec.task_problem}")
        decision = speech.threshold(threshold, spec.speech)
        # Off the loop: a long clip's samples field alone is millions of floats to convert.
        x, windows, starts = await self._preprocess(
            served.name, "audio", _prepare_clip, audio, samples, sample_rate, spec.audio
        )
        rate = spec.audio.sample_rate
        ends = np.minimum(starts + spec.audio.window_samples, len(x))
        probabilities = await speech.probabilities(served, windows, deadline)
        results = postprocess.window_results(starts, ends, probabilities, rate)
        best = max(r.probability for r in results)
        return SpeechDetection(
            model=served.name,
            version=served.version,
            speech_probability=best,
            is_speech=best >= decision,
            windows=results,
            segments=postprocess.segments(results, decision),
            duration_s=len(x) / rate,
        )

    def open_stream(
        self, *, model: str = "", version: str = "", sample_rate: int = 0, threshold: float = 0.0
    ) -> SpeechStream:
        """A speech stream; the caller must `close_stream` it. RESOURCE_EXHAUSTED past
        --max-concurrent-streams open streams."""
        limit = self._settings.max_concurrent_streams
        if self._streams >= limit:
            raise QueueFullError(
                f"{limit} StreamDetectSpeech streams are open already (--max-concurrent-streams); "
                "retry later"
            )
        served = self.models.resolve(model, version, Task.SPEECH)
        if served.spec.speech is None:
            raise ConvserveError(f"model {served.name!r}: {served.spec.task_problem}")
        decision = speech.threshold(threshold, served.spec.speech)
        self._streams += 1
        return SpeechStream(served, sample_rate, decision, self._settings.max_stream_seconds)

    def close_stream(self, stream: SpeechStream) -> None:
        self._streams -= 1

    @property
    def open_streams(self) -> int:
        return self._streams

    # -- helpers -----------------------------------------------------------------------------

    async def _decode_image(
        self, model: str, image: bytes, spec: ImageSpec
    ) -> npt.NDArray[np.float32]:
        """A small image whose header is cheap to read is opened here, and decoded here too
        when its pixels are few; everything else is decoded in the pool."""
        start = time.perf_counter()
        loop = asyncio.get_running_loop()
        try:
            if not parses_cheaply(image, INLINE_BYTES):
                return await loop.run_in_executor(
                    self._executor, decode_image, image, spec, self._limits
                )
            opened = open_image(image, self._limits)
            if opened.work_pixels(spec) <= INLINE_PIXELS:
                self.inline_decodes += 1
                return finish_image(opened, spec)
            return await loop.run_in_executor(self._executor, finish_image, opened, spec)
        finally:
            self._observe(model, "image", start)

    async def _preprocess(
        self, model: str, kind: str, fn: Callable[..., T], *args: Any, inline: bool = False
    ) -> T:
        """Run blocking decode work in the preprocessing pool (in place when `inline`), timed
        into the metrics."""
        start = time.perf_counter()
        try:
            if inline:
                self.inline_decodes += 1
                return fn(*args)
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        finally:
            self._observe(model, kind, start)

    def _observe(self, model: str, kind: str, start: float) -> None:
        if self._metrics is not None:
            timer = self._timers.get((model, kind))
            if timer is None:
                timer = self._timers[(model, kind)] = (
                    self._metrics.preprocess_duration_seconds.labels(model=model, kind=kind)
                )
            timer.observe(time.perf_counter() - start)


def _prepare_clip(
    audio: bytes | None, samples: Any, sample_rate: int, spec: AudioSpec
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Worker thread: decode or convert, resample, and cut into windows."""
    array = None if samples is None else np.asarray(samples, dtype=np.float32)
    x = prepare_audio(audio, array, sample_rate, spec)
    windows, starts = split_windows(x, spec)
    return x, windows, starts


def _config_override(name: str, text: object) -> ModelConfig:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if not isinstance(text, str) or not text.strip():
        raise InvalidInputError("load parameter config must be a ModelConfig as a JSON string")
    config = ModelConfig()
    try:
        json_format.Parse(text, config)
    except json_format.ParseError as exc:
        raise InvalidInputError(f"load parameter config is not a ModelConfig: {exc}") from None
    if config.name and config.name != name:
        raise InvalidInputError(f"load parameter config names {config.name!r}, not {name!r}")
    config.name = name
    return config


def _check_repository(name: str) -> None:
    if name:
        raise InvalidInputError(
            f"repository {name!r} not found: convserve serves one repository (leave it empty)"
        )


def _check_model_name(name: str) -> None:
    """An empty name is refused here; the repository refuses paths and traversal (`..`, `/`)."""
    if not name:
        raise InvalidInputError("model_name is required")

"""convserve.v1.Inference: image classification and speech detection as task-level RPCs.

The servicer converts and delegates: it resolves the model, runs decoding in the preprocessing
thread pool, hands batch-first arrays to `ServedModel.infer` (the model's batcher) with the
client's deadline, and turns outputs into answers with `postprocess`. It never touches a session.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Executor
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from service._proto.convserve.v1 import inference_pb2 as pb
from service._proto.convserve.v1 import inference_pb2_grpc as pb_grpc
from service.config import ModelSpec
from service.errors import (
    ConvserveError,
    InvalidInputError,
    ModelNotFoundError,
    QueueFullError,
)
from service.metrics import Metrics
from service.preprocess.audio import (
    AudioSpec,
    StreamWindower,
    prepare_audio,
    resample,
    split_windows,
)
from service.preprocess.image import ImageLimits, ImageSpec, check_raw_tensor, decode_image
from service.repository import ModelRepository, ServedModel
from service.servicers import postprocess
from service.servicers.converters import task_tensor
from service.servicers.rpc import Admission, Context, deadline_of, rpc, set_model
from service.settings import Settings

logger = logging.getLogger(__name__)

IMAGE = "image_classification"
SPEECH = "speech_detection"
DEFAULT_TOP_K = 5
# Per DetectSpeech request: how many window batches may wait in the model's queue at once, so one
# long clip cannot take the whole queue (max_queue_size) from other clients.
MAX_CHUNKS_IN_FLIGHT = 4
T = TypeVar("T")


class TaskServicer(pb_grpc.InferenceServicer):
    """convserve.v1.Inference over a ModelRepository."""

    def __init__(
        self,
        repository: ModelRepository,
        settings: Settings,
        metrics: Metrics | None,
        executor: Executor,
    ) -> None:
        self.metrics = metrics
        self.admission: Admission | None = None  # set by the server (graceful shutdown)
        self._repo = repository
        self._settings = settings
        self._executor = executor
        self._limits = ImageLimits(
            max_pixels=settings.max_image_pixels, max_bytes=settings.max_image_bytes
        )
        self._streams = 0
        # (name, version) -> (the ModelSpec it was derived from, derived preprocessing spec)
        self._image_specs: dict[tuple[str, str], tuple[ModelSpec, ImageSpec]] = {}
        self._audio_specs: dict[tuple[str, str], tuple[ModelSpec, AudioSpec]] = {}

    # ---- RPCs -----------------------------------------------------------------------------

    @rpc
    async def ClassifyImage(  # noqa: N802
        self, request: pb.ClassifyImageRequest, context: Context
    ) -> pb.ClassifyImageResponse:
        if bool(request.image) == request.HasField("tensor"):
            raise InvalidInputError("send exactly one of image (encoded bytes) and tensor")
        served = self._resolve(request.model, request.version, IMAGE)
        spec = served.spec
        if len(spec.inputs) != 1:
            raise InvalidInputError(f"model {spec.name!r} has {len(spec.inputs)} inputs, not one")
        tensor_spec = spec.inputs[0]
        if request.image:
            image_spec = self._image_spec(served)
            x = await self._preprocess(
                served.name, "image", decode_image, request.image, image_spec, self._limits
            )
        else:
            x = await self._preprocess(
                served.name, "tensor", _raw_tensor, request.tensor, tensor_spec.dims
            )
        batch = _one_row(spec, x.astype(tensor_spec.np_dtype, copy=False))
        outputs = await served.infer({tensor_spec.name: batch}, deadline=deadline_of(context))
        logits = _row(spec, outputs[spec.outputs[0].name])
        scores = postprocess.activate(logits, spec.output_activation)
        ranked = postprocess.top_k(scores, request.top_k or DEFAULT_TOP_K, spec.labels)
        return pb.ClassifyImageResponse(
            classes=[pb.Class(index=r.index, label=r.label, score=r.score) for r in ranked],
            model=served.name,
            version=served.version,
        )

    @rpc
    async def DetectSpeech(  # noqa: N802
        self, request: pb.DetectSpeechRequest, context: Context
    ) -> pb.DetectSpeechResponse:
        has_samples = len(request.samples) > 0
        if bool(request.audio) == has_samples:
            raise InvalidInputError("send exactly one of audio (encoded bytes) and samples")
        served = self._resolve(request.model, request.version, SPEECH)
        threshold = _request_threshold(request.threshold, served.spec)
        audio_spec = self._audio_spec(served)
        # Off the loop: a long clip's samples field alone is millions of floats to convert.
        x, windows, starts = await self._preprocess(
            served.name,
            "audio",
            _prepare_clip,
            request.audio or None,
            request.samples if has_samples else None,
            request.sample_rate,
            audio_spec,
        )
        ends = np.minimum(starts + audio_spec.window_samples, len(x))
        probabilities = await self._speech(served, windows, deadline_of(context))
        results = postprocess.window_results(starts, ends, probabilities, audio_spec.sample_rate)
        best = max(r.probability for r in results)
        return pb.DetectSpeechResponse(
            speech_probability=best,
            is_speech=best >= threshold,
            windows=[_window(r) for r in results],
            segments=[
                pb.Segment(start_s=s, end_s=e) for s, e in postprocess.segments(results, threshold)
            ],
            model=served.name,
            version=served.version,
            duration_s=len(x) / audio_spec.sample_rate,
        )

    @rpc
    async def StreamDetectSpeech(  # noqa: N802
        self, request_iterator: AsyncIterator[pb.StreamDetectSpeechRequest], context: Context
    ) -> AsyncIterator[pb.StreamDetectSpeechResponse]:
        limit = self._settings.max_concurrent_streams
        if self._streams >= limit:
            raise QueueFullError(
                f"{limit} StreamDetectSpeech streams are open already (--max-concurrent-streams); "
                "retry later"
            )
        self._streams += 1
        try:
            stream: _SpeechStream | None = None
            async for message in request_iterator:
                if stream is None:
                    stream = self._open_stream(message)
                windows = stream.windower.push(stream.chunk(message))
                if windows:
                    yield await self._stream_step(stream, windows, context, final=False)
            if stream is None:  # the client closed without sending anything
                stream = self._open_stream(pb.StreamDetectSpeechRequest())
            yield await self._stream_step(stream, stream.windower.flush(), context, final=True)
        finally:
            self._streams -= 1

    @rpc
    async def ListModels(  # noqa: N802
        self, request: pb.ListModelsRequest, context: Context
    ) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(
            models=[self._model_info(name, versions) for name, versions in self._models()]
        )

    @rpc
    async def GetModel(self, request: pb.GetModelRequest, context: Context) -> pb.ModelInfo:  # noqa: N802
        for name, versions in self._models():
            if name != request.name:
                continue
            if request.version:
                versions = [v for v in versions if v.version == request.version]
                if not versions:
                    raise ModelNotFoundError(f"model {name!r} has no version {request.version!r}")
            set_model(name)
            return self._model_info(name, versions)
        raise ModelNotFoundError(f"unknown model {request.name!r}")

    # ---- helpers ---------------------------------------------------------------------------

    def _resolve(self, name: str, version: str, task: str) -> ServedModel:
        served = self._repo.get(name or self._repo.default_model(task), version)
        set_model(served.name)
        if served.spec.task != task:
            raise InvalidInputError(
                f"model {served.name!r} is a {served.spec.task} model; this RPC needs a {task} "
                "model"
            )
        return served

    async def _preprocess(self, model: str, kind: str, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking decode work in the preprocessing pool, timed into the metrics."""
        start = time.perf_counter()
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        finally:
            if self.metrics is not None:
                self.metrics.preprocess_duration_seconds.labels(model=model, kind=kind).observe(
                    time.perf_counter() - start
                )

    def _image_spec(self, served: ServedModel) -> ImageSpec:
        key = (served.name, served.version)
        cached = self._image_specs.get(key)
        if cached is None or cached[0] is not served.spec:
            spec = served.spec
            try:
                derived = ImageSpec.from_parameters(spec.parameters, spec.inputs[0].dims)
            except ValueError as exc:
                raise ConvserveError(
                    f"model {spec.name!r}: bad image preprocessing config: {exc}"
                ) from None
            cached = self._image_specs[key] = (spec, derived)
        return cached[1]

    def _audio_spec(self, served: ServedModel) -> AudioSpec:
        key = (served.name, served.version)
        cached = self._audio_specs.get(key)
        if cached is None or cached[0] is not served.spec:
            spec = served.spec
            try:
                derived = AudioSpec.from_parameters(
                    spec.parameters,
                    spec.inputs[0].dims,
                    max_seconds=self._settings.max_audio_seconds,
                )
            except ValueError as exc:
                raise ConvserveError(f"model {spec.name!r}: bad audio config: {exc}") from None
            cached = self._audio_specs[key] = (spec, derived)
        return cached[1]

    async def _speech(
        self, served: ServedModel, windows: npt.NDArray[np.float32], deadline: float | None
    ) -> npt.NDArray[np.float32]:
        """Speech probability per window; windows beyond max_batch_size go as several batches."""
        spec = served.spec
        if len(spec.inputs) != 1:
            raise InvalidInputError(f"model {spec.name!r} has {len(spec.inputs)} inputs, not one")
        tensor = spec.inputs[0]
        shape = _window_shape(spec, windows.shape[1])
        x = windows.reshape((len(windows), *shape)).astype(tensor.np_dtype, copy=False)
        output = spec.outputs[0].name
        if not spec.batching:
            chunks = [x[i] for i in range(len(x))]
        else:
            chunks = [x[i : i + spec.max_batch_size] for i in range(0, len(x), spec.max_batch_size)]
        gate = asyncio.Semaphore(MAX_CHUNKS_IN_FLIGHT)

        async def run(chunk: npt.NDArray[Any]) -> npt.NDArray[Any]:
            async with gate:
                result = await served.infer({tensor.name: chunk}, deadline=deadline)
            out = result[output]
            return out.reshape(1, -1) if not spec.batching else out.reshape(len(chunk), -1)

        logits = np.concatenate(await _all(run(c) for c in chunks))
        return postprocess.speech_probabilities(logits, spec.output_activation, _speech_index(spec))

    def _open_stream(self, first: pb.StreamDetectSpeechRequest) -> _SpeechStream:
        served = self._resolve(first.model, first.version, SPEECH)
        audio_spec = self._audio_spec(served)
        threshold = _request_threshold(first.threshold, served.spec)
        return _SpeechStream(
            served, audio_spec, first.sample_rate or audio_spec.sample_rate, threshold
        )

    async def _stream_step(
        self, stream: _SpeechStream, windows: Sequence[Any], context: Context, *, final: bool
    ) -> pb.StreamDetectSpeechResponse:
        results: list[postprocess.WindowResult] = []
        if windows:
            x = np.stack([w.samples for w in windows])
            probabilities = await self._speech(stream.served, x, deadline_of(context))
            starts = [w.start for w in windows]
            ends = [w.start + w.valid for w in windows]
            results = postprocess.window_results(
                starts, ends, probabilities, stream.audio_spec.sample_rate
            )
        closed = stream.segments.add(results)
        if final:
            closed += stream.segments.close()
        return pb.StreamDetectSpeechResponse(
            windows=[_window(r) for r in results],
            segments=[pb.Segment(start_s=s, end_s=e) for s, e in closed],
            final=final,
            model=stream.served.name,
            version=stream.served.version,
        )

    def _models(self) -> list[tuple[str, list[ServedModel]]]:
        return sorted(self._repo.list_models(), key=lambda item: item[0])

    def _model_info(self, name: str, versions: Sequence[ServedModel]) -> pb.ModelInfo:
        ordered = sorted(versions, key=lambda v: _version_key(v.version))
        spec = next((v.spec for v in reversed(ordered) if v.spec is not None), None)
        info = pb.ModelInfo(name=name, versions=[_version_info(v) for v in ordered])
        if not ordered:
            # No versions: its config could not be read. Show why, as a version-less entry.
            for model, version, state, reason in self._repo.index():
                if model == name and not version:
                    info.versions.add(state=str(state), reason=reason)
        if spec is not None:
            info.task = spec.task
            info.num_labels = _num_labels(spec)
            try:
                info.is_default = self._repo.default_model(spec.task) == name
            except ConvserveError:
                info.is_default = False
        return info


class _SpeechStream:
    """One StreamDetectSpeech call's state: model, windower, open segment."""

    def __init__(
        self, served: ServedModel, audio_spec: AudioSpec, sample_rate: int, threshold: float
    ) -> None:
        self.served = served
        self.audio_spec = audio_spec
        self.sample_rate = sample_rate
        self.windower = StreamWindower(audio_spec)
        self.segments = postprocess.SegmentTracker(threshold)

    def chunk(self, message: pb.StreamDetectSpeechRequest) -> npt.NDArray[np.float32]:
        """One message's audio at the model's rate.

        Known limitation: a stream at another rate is resampled chunk by chunk, so the filter
        sees each chunk's edges (small artefacts there, and the length rounds per chunk); send
        audio at the model's sample rate when exact windows matter.
        """
        if len(message.samples) and message.pcm_s16le:
            raise InvalidInputError("a stream message carries samples or pcm_s16le, not both")
        if message.pcm_s16le:
            if len(message.pcm_s16le) % 2:
                raise InvalidInputError(
                    f"pcm_s16le has {len(message.pcm_s16le)} bytes; 16-bit samples need an even "
                    "count"
                )
            pcm = np.frombuffer(message.pcm_s16le, dtype="<i2")
            x = pcm.astype(np.float32) / np.float32(32768)
        else:
            x = np.asarray(message.samples, dtype=np.float32)
        if len(x) and self.sample_rate != self.audio_spec.sample_rate:
            x = resample(x, self.sample_rate, self.audio_spec.sample_rate)
        return x


def _raw_tensor(tensor: pb.Tensor, dims: Sequence[int]) -> npt.NDArray[np.float32]:
    return check_raw_tensor(task_tensor(tensor, dims), dims)


def _prepare_clip(
    audio: bytes | None, samples: Any, sample_rate: int, spec: AudioSpec
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Worker thread: decode or convert, resample, and cut into windows."""
    array = None if samples is None else np.asarray(samples, dtype=np.float32)
    x = prepare_audio(audio, array, sample_rate, spec)
    windows, starts = split_windows(x, spec)
    return x, windows, starts


async def _all(coroutines: Any) -> list[Any]:
    """gather() that cancels the siblings when one fails (a failed chunk fails the request)."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _one_row(spec: ModelSpec, x: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """A single request as model input: with a batch axis of 1 when the model batches."""
    return x[None] if spec.batching else x


def _row(spec: ModelSpec, out: npt.NDArray[Any]) -> npt.NDArray[Any]:
    return out[0] if spec.batching else out


def _window_shape(spec: ModelSpec, window: int) -> tuple[int, ...]:
    """The input dims with any dynamic axis filled so that one window fits."""
    dims = spec.inputs[0].dims
    shape = tuple(window if d == -1 else d for d in dims)
    if int(np.prod(shape)) != window:
        raise ConvserveError(
            f"model {spec.name!r}: input dims {list(dims)} do not hold one {window}-sample window"
        )
    return shape


def _request_threshold(requested: float, spec: ModelSpec) -> float:
    """A request's decision threshold (0: the model's own), refusing ones no probability meets."""
    if requested == 0:
        return _threshold(spec)
    if not 0 < requested <= 1:  # NaN fails this too
        raise InvalidInputError(
            f"threshold must be in (0, 1], or 0 for the model's default "
            f"({_threshold(spec):g}); got {requested:g}"
        )
    return requested


def _threshold(spec: ModelSpec) -> float:
    try:
        return float(spec.parameters.get("threshold", "0.5"))
    except ValueError:
        raise ConvserveError(f"model {spec.name!r}: parameter threshold is not a number") from None


def _speech_index(spec: ModelSpec) -> int:
    try:
        return int(spec.parameters.get("speech_index", "1"))
    except ValueError:
        raise ConvserveError(
            f"model {spec.name!r}: parameter speech_index is not an integer"
        ) from None


def _window(r: postprocess.WindowResult) -> pb.Window:
    return pb.Window(start_s=r.start_s, end_s=r.end_s, speech_probability=r.probability)


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (-1, version)


def _num_labels(spec: ModelSpec) -> int:
    if spec.labels is not None:
        return len(spec.labels)
    dims = spec.outputs[0].dims if spec.outputs else ()
    return dims[-1] if dims and dims[-1] > 0 else 0


def _version_info(v: ServedModel) -> pb.ModelVersionInfo:
    info = pb.ModelVersionInfo(
        version=v.version,
        state=str(getattr(v.state, "value", v.state)),
        reason=v.reason or "",
        provider=v.provider or "",
        requested_device=v.requested_device or "",
    )
    spec = v.spec
    if spec is not None:
        info.max_batch_size = spec.max_batch_size
        info.batch_buckets.extend(spec.buckets)
        info.instances = spec.instances
        info.inputs.extend(tensor_info(spec, t) for t in spec.inputs)
        info.outputs.extend(tensor_info(spec, t) for t in spec.outputs)
    return info


def tensor_info(spec: ModelSpec, tensor: Any) -> pb.TensorInfo:
    shape = [-1, *tensor.dims] if spec.batching else list(tensor.dims)
    return pb.TensorInfo(name=tensor.name, datatype=tensor.datatype, shape=shape)

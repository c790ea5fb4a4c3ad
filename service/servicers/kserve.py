"""inference.GRPCInferenceService: KServe v2 / Open Inference Protocol plus Triton's extensions.

Wire-compatible with tritonclient and perf_analyzer: health and metadata, ModelInfer (raw or
typed inputs, raw outputs, Triton's classification extension), ModelStreamInfer (errors travel in
`error_message` and the stream goes on), ModelConfig, ModelStatistics and repository control.

Inputs are validated against the model's config before anything is queued: name, datatype and
shape (batch axis first, at most max_batch_size rows) must match, with the expected and received
values in the INVALID_ARGUMENT message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any, Final

import numpy.typing as npt

from service._proto.inference import grpc_service_pb2 as pb
from service._proto.inference import grpc_service_pb2_grpc as pb_grpc
from service.config import ModelSpec, TensorSpec
from service.errors import (
    InvalidInputError,
    ModelNotFoundError,
    ModelNotReadyError,
)
from service.metrics import Metrics, package_version
from service.repository import ModelRepository, ModelState, ServedModel
from service.servicers import converters, postprocess
from service.servicers.rpc import Admission, Context, deadline_of, rpc, set_model, translate

logger = logging.getLogger(__name__)

SERVER_NAME: Final = "convserve"
EXTENSIONS: Final = (
    "classification",
    "model_repository",
    "model_configuration",
    "statistics",
)
PLATFORM: Final = "onnxruntime_onnx"
# ModelStreamInfer: requests of one stream being processed at once (each waits in the batcher).
STREAM_WINDOW: Final = 64


class KServeServicer(pb_grpc.GRPCInferenceServiceServicer):
    """KServe v2 over a ModelRepository."""

    def __init__(self, repository: ModelRepository, metrics: Metrics | None) -> None:
        self.metrics = metrics
        self.admission: Admission | None = None  # set by the server (graceful shutdown)
        self.shutting_down = False
        """Set by the server on SIGTERM: ServerReady then answers false."""
        self._repo = repository

    # ---- health and metadata ---------------------------------------------------------------

    @rpc
    async def ServerLive(  # noqa: N802
        self, request: pb.ServerLiveRequest, context: Context
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @rpc
    async def ServerReady(  # noqa: N802
        self, request: pb.ServerReadyRequest, context: Context
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._repo.is_ready() and not self.shutting_down)

    @rpc
    async def ModelReady(  # noqa: N802
        self, request: pb.ModelReadyRequest, context: Context
    ) -> pb.ModelReadyResponse:
        served = self._repo.find(request.name, request.version)
        if served is None:  # unknown or not ready: Triton answers false, not an error
            return pb.ModelReadyResponse(ready=False)
        set_model(served.name)
        return pb.ModelReadyResponse(ready=served.ready)

    @rpc
    async def ServerMetadata(  # noqa: N802
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name=SERVER_NAME, version=package_version(), extensions=list(EXTENSIONS)
        )

    @rpc
    async def ModelMetadata(  # noqa: N802
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        served = self._find(request.name, request.version)
        spec = served.spec
        versions = self._versions(request.name)
        ready = [v.version for v in versions if v.state == ModelState.READY]
        return pb.ModelMetadataResponse(
            name=served.name,
            versions=[served.version] if request.version else ready or [served.version],
            platform=spec.config.platform or PLATFORM,
            inputs=[_metadata(spec, t) for t in spec.inputs],
            outputs=[_metadata(spec, t) for t in spec.outputs],
        )

    @rpc
    async def ModelConfig(  # noqa: N802
        self, request: pb.ModelConfigRequest, context: Context
    ) -> pb.ModelConfigResponse:
        served = self._find(request.name, request.version)
        return pb.ModelConfigResponse(config=served.spec.config)

    @rpc
    async def ModelStatistics(  # noqa: N802
        self, request: pb.ModelStatisticsRequest, context: Context
    ) -> pb.ModelStatisticsResponse:
        if request.name:
            served = self._find(request.name, request.version)
            chosen = (
                [served]
                if request.version
                else [v for v in self._versions(request.name) if v.state == ModelState.READY]
                or [served]
            )
        else:
            chosen = [
                v
                for _, versions in sorted(self._repo.list_models(), key=lambda item: item[0])
                for v in versions
                if v.state == ModelState.READY
            ]
        return pb.ModelStatisticsResponse(model_stats=[_statistics(v) for v in chosen])

    # ---- inference -------------------------------------------------------------------------

    @rpc
    async def ModelInfer(  # noqa: N802
        self, request: pb.ModelInferRequest, context: Context
    ) -> pb.ModelInferResponse:
        return await self._infer(request, deadline_of(context))

    @rpc
    async def ModelStreamInfer(  # noqa: N802
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: Context
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Requests are processed concurrently (up to STREAM_WINDOW); responses go out as they
        complete, so their order may differ from the requests' (match them by `id`, as with
        Triton)."""
        replies: asyncio.Queue[pb.ModelStreamInferResponse | BaseException | None] = asyncio.Queue()
        window = asyncio.Semaphore(STREAM_WINDOW)
        deadline = deadline_of(context)

        async def answer(request: pb.ModelInferRequest) -> None:
            try:
                reply = pb.ModelStreamInferResponse(
                    infer_response=await self._infer(request, deadline)
                )
            except Exception as exc:  # one bad request fails itself, not the stream
                _, message = translate(exc, "ModelStreamInfer")
                reply = pb.ModelStreamInferResponse(
                    error_message=message,
                    infer_response=pb.ModelInferResponse(
                        model_name=request.model_name,
                        model_version=request.model_version,
                        id=request.id,
                    ),
                )
            finally:
                window.release()
            await replies.put(reply)

        async def read() -> None:
            tasks: set[asyncio.Task[None]] = set()
            try:
                async for request in request_iterator:
                    await window.acquire()
                    task = asyncio.create_task(answer(request))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if tasks:
                    await asyncio.gather(*tasks)
                await replies.put(None)
            except asyncio.CancelledError:
                for task in tasks:
                    task.cancel()
                raise
            except Exception as exc:
                for task in tasks:
                    task.cancel()
                await replies.put(exc)

        reader = asyncio.create_task(read())
        try:
            while (item := await replies.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    # ---- repository --------------------------------------------------------------------------

    @rpc
    async def RepositoryIndex(  # noqa: N802
        self, request: pb.RepositoryIndexRequest, context: Context
    ) -> pb.RepositoryIndexResponse:
        _check_repository(request.repository_name)
        response = pb.RepositoryIndexResponse()
        for name, version, state, reason in sorted(self._repo.index()):
            state_name = str(getattr(state, "value", state))
            if request.ready and state_name != ModelState.READY.value:
                continue
            response.models.add(name=name, version=version, state=state_name, reason=reason or "")
        return response

    @rpc
    async def RepositoryModelLoad(  # noqa: N802
        self, request: pb.RepositoryModelLoadRequest, context: Context
    ) -> pb.RepositoryModelLoadResponse:
        _check_repository(request.repository_name)
        _check_model_name(request.model_name)
        overrides = sorted(k for k in request.parameters if k == "config" or k.startswith("file:"))
        if overrides:
            raise InvalidInputError(
                f"load parameters {overrides} are not supported: convserve loads models only "
                "from the repository directory"
            )
        await self._repo.load(request.model_name)
        set_model(request.model_name)
        return pb.RepositoryModelLoadResponse()

    @rpc
    async def RepositoryModelUnload(  # noqa: N802
        self, request: pb.RepositoryModelUnloadRequest, context: Context
    ) -> pb.RepositoryModelUnloadResponse:
        _check_repository(request.repository_name)
        _check_model_name(request.model_name)
        await self._repo.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    # ---- helpers -----------------------------------------------------------------------------

    def _versions(self, name: str) -> list[ServedModel]:
        for model, versions in self._repo.list_models():
            if model == name:
                return sorted(versions, key=lambda v: _version_key(v.version))
        raise ModelNotFoundError(f"unknown model {name!r}")

    def _find(self, name: str, version: str) -> ServedModel:
        """A version for metadata and config: the requested one, else the latest ready (or,
        when none is ready, the latest with a parsed config)."""
        if not name:
            raise InvalidInputError("model name is required")
        try:
            served = self._repo.get(name, version)
        except ModelNotReadyError:
            # Known but not ready (loading, failed, unloaded): its config is still worth showing.
            candidates = [
                v
                for model, versions in self._repo.list_models()
                if model == name
                for v in versions
                if not version or v.version == version
            ]
            if not candidates:
                raise
            served = max(candidates, key=lambda v: _version_key(v.version))
        set_model(served.name)
        return served

    async def _infer(
        self, request: pb.ModelInferRequest, deadline: float | None
    ) -> pb.ModelInferResponse:
        if not request.model_name:
            raise InvalidInputError("model_name is required")
        served = self._repo.get(request.model_name, request.model_version)
        set_model(served.name)
        spec = served.spec
        inputs = _inputs(request, spec)
        wanted = _requested_outputs(request, spec)
        results = await served.infer(inputs, deadline=deadline)
        response = pb.ModelInferResponse(
            model_name=served.name, model_version=served.version, id=request.id
        )
        for name, k in wanted:
            arr = results[name]
            tensor = _output_spec(spec, name)
            if k:
                labels = spec.labels if name == spec.outputs[0].name else None
                arr = postprocess.classification(arr, k, labels, batched=spec.batching)
            elif arr.dtype != tensor.np_dtype and tensor.datatype != "BYTES":
                arr = arr.astype(tensor.np_dtype)
            datatype, shape, raw = converters.to_raw(arr)
            response.outputs.add(name=name, datatype=datatype, shape=shape)
            response.raw_output_contents.append(raw)
        return response


def _inputs(request: pb.ModelInferRequest, spec: ModelSpec) -> dict[str, npt.NDArray[Any]]:
    """Request tensors -> arrays, checked against the config (see the module docstring)."""
    expected = {t.name: t for t in spec.inputs}
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInputError(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs "
            "(one per input, in order)"
        )
    arrays: dict[str, npt.NDArray[Any]] = {}
    batch_sizes: dict[str, int] = {}
    for i, tensor in enumerate(request.inputs):
        t = expected.get(tensor.name)
        if t is None:
            raise InvalidInputError(
                f"unknown input {tensor.name!r} for model {spec.name!r} "
                f"(inputs: {', '.join(expected)})"
            )
        if tensor.name in arrays:
            raise InvalidInputError(f"input {tensor.name!r} is given twice")
        if "shared_memory_region" in tensor.parameters:
            raise InvalidInputError(f"input {tensor.name!r}: shared memory is not supported")
        if tensor.datatype != t.datatype:
            raise InvalidInputError(
                f"input {tensor.name!r}: expected datatype {t.datatype}, got "
                f"{tensor.datatype or '(none)'}"
            )
        shape = tuple(int(d) for d in tensor.shape)
        _check_shape(spec, t, shape)
        if spec.batching:
            batch_sizes[tensor.name] = shape[0]
        if raw:
            if tensor.HasField("contents") and tensor.contents.ByteSize():
                # The KServe v2 spec forbids both; silently picking one would hide a client bug.
                raise InvalidInputError(
                    f"input {tensor.name!r}: both contents and raw_input_contents are set; send one"
                )
            arrays[tensor.name] = converters.from_raw(tensor.name, t.datatype, shape, raw[i])
        else:
            arrays[tensor.name] = converters.from_contents(
                tensor.name, t.datatype, shape, tensor.contents
            )
    missing = [name for name in expected if name not in arrays]
    if missing:
        raise InvalidInputError(
            f"missing input(s) {', '.join(map(repr, missing))} for model {spec.name!r}"
        )
    if len(set(batch_sizes.values())) > 1:
        raise InvalidInputError(f"inputs disagree on the batch size: {batch_sizes}")
    return arrays


def _check_shape(spec: ModelSpec, t: TensorSpec, shape: tuple[int, ...]) -> None:
    wanted = [-1, *t.dims] if spec.batching else list(t.dims)
    if any(d < 0 for d in shape):
        # -1 appears in metadata shapes; a request must say how big its tensor is.
        raise InvalidInputError(
            f"input {t.name!r}: shape {list(shape)} has a negative dimension; send the actual "
            f"sizes (model shape {wanted}, -1 = any size)"
        )
    if spec.batching and shape and shape[0] == 0:
        raise InvalidInputError(
            f"input {t.name!r}: batch size 0; send 1 to {spec.max_batch_size} rows "
            f"(shape {wanted}, the first axis is the batch)"
        )
    if spec.batching:
        ok = len(shape) == len(t.dims) + 1 and shape[0] >= 1 and t.matches(shape[1:])
    else:
        ok = t.matches(shape)
    if not ok:
        raise InvalidInputError(
            f"input {t.name!r}: expected shape {wanted}, got {list(shape)}"
            + (" (the first axis is the batch)" if spec.batching else "")
        )
    if spec.batching and shape[0] > spec.max_batch_size:
        raise InvalidInputError(
            f"input {t.name!r}: batch size {shape[0]} exceeds max_batch_size "
            f"{spec.max_batch_size} of model {spec.name!r}"
        )


def _requested_outputs(request: pb.ModelInferRequest, spec: ModelSpec) -> list[tuple[str, int]]:
    """(output name, classification k or 0) in the requested order; all outputs if none."""
    if not request.outputs:
        return [(t.name, 0) for t in spec.outputs]
    names = {t.name for t in spec.outputs}
    wanted: list[tuple[str, int]] = []
    for out in request.outputs:
        if out.name not in names:
            raise InvalidInputError(
                f"unknown output {out.name!r} for model {spec.name!r} "
                f"(outputs: {', '.join(t.name for t in spec.outputs)})"
            )
        if "shared_memory_region" in out.parameters:
            raise InvalidInputError(f"output {out.name!r}: shared memory is not supported")
        k = 0
        if "classification" in out.parameters:
            value = converters.parameter_value(out.parameters["classification"])
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(
                    f"output {out.name!r}: classification must be a positive integer, got {value!r}"
                )
            k = value
        wanted.append((out.name, k))
    return wanted


def _output_spec(spec: ModelSpec, name: str) -> TensorSpec:
    return next(t for t in spec.outputs if t.name == name)


def _metadata(spec: ModelSpec, t: TensorSpec) -> pb.ModelMetadataResponse.TensorMetadata:
    shape = [-1, *t.dims] if spec.batching else list(t.dims)
    return pb.ModelMetadataResponse.TensorMetadata(name=t.name, datatype=t.datatype, shape=shape)


def _statistics(served: ServedModel) -> pb.ModelStatistics:
    """Triton's ModelStatistics from the version's batcher counters (service.batcher.ModelStats).

    Per batch size only compute_infer is known (the batcher times whole batches).
    """
    out = pb.ModelStatistics(name=served.name, version=served.version)
    stats = served.stats
    out.last_inference = stats.last_inference_ms
    out.inference_count = stats.inference_count
    out.execution_count = stats.execution_count
    for field in (
        "success",
        "fail",
        "queue",
        "compute_input",
        "compute_infer",
        "compute_output",
    ):
        d = getattr(stats, field)
        getattr(out.inference_stats, field).CopyFrom(pb.StatisticDuration(count=d.count, ns=d.ns))
    for size in sorted(stats.batches):
        d = stats.batches[size]
        out.batch_stats.add(
            batch_size=size, compute_infer=pb.StatisticDuration(count=d.count, ns=d.ns)
        )
    return out


def _check_repository(name: str) -> None:
    if name:
        raise InvalidInputError(
            f"repository {name!r} not found: convserve serves one repository (leave it empty)"
        )


def _check_model_name(name: str) -> None:
    """An empty name is refused here; the repository refuses paths and traversal (`..`, `/`)."""
    if not name:
        raise InvalidInputError("model_name is required")


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (-1, version)

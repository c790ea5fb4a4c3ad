"""inference.GRPCInferenceService: KServe v2 / Open Inference Protocol plus Triton's extensions.

Wire-compatible with tritonclient and perf_analyzer: health and metadata, ModelInfer (raw or
typed inputs, raw outputs, Triton's classification extension), ModelStreamInfer (errors travel in
`error_message` and the stream goes on), ModelConfig, ModelStatistics and repository control.
Each RPC converts its message (service.servicers.converters), calls the data plane, and converts
the answer back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Final

from service._proto.inference import grpc_service_pb2 as pb
from service._proto.inference import grpc_service_pb2_grpc as pb_grpc
from service.calls import translate
from service.servicers import converters
from service.servicers.rpc import Context, Servicer, deadline_of, rpc

# ModelStreamInfer: requests of one stream being processed at once (each waits in the batcher).
STREAM_WINDOW: Final = 64


class KServeServicer(Servicer, pb_grpc.GRPCInferenceServiceServicer):
    """KServe v2 over the data plane."""

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
        return pb.ServerReadyResponse(ready=self.plane.ready())

    @rpc
    async def ModelReady(  # noqa: N802
        self, request: pb.ModelReadyRequest, context: Context
    ) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self.plane.model_ready(request.name, request.version))

    @rpc
    async def ServerMetadata(  # noqa: N802
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        meta = self.plane.metadata()
        return pb.ServerMetadataResponse(
            name=meta.name, version=meta.version, extensions=list(meta.extensions)
        )

    @rpc
    async def ModelMetadata(  # noqa: N802
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        return converters.model_metadata(self.plane.models.metadata(request.name, request.version))

    @rpc
    async def ModelConfig(  # noqa: N802
        self, request: pb.ModelConfigRequest, context: Context
    ) -> pb.ModelConfigResponse:
        return pb.ModelConfigResponse(
            config=self.plane.models.config(request.name, request.version)
        )

    @rpc
    async def ModelStatistics(  # noqa: N802
        self, request: pb.ModelStatisticsRequest, context: Context
    ) -> pb.ModelStatisticsResponse:
        rows = self.plane.models.statistics(request.name, request.version)
        return pb.ModelStatisticsResponse(
            model_stats=[converters.model_statistics(*row) for row in rows]
        )

    # ---- inference -------------------------------------------------------------------------

    @rpc
    async def ModelInfer(  # noqa: N802
        self, request: pb.ModelInferRequest, context: Context
    ) -> pb.ModelInferResponse:
        answer = await self.plane.infer(converters.infer_request(request), deadline_of(context))
        return converters.infer_response(answer)

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
                answer = await self.plane.infer(converters.infer_request(request), deadline)
                reply = pb.ModelStreamInferResponse(
                    infer_response=converters.infer_response(answer)
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
        entries = self.plane.index(request.repository_name, ready_only=request.ready)
        response = pb.RepositoryIndexResponse()
        for e in entries:
            response.models.add(name=e.name, version=e.version, state=e.state, reason=e.reason)
        return response

    @rpc
    async def RepositoryModelLoad(  # noqa: N802
        self, request: pb.RepositoryModelLoadRequest, context: Context
    ) -> pb.RepositoryModelLoadResponse:
        await self.plane.load(
            request.model_name,
            request.repository_name,
            converters.parameters(request.parameters),
        )
        return pb.RepositoryModelLoadResponse()

    @rpc
    async def RepositoryModelUnload(  # noqa: N802
        self, request: pb.RepositoryModelUnloadRequest, context: Context
    ) -> pb.RepositoryModelUnloadResponse:
        await self.plane.unload(request.model_name, request.repository_name)
        return pb.RepositoryModelUnloadResponse()

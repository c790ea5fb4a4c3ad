"""convserve.v1.Inference: image classification and speech detection as task-level RPCs.

Each RPC converts its message, calls the data plane (service.dataplane) with the client's
deadline, and converts the answer back (service.servicers.converters).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from service._proto.convserve.v1 import inference_pb2 as pb
from service._proto.convserve.v1 import inference_pb2_grpc as pb_grpc
from service.dataplane import ImageTensor, SpeechStream
from service.servicers import converters
from service.servicers.rpc import Context, Servicer, deadline_of, rpc


class TaskServicer(Servicer, pb_grpc.InferenceServicer):
    """convserve.v1.Inference over the data plane."""

    @rpc
    async def ClassifyImage(  # noqa: N802
        self, request: pb.ClassifyImageRequest, context: Context
    ) -> pb.ClassifyImageResponse:
        tensor = request.tensor if request.HasField("tensor") else None
        answer = await self.plane.classify_image(
            model=request.model,
            version=request.version,
            image=request.image or None,
            tensor=None if tensor is None else ImageTensor(tensor.shape, tensor.raw, tensor.values),
            top_k=request.top_k,
            deadline=deadline_of(context),
        )
        return converters.classification(answer)

    @rpc
    async def DetectSpeech(  # noqa: N802
        self, request: pb.DetectSpeechRequest, context: Context
    ) -> pb.DetectSpeechResponse:
        answer = await self.plane.detect_speech(
            model=request.model,
            version=request.version,
            audio=request.audio or None,
            samples=request.samples if len(request.samples) else None,
            sample_rate=request.sample_rate,
            threshold=request.threshold,
            deadline=deadline_of(context),
        )
        return converters.speech_detection(answer)

    @rpc
    async def StreamDetectSpeech(  # noqa: N802
        self, request_iterator: AsyncIterator[pb.StreamDetectSpeechRequest], context: Context
    ) -> AsyncIterator[pb.StreamDetectSpeechResponse]:
        """The first message names the model, rate and threshold; every message carries audio."""
        stream: SpeechStream | None = None
        try:
            async for message in request_iterator:
                if stream is None:
                    stream = self._open(message)
                windows = stream.windower.push(stream.chunk(message.samples, message.pcm_s16le))
                if windows:
                    update = await stream.step(windows, deadline_of(context), final=False)
                    yield converters.speech_update(update)
            if stream is None:  # the client closed without sending anything
                stream = self._open(pb.StreamDetectSpeechRequest())
            final = await stream.step(stream.windower.flush(), deadline_of(context), final=True)
            yield converters.speech_update(final)
        finally:
            if stream is not None:
                self.plane.close_stream(stream)

    @rpc
    async def ListModels(  # noqa: N802
        self, request: pb.ListModelsRequest, context: Context
    ) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(
            models=[converters.model_info(m) for m in self.plane.models.models()]
        )

    @rpc
    async def GetModel(self, request: pb.GetModelRequest, context: Context) -> pb.ModelInfo:  # noqa: N802
        return converters.model_info(self.plane.models.model_info(request.name, request.version))

    def _open(self, first: pb.StreamDetectSpeechRequest) -> SpeechStream:
        return self.plane.open_stream(
            model=first.model,
            version=first.version,
            sample_rate=first.sample_rate,
            threshold=first.threshold,
        )

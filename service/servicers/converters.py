"""gRPC messages <-> data-plane records, for both services; nothing else.

KServe v2 (`inference.ModelInferRequest`) carries a tensor either as one `raw_input_contents`
entry or in the typed `contents` field that matches its datatype (service.datatypes names the
field). The bytes object protobuf hands out for a raw entry is used as it is: the data plane reads
it with np.frombuffer (no copy) and copies it once, into the batch buffer, or not at all when the
request is a batch by itself. Outputs go back as raw bytes, one copy from the result rows: what
tritonclient and perf_analyzer expect.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from service._proto.convserve.v1 import inference_pb2 as task_pb
from service._proto.inference import grpc_service_pb2 as pb
from service.batcher import ModelStats
from service.dataplane import tensors
from service.dataplane.postprocess import WindowResult
from service.dataplane.records import (
    Classification,
    InferInput,
    InferRequest,
    InferResponse,
    ModelInfo,
    ModelMetadata,
    RequestedOutput,
    SpeechDetection,
    SpeechUpdate,
    TensorMetadata,
)
from service.datatypes import DATATYPES, Datatype
from service.errors import InvalidInputError

# -- KServe v2 -------------------------------------------------------------------------------


def infer_request(request: pb.ModelInferRequest) -> InferRequest:
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInputError(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs "
            "(one per input, in order)"
        )
    inputs = [
        InferInput(
            name=t.name,
            datatype=t.datatype,
            shape=tuple(t.shape),
            decode=_raw_decoder(t, raw[i]) if raw else _contents_decoder(t),
            parameters=parameters(t.parameters) if t.parameters else {},
        )
        for i, t in enumerate(request.inputs)
    ]
    outputs = [
        RequestedOutput(o.name, parameters(o.parameters) if o.parameters else {})
        for o in request.outputs
    ]
    return InferRequest(request.model_name, request.model_version, request.id, inputs, outputs)


def _raw_decoder(tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes) -> Any:
    def decode(datatype: Datatype, shape: tuple[int, ...]) -> np.ndarray:
        if tensor.HasField("contents") and tensor.contents.ByteSize():
            # The KServe v2 spec forbids both; silently picking one would hide a client bug.
            raise InvalidInputError(
                f"input {tensor.name!r}: both contents and raw_input_contents are set; send one"
            )
        return tensors.from_raw(tensor.name, datatype, shape, raw)

    return decode


def _contents_decoder(tensor: pb.ModelInferRequest.InferInputTensor) -> Any:
    def decode(datatype: Datatype, shape: tuple[int, ...]) -> np.ndarray:
        field = datatype.contents_field
        if not field:
            raise InvalidInputError(
                f"input {tensor.name!r}: {datatype.name} has no typed contents field; send "
                "raw_input_contents"
            )
        values = getattr(tensor.contents, field)
        return tensors.from_values(tensor.name, datatype, shape, values, field)

    return decode


def infer_response(response: InferResponse) -> pb.ModelInferResponse:
    out = pb.ModelInferResponse(
        model_name=response.model, model_version=response.version, id=response.id
    )
    for tensor in response.outputs:
        datatype, shape, raw = tensors.to_raw(tensor.data)
        out.outputs.add(name=tensor.name, datatype=datatype, shape=shape)
        out.raw_output_contents.append(raw)
    return out


def raw_tensors(
    tensors_: Iterable[
        pb.ModelInferRequest.InferInputTensor | pb.ModelInferResponse.InferOutputTensor
    ],
    raws: Iterable[bytes],
) -> dict[str, np.ndarray]:
    """Raw KServe tensors (a response's outputs, or a request's inputs) -> arrays by name; for
    clients, tests and benchmarks reading a message back."""
    out = {}
    for t, raw in zip(tensors_, raws, strict=True):
        datatype = DATATYPES.get(t.datatype)
        if datatype is None:
            raise InvalidInputError(f"tensor {t.name!r}: unknown datatype {t.datatype!r}")
        out[t.name] = tensors.from_raw(t.name, datatype, tuple(t.shape), raw)
    return out


def parameters(
    params: Mapping[str, pb.InferParameter] | Mapping[str, pb.ModelRepositoryParameter],
) -> dict[str, Any]:
    """InferParameter / ModelRepositoryParameter oneofs -> plain values (unset ones left out)."""
    values: dict[str, Any] = {}
    for key, param in params.items():
        which = param.WhichOneof("parameter_choice")
        if which is not None:
            values[key] = getattr(param, which)
    return values


def tensor_metadata(t: TensorMetadata) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(name=t.name, datatype=t.datatype, shape=t.shape)


def model_metadata(meta: ModelMetadata) -> pb.ModelMetadataResponse:
    return pb.ModelMetadataResponse(
        name=meta.name,
        versions=meta.versions,
        platform=meta.platform,
        inputs=[tensor_metadata(t) for t in meta.inputs],
        outputs=[tensor_metadata(t) for t in meta.outputs],
    )


def model_statistics(name: str, version: str, stats: ModelStats) -> pb.ModelStatistics:
    """Triton's ModelStatistics from the version's batcher counters (service.batcher.stats).

    Per batch size only compute_infer is known (the batcher times whole batches).
    """
    out = pb.ModelStatistics(name=name, version=version)
    out.last_inference = stats.last_inference_ms
    out.inference_count = stats.inference_count
    out.execution_count = stats.execution_count
    for field in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"):
        d = getattr(stats, field)
        getattr(out.inference_stats, field).CopyFrom(pb.StatisticDuration(count=d.count, ns=d.ns))
    for size in sorted(stats.batches):
        d = stats.batches[size]
        out.batch_stats.add(
            batch_size=size, compute_infer=pb.StatisticDuration(count=d.count, ns=d.ns)
        )
    return out


# -- convserve.v1 ----------------------------------------------------------------------------


def classification(answer: Classification) -> task_pb.ClassifyImageResponse:
    return task_pb.ClassifyImageResponse(
        classes=[
            task_pb.Class(index=c.index, label=c.label, score=c.score) for c in answer.classes
        ],
        model=answer.model,
        version=answer.version,
    )


def speech_detection(answer: SpeechDetection) -> task_pb.DetectSpeechResponse:
    return task_pb.DetectSpeechResponse(
        speech_probability=answer.speech_probability,
        is_speech=answer.is_speech,
        windows=windows(answer.windows),
        segments=[task_pb.Segment(start_s=s, end_s=e) for s, e in answer.segments],
        model=answer.model,
        version=answer.version,
        duration_s=answer.duration_s,
    )


def speech_update(update: SpeechUpdate) -> task_pb.StreamDetectSpeechResponse:
    return task_pb.StreamDetectSpeechResponse(
        windows=windows(update.windows),
        segments=[task_pb.Segment(start_s=s, end_s=e) for s, e in update.segments],
        final=update.final,
        model=update.model,
        version=update.version,
    )


def windows(results: Iterable[WindowResult]) -> list[task_pb.Window]:
    return [
        task_pb.Window(start_s=r.start_s, end_s=r.end_s, speech_probability=r.probability)
        for r in results
    ]


def model_info(info: ModelInfo) -> task_pb.ModelInfo:
    out = task_pb.ModelInfo(
        name=info.name, task=info.task, is_default=info.is_default, num_labels=info.num_labels
    )
    for v in info.versions:
        out.versions.add(
            version=v.version,
            state=v.state,
            reason=v.reason,
            provider=v.provider,
            requested_device=v.requested_device,
            max_batch_size=v.max_batch_size,
            batch_buckets=list(v.batch_buckets),
            instances=v.instances,
            inputs=[_tensor_info(t) for t in v.inputs],
            outputs=[_tensor_info(t) for t in v.outputs],
        )
    return out


def _tensor_info(t: TensorMetadata) -> task_pb.TensorInfo:
    return task_pb.TensorInfo(name=t.name, datatype=t.datatype, shape=t.shape)

"""The bad-input matrix's cases as gRPC requests: a case's built `send` fields
(tests/service/bad_inputs.py) to the message of its RPC. Another protocol gets a module like this
one next to it, over the same cases."""

from __future__ import annotations

from typing import Any

import numpy as np

from service._proto.convserve.v1 import inference_pb2 as pb
from service._proto.inference import grpc_service_pb2 as kpb
from tests.service import bad_inputs
from tests.service.bad_inputs import Case

_CONTENTS = {"FP32": "fp32_contents", "FP64": "fp64_contents"}


def _samples(fields: dict[str, Any]) -> dict[str, Any]:
    if "samples" in fields:  # float32 on the wire: round once here, as a client would
        fields["samples"] = np.asarray(fields["samples"], np.float32).tolist()
    return fields


def _model_infer(fields: dict[str, Any]) -> kpb.ModelInferRequest:
    request = kpb.ModelInferRequest(
        model_name=fields.get("model_name", ""), model_version=fields.get("model_version", "")
    )
    for spec in fields["inputs"]:
        x = np.asarray(spec["data"])
        tensor = request.inputs.add(
            name=spec.get("name", "input"),
            datatype=spec["datatype"],
            shape=spec.get("shape", list(x.shape)),
        )
        encoding = spec.get("encoding", "raw")
        if encoding in ("raw", "both"):
            raw = x.tobytes()
            request.raw_input_contents.append(raw[: len(raw) - spec.get("raw_trim", 0)])
        if encoding in ("contents", "both"):
            getattr(tensor.contents, _CONTENTS[spec["datatype"]]).extend(x.ravel().tolist())
    request.raw_input_contents.extend([b""] * fields.get("extra_raw", 0))
    for name in fields.get("outputs", ()):
        request.outputs.add(name=name)
    return request


def grpc_request(case: Case, rng: np.random.Generator) -> Any:
    """The case's request message (a list of messages for a stream), built fresh."""
    fields = bad_inputs.build(case.send, rng)
    if case.rpc == "ClassifyImage":
        if "tensor" in fields:
            fields["tensor"] = pb.Tensor(**fields["tensor"])
        return pb.ClassifyImageRequest(**fields)
    if case.rpc == "DetectSpeech":
        return pb.DetectSpeechRequest(**_samples(fields))
    if case.rpc == "StreamDetectSpeech":
        return [pb.StreamDetectSpeechRequest(**chunk) for chunk in fields["chunks"]]
    assert case.rpc == "ModelInfer", case.rpc
    return _model_infer(fields)

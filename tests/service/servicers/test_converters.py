"""service.servicers.converters: KServe and convserve.v1 messages <-> data-plane records."""

from __future__ import annotations

import numpy as np
import pytest

from service._proto.inference import grpc_service_pb2 as pb
from service.dataplane.records import InferResponse, OutputTensor
from service.datatypes import DATATYPES
from service.errors import InvalidInputError
from service.servicers import converters


def _decode(request: pb.ModelInferRequest, index: int = 0) -> np.ndarray:
    record = converters.infer_request(request).inputs[index]
    return record.decode(DATATYPES[record.datatype], record.shape)


def test_parameters() -> None:
    params = {
        "a": pb.InferParameter(int64_param=3),
        "b": pb.InferParameter(string_param="x"),
        "c": pb.InferParameter(bool_param=True),
        "d": pb.InferParameter(),
    }
    assert converters.parameters(params) == {"a": 3, "b": "x", "c": True}


def test_raw_inputs_are_read_without_a_copy(rng: np.random.Generator) -> None:
    x = rng.standard_normal((2, 3)).astype(np.float32)
    request = pb.ModelInferRequest(model_name="m", model_version="2", id="r1")
    request.inputs.add(name="x", datatype="FP32", shape=[2, 3])
    request.raw_input_contents.append(x.tobytes())
    request.outputs.add(name="y").parameters["classification"].int64_param = 2
    record = converters.infer_request(request)
    assert (record.model, record.version, record.id) == ("m", "2", "r1")
    assert record.outputs[0].name == "y" and record.outputs[0].parameters == {"classification": 2}
    arr = _decode(request)
    np.testing.assert_array_equal(arr, x)
    assert not arr.flags.owndata  # a view over the message's bytes


def test_typed_contents(rng: np.random.Generator) -> None:
    values = rng.standard_normal(6).astype(np.float32)
    request = pb.ModelInferRequest(model_name="m")
    t = request.inputs.add(name="x", datatype="FP32", shape=[2, 3])
    t.contents.fp32_contents.extend(values.tolist())
    np.testing.assert_array_equal(_decode(request), values.reshape(2, 3))
    ints = pb.ModelInferRequest(model_name="m")
    ints.inputs.add(name="i", datatype="INT8", shape=[3]).contents.int_contents.extend([1, -2, 3])
    assert _decode(ints).dtype == np.int8
    big = pb.ModelInferRequest(model_name="m")
    big.inputs.add(name="i", datatype="INT8", shape=[1]).contents.int_contents.append(300)
    with pytest.raises(InvalidInputError, match="out of range for INT8"):
        _decode(big)
    half = pb.ModelInferRequest(model_name="m")
    half.inputs.add(name="h", datatype="FP16", shape=[1])
    with pytest.raises(InvalidInputError, match="FP16 has no typed contents"):
        _decode(half)


def test_raw_and_contents_conflicts() -> None:
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="x", datatype="FP32", shape=[1]).contents.fp32_contents.append(1.0)
    request.raw_input_contents.append(np.float32(1.0).tobytes())
    with pytest.raises(InvalidInputError, match="both contents and raw_input_contents"):
        _decode(request)
    request.inputs.add(name="z", datatype="FP32", shape=[1])
    request.raw_input_contents.append(b"")
    request.raw_input_contents.append(b"")
    with pytest.raises(InvalidInputError, match="3 entries for 2 inputs"):
        converters.infer_request(request)


def test_outputs_go_back_raw(rng: np.random.Generator) -> None:
    y = rng.standard_normal((2, 3)).astype(np.float32)
    labels = np.array([[b"0.5:1:dog"], [b"0.9:0:cat"]], dtype=object)
    answer = InferResponse(
        "m",
        "1",
        "r",
        [OutputTensor("y", "FP32", y.shape, y), OutputTensor("c", "BYTES", (2, 1), labels)],
    )
    out = converters.infer_response(answer)
    assert (out.model_name, out.model_version, out.id) == ("m", "1", "r")
    assert [(o.name, o.datatype, list(o.shape)) for o in out.outputs] == [
        ("y", "FP32", [2, 3]),
        ("c", "BYTES", [2, 1]),
    ]
    assert out.raw_output_contents[0] == y.tobytes()

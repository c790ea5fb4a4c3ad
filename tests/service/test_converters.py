"""service.servicers.converters: KServe tensors and convserve.v1 tensors <-> numpy."""

from __future__ import annotations

import numpy as np
import pytest

from service._proto.convserve.v1 import inference_pb2 as task_pb2
from service._proto.inference import grpc_service_pb2 as pb
from service.errors import InvalidInputError
from service.servicers import converters

FIXED = [d for d in converters.DATATYPES if d != "BYTES"]


@pytest.mark.parametrize("datatype", FIXED)
def test_raw_round_trip_every_fixed_datatype(datatype: str, rng: np.random.Generator) -> None:
    dtype = converters.DATATYPES[datatype]
    if dtype.kind == "b":
        arr = rng.random((2, 3)) > 0.5
    elif dtype.kind == "f":
        arr = rng.standard_normal((2, 3)).astype(dtype)
    else:
        info = np.iinfo(dtype)
        arr = rng.integers(info.min, info.max, (2, 3), dtype=dtype, endpoint=True)
    name, shape, raw = converters.to_raw(arr)
    assert name == datatype and shape == [2, 3]
    assert raw == arr.astype(dtype.newbyteorder("<")).tobytes()
    back = converters.from_raw("x", datatype, shape, raw)
    np.testing.assert_array_equal(back, arr)
    assert back.dtype == dtype


def test_from_raw_is_zero_copy(rng: np.random.Generator) -> None:
    raw = rng.standard_normal(12).astype("<f4").tobytes()
    arr = converters.from_raw("x", "FP32", [3, 4], raw)
    assert not arr.flags.owndata and not arr.flags.writeable  # a view over the message bytes


@pytest.mark.parametrize(
    ("datatype", "shape", "size", "message"),
    [
        ("FP32", [2, 3], 20, "raw content is 20 bytes, expected 24"),
        ("FP16", [4], 6, "expected 8"),
        ("FP32", [-1, 3], 12, "negative dimension"),
        ("BF16", [1], 2, "unsupported datatype 'BF16'"),
    ],
)
def test_from_raw_rejects_bad_sizes(
    datatype: str, shape: list[int], size: int, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        converters.from_raw("x", datatype, shape, b"\0" * size)


def test_bytes_encoding_is_length_prefixed() -> None:
    raw = converters.serialize_bytes([b"ab", "é", b""])
    assert raw == b"\x02\0\0\0ab" + b"\x02\0\0\0" + "é".encode() + b"\0\0\0\0"
    assert converters.deserialize_bytes(raw) == [b"ab", "é".encode(), b""]
    arr = converters.from_raw("s", "BYTES", [3], raw)
    assert arr.dtype == object and arr.tolist() == [b"ab", "é".encode(), b""]
    with pytest.raises(InvalidInputError, match="runs past the end"):
        converters.deserialize_bytes(b"\x05\0\0\0ab")
    with pytest.raises(InvalidInputError, match="truncated"):
        converters.deserialize_bytes(b"\x01\0")
    with pytest.raises(InvalidInputError, match="3 BYTES elements for shape"):
        converters.from_raw("s", "BYTES", [2], raw)


def test_to_raw_bytes_output() -> None:
    arr = np.array([[b"0.5:1:dog", b"0.2:0:cat"]], dtype=object)
    datatype, shape, raw = converters.to_raw(arr)
    assert (datatype, shape) == ("BYTES", [1, 2])
    assert converters.deserialize_bytes(raw) == [b"0.5:1:dog", b"0.2:0:cat"]


def test_typed_contents(rng: np.random.Generator) -> None:
    values = rng.standard_normal(6).astype(np.float32)
    contents = pb.InferTensorContents(fp32_contents=values.tolist())
    arr = converters.from_contents("x", "FP32", [2, 3], contents)
    np.testing.assert_array_equal(arr, values.reshape(2, 3))
    ints = pb.InferTensorContents(int_contents=[1, -2, 3])
    assert converters.from_contents("i", "INT8", [3], ints).dtype == np.int8
    with pytest.raises(InvalidInputError, match="out of range for INT8"):
        converters.from_contents("i", "INT8", [1], pb.InferTensorContents(int_contents=[300]))
    with pytest.raises(InvalidInputError, match="5 values in fp32_contents for shape"):
        converters.from_contents("x", "FP32", [2, 3], pb.InferTensorContents(fp32_contents=[1] * 5))
    with pytest.raises(InvalidInputError, match="FP16 has no typed contents"):
        converters.from_contents("h", "FP16", [1], pb.InferTensorContents())
    strings = pb.InferTensorContents(bytes_contents=[b"a", b"bc"])
    assert converters.from_contents("s", "BYTES", [2], strings).tolist() == [b"a", b"bc"]


def test_parameter_value() -> None:
    assert converters.parameter_value(pb.InferParameter(int64_param=3)) == 3
    assert converters.parameter_value(pb.InferParameter(string_param="x")) == "x"
    assert converters.parameter_value(pb.InferParameter(bool_param=True)) is True
    assert converters.parameter_value(pb.InferParameter()) is None


def test_task_tensor(rng: np.random.Generator) -> None:
    x = rng.standard_normal((1, 8, 8)).astype(np.float32)
    raw = task_pb2.Tensor(shape=[1, 8, 8], raw=x.tobytes())
    np.testing.assert_array_equal(converters.task_tensor(raw, (1, 8, 8)), x)
    values = task_pb2.Tensor(values=x.ravel().tolist())  # no shape: the model's dims
    np.testing.assert_array_equal(converters.task_tensor(values, (1, 8, 8)), x)
    with pytest.raises(InvalidInputError, match="exactly one of raw and values"):
        converters.task_tensor(task_pb2.Tensor(raw=x.tobytes(), values=[1.0]), (1, 8, 8))
    with pytest.raises(InvalidInputError, match="raw is 12 bytes, expected 256"):
        converters.task_tensor(task_pb2.Tensor(raw=b"\0" * 12), (1, 8, 8))
    with pytest.raises(InvalidInputError, match="must be given"):
        converters.task_tensor(task_pb2.Tensor(values=[1.0]), (1, -1, -1))


def test_datatype_of() -> None:
    assert converters.datatype_of(np.dtype(np.float16)) == "FP16"
    assert converters.datatype_of(np.dtype(">f4")) == "FP32"
    assert converters.datatype_of(np.dtype("S3")) == "BYTES"
    with pytest.raises(ValueError, match="no KServe datatype"):
        converters.datatype_of(np.dtype(np.complex64))

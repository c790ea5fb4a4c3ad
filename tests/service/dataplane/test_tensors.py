"""service.dataplane.tensors: raw bytes and value lists <-> numpy, for both protocols; the task
API's preprocessed image tensors."""

from __future__ import annotations

import numpy as np
import pytest

from service.dataplane import ImageTensor, tensors
from service.datatypes import DATATYPES
from service.errors import InvalidInputError

FIXED = [d for d in DATATYPES if d != "BYTES"]


@pytest.mark.parametrize("datatype", FIXED)
def test_raw_round_trip_every_fixed_datatype(datatype: str, rng: np.random.Generator) -> None:
    dtype = DATATYPES[datatype].dtype
    if dtype.kind == "b":
        arr = rng.random((2, 3)) > 0.5
    elif dtype.kind == "f":
        arr = rng.standard_normal((2, 3)).astype(dtype)
    else:
        info = np.iinfo(dtype)
        arr = rng.integers(info.min, info.max, (2, 3), dtype=dtype, endpoint=True)
    name, shape, raw = tensors.to_raw(arr)
    assert name == datatype and shape == [2, 3]
    assert raw == arr.astype(dtype.newbyteorder("<")).tobytes()
    back = tensors.from_raw("x", DATATYPES[datatype], shape, raw)
    np.testing.assert_array_equal(back, arr)
    assert back.dtype == dtype


def test_from_raw_is_zero_copy(rng: np.random.Generator) -> None:
    raw = rng.standard_normal(12).astype("<f4").tobytes()
    arr = tensors.from_raw("x", DATATYPES["FP32"], [3, 4], raw)
    assert not arr.flags.owndata and not arr.flags.writeable  # a view over the message bytes


@pytest.mark.parametrize(
    ("datatype", "shape", "size", "message"),
    [
        ("FP32", [2, 3], 20, "raw content is 20 bytes, expected 24"),
        ("FP16", [4], 6, "expected 8"),
        ("FP32", [-1, 3], 12, "negative dimension"),
    ],
)
def test_from_raw_rejects_bad_sizes(
    datatype: str, shape: list[int], size: int, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        tensors.from_raw("x", DATATYPES[datatype], shape, b"\0" * size)


def test_bytes_encoding_is_length_prefixed() -> None:
    raw = tensors.serialize_bytes([b"ab", "é", b""])
    assert raw == b"\x02\0\0\0ab" + b"\x02\0\0\0" + "é".encode() + b"\0\0\0\0"
    assert tensors.deserialize_bytes(raw) == [b"ab", "é".encode(), b""]
    arr = tensors.from_raw("s", DATATYPES["BYTES"], [3], raw)
    assert arr.dtype == object and arr.tolist() == [b"ab", "é".encode(), b""]
    with pytest.raises(InvalidInputError, match="runs past the end"):
        tensors.deserialize_bytes(b"\x05\0\0\0ab")
    with pytest.raises(InvalidInputError, match="truncated"):
        tensors.deserialize_bytes(b"\x01\0")
    with pytest.raises(InvalidInputError, match="3 BYTES elements for shape"):
        tensors.from_raw("s", DATATYPES["BYTES"], [2], raw)


def test_to_raw_bytes_output() -> None:
    arr = np.array([[b"0.5:1:dog", b"0.2:0:cat"]], dtype=object)
    datatype, shape, raw = tensors.to_raw(arr)
    assert (datatype, shape) == ("BYTES", [1, 2])
    assert tensors.deserialize_bytes(raw) == [b"0.5:1:dog", b"0.2:0:cat"]


def test_values(rng: np.random.Generator) -> None:
    values = rng.standard_normal(6).astype(np.float32)
    arr = tensors.from_values("x", DATATYPES["FP32"], [2, 3], values.tolist(), "data")
    np.testing.assert_array_equal(arr, values.reshape(2, 3))
    assert tensors.from_values("i", DATATYPES["INT8"], [3], [1, -2, 3], "d").dtype == np.int8
    with pytest.raises(InvalidInputError, match="out of range for INT8"):
        tensors.from_values("i", DATATYPES["INT8"], [1], [300], "int_contents")
    with pytest.raises(InvalidInputError, match="5 values in fp32_contents for shape"):
        tensors.from_values("x", DATATYPES["FP32"], [2, 3], [1.0] * 5, "fp32_contents")
    with pytest.raises(InvalidInputError, match="INT32 values must be integers"):
        tensors.from_values("i", DATATYPES["INT32"], [2], [1, 2.5], "data")
    with pytest.raises(InvalidInputError, match="must hold FP32 values"):
        tensors.from_values("x", DATATYPES["FP32"], [2], ["a", "b"], "data")
    with pytest.raises(InvalidInputError, match="BOOL values must be true or false"):
        tensors.from_values("b", DATATYPES["BOOL"], [2], [0, 1], "data")
    strings = tensors.from_values("s", DATATYPES["BYTES"], [2], [b"a", "bc"], "data")
    assert strings.tolist() == [b"a", b"bc"]


def test_image_tensor(rng: np.random.Generator) -> None:
    x = rng.standard_normal((1, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(ImageTensor([1, 8, 8], raw=x.tobytes()).array((1, 8, 8)), x)
    values = ImageTensor([], values=x.ravel().tolist())  # no shape: the model's dims
    np.testing.assert_array_equal(values.array((1, 8, 8)), x)
    with pytest.raises(InvalidInputError, match="exactly one of raw and values"):
        ImageTensor([1, 8, 8], raw=x.tobytes(), values=[1.0]).array((1, 8, 8))
    with pytest.raises(InvalidInputError, match="raw is 12 bytes, expected 256"):
        ImageTensor([], raw=b"\0" * 12).array((1, 8, 8))
    with pytest.raises(InvalidInputError, match="must be given"):
        ImageTensor([], values=[1.0]).array((1, -1, -1))


def test_to_raw_names_the_datatype_of_any_byte_order() -> None:
    assert tensors.to_raw(np.zeros(2, np.float16))[0] == "FP16"
    name, _, raw = tensors.to_raw(np.array([1.5, 2.0], dtype=">f4"))
    assert name == "FP32" and raw == np.array([1.5, 2.0], "<f4").tobytes()  # sent little-endian
    assert tensors.to_raw(np.array([b"abc"], dtype="S3"))[0] == "BYTES"
    with pytest.raises(ValueError, match="no KServe datatype"):
        tensors.to_raw(np.zeros(1, np.complex64))

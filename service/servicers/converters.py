"""Protobuf tensors <-> numpy arrays, for both wire protocols.

KServe v2 (`inference.ModelInferRequest`) carries a tensor either as one `raw_input_contents`
entry (little-endian bytes, row-major; BYTES elements each prefixed by a 4-byte little-endian
length) or in the typed `contents` field that matches its datatype. Raw bytes become a read-only
array over the request's own buffer (np.frombuffer, no copy) after the length is checked against
the shape. Outputs always go back as raw bytes: what tritonclient and perf_analyzer expect.

convserve.v1 carries float32 tensors as `Tensor{shape, raw | values}`.

Every problem with the client's data raises InvalidInputError naming the tensor.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from service._proto.convserve.v1 import inference_pb2 as task_pb2
from service._proto.inference import grpc_service_pb2 as pb
from service.errors import InvalidInputError

# KServe v2 datatype names → numpy dtypes (little-endian, as on the wire). BF16 has no numpy dtype.
DATATYPES: Final[Mapping[str, np.dtype[Any]]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(np.object_),
}
# Which typed `contents` field carries each datatype (KServe v2 spec); FP16 travels raw only.
_CONTENTS_FIELD: Final[Mapping[str, str]] = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_LENGTH: Final = struct.Struct("<I")


def datatype_of(dtype: np.dtype[Any]) -> str:
    """The KServe datatype name of a numpy dtype (object and bytes arrays are BYTES)."""
    if dtype.kind in "OSU":
        return "BYTES"
    for name, candidate in DATATYPES.items():
        if candidate.kind == dtype.kind and candidate.itemsize == dtype.itemsize:
            return name
    raise ValueError(f"numpy dtype {dtype} has no KServe datatype")


def num_elements(name: str, shape: Sequence[int]) -> int:
    """Element count of a client-declared shape, refusing negative dimensions."""
    if any(d < 0 for d in shape):
        raise InvalidInputError(f"input {name!r}: shape {list(shape)} has a negative dimension")
    return math.prod(shape)


def dtype_for(name: str, datatype: str) -> np.dtype[Any]:
    try:
        return DATATYPES[datatype]
    except KeyError:
        raise InvalidInputError(
            f"input {name!r}: unsupported datatype {datatype!r} (one of {', '.join(DATATYPES)})"
        ) from None


def from_raw(name: str, datatype: str, shape: Sequence[int], raw: bytes) -> npt.NDArray[Any]:
    """A raw_input_contents entry -> array of `shape` (zero-copy for fixed-size datatypes)."""
    dtype = dtype_for(name, datatype)
    count = num_elements(name, shape)
    if datatype == "BYTES":
        items = deserialize_bytes(raw, name)
        if len(items) != count:
            raise InvalidInputError(
                f"input {name!r}: {len(items)} BYTES elements for shape {list(shape)} "
                f"({count} expected)"
            )
        return np.array(items, dtype=np.object_).reshape(tuple(shape))
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise InvalidInputError(
            f"input {name!r}: raw content is {len(raw)} bytes, expected {expected} "
            f"for shape {list(shape)} {datatype}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(tuple(shape))


def from_contents(
    name: str, datatype: str, shape: Sequence[int], contents: pb.InferTensorContents
) -> npt.NDArray[Any]:
    """A typed `contents` field -> array of `shape`."""
    dtype = dtype_for(name, datatype)
    field = _CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidInputError(
            f"input {name!r}: {datatype} has no typed contents field; send raw_input_contents"
        )
    values = getattr(contents, field)
    count = num_elements(name, shape)
    if len(values) != count:
        raise InvalidInputError(
            f"input {name!r}: {len(values)} values in {field} for shape {list(shape)} "
            f"({count} expected)"
        )
    if datatype == "BYTES":
        return np.array(list(values), dtype=np.object_).reshape(tuple(shape))
    info_min, info_max = _range(dtype)
    arr = np.asarray(values, dtype=np.float64 if dtype.kind == "f" else None)
    if dtype.kind in "iu" and arr.size and (arr.min() < info_min or arr.max() > info_max):
        raise InvalidInputError(f"input {name!r}: values out of range for {datatype}")
    return arr.astype(dtype).reshape(tuple(shape))


def to_raw(arr: npt.NDArray[Any]) -> tuple[str, list[int], bytes]:
    """An output array -> (datatype, shape, raw little-endian bytes)."""
    datatype = datatype_of(arr.dtype)
    if datatype == "BYTES":
        return datatype, list(arr.shape), serialize_bytes(arr.reshape(-1).tolist())
    wire = DATATYPES[datatype]
    return datatype, list(arr.shape), np.ascontiguousarray(arr, dtype=wire).tobytes()


def serialize_bytes(items: Sequence[bytes | str]) -> bytes:
    """BYTES elements -> the raw encoding: each element as a uint32 LE length then its bytes."""
    parts: list[bytes] = []
    for item in items:
        data = item.encode("utf-8") if isinstance(item, str) else bytes(item)
        parts.append(_LENGTH.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def deserialize_bytes(raw: bytes, name: str = "") -> list[bytes]:
    """The raw BYTES encoding -> its elements; truncation is an InvalidInputError."""
    items: list[bytes] = []
    offset, end = 0, len(raw)
    while offset < end:
        if offset + 4 > end:
            raise InvalidInputError(f"input {name!r}: truncated BYTES length prefix")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > end:
            raise InvalidInputError(f"input {name!r}: BYTES element runs past the end")
        items.append(bytes(raw[offset : offset + length]))
        offset += length
    return items


def parameter_value(param: pb.InferParameter) -> bool | int | float | str | None:
    """The value of an InferParameter oneof, or None when unset."""
    which = param.WhichOneof("parameter_choice")
    return None if which is None else getattr(param, which)


def task_tensor(tensor: task_pb2.Tensor, dims: Sequence[int]) -> npt.NDArray[np.float32]:
    """convserve.v1.Tensor (float32, no batch axis) -> array; an empty shape means `dims`."""
    if tensor.raw and tensor.values:
        raise InvalidInputError("tensor: set exactly one of raw and values")
    shape = list(tensor.shape) or [int(d) for d in dims]
    if any(d < 0 for d in shape):
        raise InvalidInputError(f"tensor: shape {shape} must be given (the model's is dynamic)")
    count = math.prod(shape)
    if tensor.raw:
        if len(tensor.raw) != count * 4:
            raise InvalidInputError(
                f"tensor: raw is {len(tensor.raw)} bytes, expected {count * 4} "
                f"(float32 × shape {shape})"
            )
        return np.frombuffer(tensor.raw, dtype="<f4").reshape(shape)
    if len(tensor.values) != count:
        raise InvalidInputError(f"tensor: {len(tensor.values)} values for shape {shape}")
    return np.asarray(tensor.values, dtype=np.float32).reshape(shape)


def _range(dtype: np.dtype[Any]) -> tuple[int, int]:
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return int(info.min), int(info.max)
    return 0, 0

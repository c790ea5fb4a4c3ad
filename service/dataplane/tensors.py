"""Tensor payloads <-> numpy arrays, in the two forms both wire protocols share.

* **raw bytes**: little-endian, row-major; BYTES elements each prefixed by a 4-byte little-endian
  length. KServe gRPC's `raw_input_contents` / `raw_output_contents` and the HTTP binary tensor
  extension both carry exactly this. Fixed-size datatypes become a read-only array over the
  caller's buffer (np.frombuffer, no copy) once the length is checked against the shape.
* **values**: a flat sequence of numbers, bools or strings — gRPC's typed `contents` fields and
  the HTTP JSON `data` (flattened) — checked for count and integer range.

Every problem with the client's data raises InvalidInputError naming the tensor.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from service.datatypes import Datatype, of_array
from service.errors import InvalidInputError
from service.preprocess.image import check_raw_tensor

_LENGTH: Final = struct.Struct("<I")


def element_count(name: str, shape: Sequence[int]) -> int:
    """Element count of a client-declared shape, refusing negative dimensions."""
    if any(d < 0 for d in shape):
        raise InvalidInputError(f"input {name!r}: shape {list(shape)} has a negative dimension")
    return math.prod(shape)


def from_raw(
    name: str, datatype: Datatype, shape: Sequence[int], raw: bytes | memoryview
) -> npt.NDArray[Any]:
    """Raw bytes -> array of `shape` (zero-copy for fixed-size datatypes)."""
    count = element_count(name, shape)
    if datatype.is_bytes:
        items = deserialize_bytes(raw, name)
        if len(items) != count:
            raise InvalidInputError(
                f"input {name!r}: {len(items)} BYTES elements for shape {list(shape)} "
                f"({count} expected)"
            )
        return np.array(items, dtype=np.object_).reshape(tuple(shape))
    expected = count * datatype.dtype.itemsize
    if len(raw) != expected:
        raise InvalidInputError(
            f"input {name!r}: raw content is {len(raw)} bytes, expected {expected} "
            f"for shape {list(shape)} {datatype.name}"
        )
    return np.frombuffer(raw, dtype=datatype.dtype).reshape(tuple(shape))


def from_values(
    name: str, datatype: Datatype, shape: Sequence[int], values: Sequence[Any], where: str
) -> npt.NDArray[Any]:
    """A flat sequence of values -> array of `shape`; `where` names the field in messages."""
    count = element_count(name, shape)
    if len(values) != count:
        raise InvalidInputError(
            f"input {name!r}: {len(values)} values in {where} for shape {list(shape)} "
            f"({count} expected)"
        )
    if datatype.is_bytes:
        items = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in values]
        return np.array(items, dtype=np.object_).reshape(tuple(shape))
    dtype = datatype.dtype
    try:
        arr = np.asarray(values, dtype=np.float64 if dtype.kind == "f" else None)
    except (TypeError, ValueError):
        raise InvalidInputError(
            f"input {name!r}: {where} must hold {datatype.name} values"
        ) from None
    if arr.size and arr.dtype.kind not in "biuf":
        raise InvalidInputError(f"input {name!r}: {where} must hold {datatype.name} values")
    if dtype.kind in "iu" and arr.size:
        if arr.dtype.kind == "f" and not np.all(np.mod(arr, 1) == 0):
            raise InvalidInputError(f"input {name!r}: {datatype.name} values must be integers")
        info = np.iinfo(dtype)
        if arr.min() < info.min or arr.max() > info.max:
            raise InvalidInputError(f"input {name!r}: values out of range for {datatype.name}")
    if dtype.kind == "b" and arr.size and arr.dtype.kind != "b":
        raise InvalidInputError(f"input {name!r}: BOOL values must be true or false")
    return arr.astype(dtype).reshape(tuple(shape))


def to_raw(arr: npt.NDArray[Any]) -> tuple[str, list[int], bytes]:
    """An output array -> (datatype, shape, raw little-endian bytes): one copy, from the array
    straight into the bytes object."""
    datatype = of_array(arr.dtype)
    if datatype.is_bytes:
        return datatype.name, list(arr.shape), serialize_bytes(arr.reshape(-1).tolist())
    return datatype.name, list(arr.shape), np.ascontiguousarray(arr, dtype=datatype.dtype).tobytes()


def serialize_bytes(items: Sequence[bytes | str]) -> bytes:
    """BYTES elements -> the raw encoding: each element as a uint32 LE length then its bytes."""
    parts: list[bytes] = []
    for item in items:
        data = item.encode("utf-8") if isinstance(item, str) else bytes(item)
        parts.append(_LENGTH.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def deserialize_bytes(raw: bytes | memoryview, name: str = "") -> list[bytes]:
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


class ImageTensor:
    """An already preprocessed image (C×H×W float32, no batch axis): raw bytes or values.

    An empty shape means the model's input dims.
    """

    def __init__(
        self, shape: Sequence[int], raw: bytes = b"", values: Sequence[float] = ()
    ) -> None:
        self.shape = list(shape)
        self.raw = raw
        self.values = values

    def array(self, dims: Sequence[int]) -> npt.NDArray[np.float32]:
        """Worker thread: the checked array."""
        if self.raw and len(self.values):
            raise InvalidInputError("tensor: set exactly one of raw and values")
        shape = self.shape or [int(d) for d in dims]
        if any(d < 0 for d in shape):
            raise InvalidInputError(f"tensor: shape {shape} must be given (the model's is dynamic)")
        count = math.prod(shape)
        if self.raw:
            if len(self.raw) != count * 4:
                raise InvalidInputError(
                    f"tensor: raw is {len(self.raw)} bytes, expected {count * 4} "
                    f"(float32 × shape {shape})"
                )
            arr = np.frombuffer(self.raw, dtype="<f4").reshape(shape)
        else:
            if len(self.values) != count:
                raise InvalidInputError(f"tensor: {len(self.values)} values for shape {shape}")
            arr = np.asarray(self.values, dtype=np.float32).reshape(shape)
        return check_raw_tensor(arr, dims)

"""Tensor datatypes: one table from which every other spelling is looked up.

A datatype has four names in convserve: the KServe v2 name on the wire (`FP32`), the numpy dtype
the arrays carry (little-endian, as on the wire), Triton's config enum in config.pbtxt
(`TYPE_FP32`) and ONNX Runtime's type string (`tensor(float)`). `DATATYPES` holds them side by
side; the lookups below are the only way the rest of the service converts between them.

BYTES is Triton's `TYPE_STRING` and ONNX's `tensor(string)`, carried as numpy object arrays of
`bytes`. BF16 has no numpy dtype, so a model using it is refused at load time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from service._proto.inference import model_config_pb2

_Enum = model_config_pb2.DataType


@dataclass(frozen=True)
class Datatype:
    """One datatype under its four names, plus the KServe v2 typed-contents field carrying it
    (empty: raw bytes only, as for FP16)."""

    name: str
    dtype: np.dtype[Any]
    config_enum: int
    onnx_type: str
    contents_field: str

    @property
    def is_bytes(self) -> bool:
        return self.name == "BYTES"


_ROWS = (
    Datatype("BOOL", np.dtype(np.bool_), _Enum.TYPE_BOOL, "tensor(bool)", "bool_contents"),
    Datatype("UINT8", np.dtype("u1"), _Enum.TYPE_UINT8, "tensor(uint8)", "uint_contents"),
    Datatype("UINT16", np.dtype("<u2"), _Enum.TYPE_UINT16, "tensor(uint16)", "uint_contents"),
    Datatype("UINT32", np.dtype("<u4"), _Enum.TYPE_UINT32, "tensor(uint32)", "uint_contents"),
    Datatype("UINT64", np.dtype("<u8"), _Enum.TYPE_UINT64, "tensor(uint64)", "uint64_contents"),
    Datatype("INT8", np.dtype("i1"), _Enum.TYPE_INT8, "tensor(int8)", "int_contents"),
    Datatype("INT16", np.dtype("<i2"), _Enum.TYPE_INT16, "tensor(int16)", "int_contents"),
    Datatype("INT32", np.dtype("<i4"), _Enum.TYPE_INT32, "tensor(int32)", "int_contents"),
    Datatype("INT64", np.dtype("<i8"), _Enum.TYPE_INT64, "tensor(int64)", "int64_contents"),
    Datatype("FP16", np.dtype("<f2"), _Enum.TYPE_FP16, "tensor(float16)", ""),
    Datatype("FP32", np.dtype("<f4"), _Enum.TYPE_FP32, "tensor(float)", "fp32_contents"),
    Datatype("FP64", np.dtype("<f8"), _Enum.TYPE_FP64, "tensor(double)", "fp64_contents"),
    Datatype("BYTES", np.dtype(np.object_), _Enum.TYPE_STRING, "tensor(string)", "bytes_contents"),
)
DATATYPES: Mapping[str, Datatype] = MappingProxyType({d.name: d for d in _ROWS})
_BY_ENUM = {d.config_enum: d for d in _ROWS}
_BY_ONNX = {d.onnx_type: d for d in _ROWS}
_BY_DTYPE = {d.dtype: d for d in _ROWS if not d.is_bytes}  # the common case, one lookup


def by_name(name: str) -> Datatype | None:
    """The datatype with this KServe name (`FP32`), or None."""
    return DATATYPES.get(name)


def by_config_enum(value: int) -> Datatype | None:
    """The datatype of a config.pbtxt `data_type` (`TYPE_FP32`), or None (BF16, invalid)."""
    return _BY_ENUM.get(value)


def by_onnx_type(onnx_type: str) -> Datatype | None:
    """The datatype of an ONNX Runtime NodeArg.type (`tensor(float)`), or None."""
    return _BY_ONNX.get(onnx_type)


def of_array(dtype: np.dtype[Any]) -> Datatype:
    """The datatype of a numpy dtype, whatever its byte order; object and str arrays are BYTES.

    ValueError for a dtype with no KServe datatype (complex numbers, datetimes, ...).
    """
    row = _BY_DTYPE.get(dtype)
    if row is not None:
        return row
    if dtype.kind in "OSU":
        return DATATYPES["BYTES"]
    for row in _ROWS:
        if row.dtype.kind == dtype.kind and row.dtype.itemsize == dtype.itemsize:
            return row
    raise ValueError(f"numpy dtype {dtype} has no KServe datatype")


def name_of(dtype: np.dtype[Any]) -> str:
    """The KServe name of a numpy dtype, or the numpy name when it has none (for messages)."""
    try:
        return of_array(dtype).name
    except ValueError:
        return str(dtype)

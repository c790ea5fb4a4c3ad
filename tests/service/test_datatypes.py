"""service.datatypes: one table, every spelling of a datatype looked up from it."""

from __future__ import annotations

import numpy as np
import pytest

from service import datatypes
from service._proto.inference import model_config_pb2

ALL = list(datatypes.DATATYPES.values())


@pytest.mark.parametrize("row", ALL, ids=lambda r: r.name)
def test_every_spelling_leads_back_to_the_same_row(row: datatypes.Datatype) -> None:
    assert datatypes.by_name(row.name) is row
    assert datatypes.by_config_enum(row.config_enum) is row
    assert datatypes.by_onnx_type(row.onnx_type) is row
    assert datatypes.of_array(row.dtype) is row
    assert model_config_pb2.DataType.Name(row.config_enum).removeprefix("TYPE_") in (
        row.name,
        "STRING",  # Triton's TYPE_STRING is KServe's BYTES
    )


def test_wire_byte_order_is_little_endian() -> None:
    for row in ALL:
        if row.dtype.itemsize > 1 and row.dtype.kind in "iuf":
            assert row.dtype.byteorder in ("<", "=")  # native is little-endian on every host here
            assert row.dtype.newbyteorder("<") == row.dtype


def test_names_of_numpy_dtypes() -> None:
    assert datatypes.name_of(np.dtype(np.float32)) == "FP32"
    assert datatypes.name_of(np.dtype(np.int64)) == "INT64"
    assert datatypes.name_of(np.dtype(">f4")) == "FP32"  # big-endian input, same datatype
    assert datatypes.name_of(np.dtype("U5")) == "BYTES"
    assert datatypes.name_of(np.dtype(np.complex64)) == "complex64"
    with pytest.raises(ValueError, match="no KServe datatype"):
        datatypes.of_array(np.dtype(np.complex64))


def test_unknown_spellings() -> None:
    assert datatypes.by_name("BF16") is None
    assert datatypes.by_config_enum(model_config_pb2.DataType.TYPE_BF16) is None
    assert datatypes.by_onnx_type("tensor(bfloat16)") is None


def test_typed_contents_fields() -> None:
    assert datatypes.DATATYPES["FP16"].contents_field == ""  # FP16 travels raw only
    assert datatypes.DATATYPES["UINT8"].contents_field == "uint_contents"
    assert datatypes.DATATYPES["INT64"].contents_field == "int64_contents"
    assert datatypes.DATATYPES["BYTES"].is_bytes

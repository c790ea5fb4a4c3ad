"""KServe v2 REST inference bodies <-> data-plane records: JSON tensors and Triton's binary tensor
data extension.

A request body is a JSON document, optionally followed by binary tensors: with the header
`Inference-Header-Content-Length: N` the first N bytes are the JSON, and each input whose
parameters carry `binary_data_size` takes that many bytes of the rest, in input order (the same
little-endian encoding gRPC's raw_input_contents uses). Other inputs carry `data`: a flat or
nested (row-major) JSON array.

Outputs go back as JSON `data`, or as binary when the request asks (request parameter
`binary_data_output: true`, or `binary_data: true` on one output): then the response body is the
JSON followed by the binary outputs, its length in `Inference-Header-Content-Length`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from service.dataplane import tensors
from service.dataplane.records import InferInput, InferRequest, InferResponse, RequestedOutput
from service.datatypes import Datatype
from service.errors import InvalidInputError

HEADER_LENGTH = "inference-header-content-length"


def infer_request(
    body: bytes, header_length: str | None, model: str, version: str
) -> tuple[InferRequest, dict[str, Any]]:
    """A REST infer body -> (InferRequest, request-level parameters)."""
    json_end = len(body)
    if header_length is not None:
        try:
            json_end = int(header_length)
        except ValueError:
            raise InvalidInputError(
                f"Inference-Header-Content-Length must be an integer, got {header_length!r}"
            ) from None
        if not 0 <= json_end <= len(body):
            raise InvalidInputError(
                f"Inference-Header-Content-Length {json_end} is outside the {len(body)}-byte body"
            )
    document = _json_object(body[:json_end], "inference request")
    binary = memoryview(body)[json_end:]
    raw_inputs = document.get("inputs")
    if not isinstance(raw_inputs, list):
        raise InvalidInputError("inference request needs an 'inputs' list")
    inputs: list[InferInput] = []
    offset = 0
    for i, item in enumerate(raw_inputs):
        if not isinstance(item, dict):
            raise InvalidInputError(f"inputs[{i}] must be an object")
        name, datatype, shape = _header(item, f"inputs[{i}]")
        params = _parameters(item, f"input {name!r}")
        size = params.get("binary_data_size")
        if size is not None and "data" in item:
            # As over gRPC (contents and raw_input_contents): picking one would hide a bug.
            raise InvalidInputError(
                f"input {name!r}: both data and binary_data_size are set; send one"
            )
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise InvalidInputError(f"input {name!r}: binary_data_size must be a size")
            if offset + size > len(binary):
                raise InvalidInputError(
                    f"input {name!r}: binary_data_size {size} runs past the binary data "
                    f"({len(binary) - offset} bytes left)"
                )
            decode = _raw_decoder(name, binary[offset : offset + size])
            offset += size
        elif "data" in item:
            decode = _json_decoder(name, item["data"])
        else:
            raise InvalidInputError(f"input {name!r} has neither data nor binary_data_size")
        inputs.append(InferInput(name, datatype, shape, decode, params))
    if offset != len(binary):
        raise InvalidInputError(
            f"{len(binary) - offset} bytes of binary data are not claimed by any input's "
            "binary_data_size"
        )
    outputs = []
    for j, out in enumerate(document.get("outputs") or []):
        if not isinstance(out, dict) or not isinstance(out.get("name"), str):
            raise InvalidInputError(f"outputs[{j}] must be an object with a name")
        outputs.append(RequestedOutput(out["name"], _parameters(out, f"output {out['name']!r}")))
    request_id = document.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidInputError("id must be a string")
    request = InferRequest(model, version, request_id, inputs, outputs)
    return request, _parameters(document, "inference request")


def infer_response(
    response: InferResponse, request: InferRequest, parameters: Mapping[str, Any]
) -> tuple[bytes, int | None]:
    """(body, JSON header length when binary outputs follow it, else None)."""
    binary_all = parameters.get("binary_data_output") is True
    wanted = {o.name: o.parameters.get("binary_data") for o in request.outputs}
    chunks: list[bytes] = []
    outputs = []
    for tensor in response.outputs:
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        flag = wanted.get(tensor.name)
        if flag is True or (flag is None and binary_all):
            _, _, raw = tensors.to_raw(tensor.data)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = json_values(tensor.data)
        outputs.append(entry)
    document: dict[str, Any] = {
        "model_name": response.model,
        "model_version": response.version,
        "outputs": outputs,
    }
    if response.id:
        document["id"] = response.id
    header = json.dumps(document, separators=(",", ":")).encode()
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


def json_values(arr: np.ndarray) -> list[Any]:
    """An array as the flat JSON list KServe v2 REST carries (BYTES as text)."""
    flat = arr.reshape(-1)
    if arr.dtype.kind == "O":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat]
    if arr.dtype.kind == "S":
        return [v.decode("utf-8", "replace") for v in flat.tolist()]
    return list(flat.tolist())


def _json_object(data: bytes | memoryview, what: str) -> dict[str, Any]:
    try:
        document = json.loads(bytes(data))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidInputError(f"{what} must be a JSON object")
    return document


def _header(item: Mapping[str, Any], where: str) -> tuple[str, str, tuple[int, ...]]:
    name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"{where} needs a name")
    if not isinstance(datatype, str):
        raise InvalidInputError(f"input {name!r} needs a datatype")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in shape
    ):
        raise InvalidInputError(f"input {name!r} needs a shape: a list of integers")
    return name, datatype, tuple(shape)


def _parameters(item: Mapping[str, Any], where: str) -> dict[str, Any]:
    params = item.get("parameters", {})
    if not isinstance(params, dict):
        raise InvalidInputError(f"{where}: parameters must be an object")
    return params


def _raw_decoder(name: str, raw: memoryview) -> Any:
    def decode(datatype: Datatype, shape: tuple[int, ...]) -> np.ndarray:
        return tensors.from_raw(name, datatype, shape, raw)

    return decode


def _json_decoder(name: str, data: Any) -> Any:
    def decode(datatype: Datatype, shape: tuple[int, ...]) -> np.ndarray:
        return tensors.from_values(name, datatype, shape, _flatten(name, data), "data")

    return decode


def _flatten(name: str, data: Any) -> Sequence[Any]:
    """Row-major values of a flat or nested JSON array."""
    if not isinstance(data, list):
        raise InvalidInputError(f"input {name!r}: data must be a JSON array")
    if not any(isinstance(v, list) for v in data):
        return data
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            flat.append(value)
        else:
            stack.pop()
    return flat

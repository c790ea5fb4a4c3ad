"""The checks a KServe v2 request passes before anything is queued — written once, for both
protocols.

Inputs: every name known and given once, no shared memory, the declared datatype equal to the
model's, the shape matching the model's dims (batch axis first, 1..max_batch_size rows), the
inputs agreeing on the batch size; only then is each payload decoded (the decoder checks that
the payload fits the shape). Outputs: known names, no shared memory, a positive classification
count. The messages carry what was expected and what came, since the client has to fix it.

The task API never comes here: its arrays are built by the server's own preprocessing to the
model's shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from service import datatypes
from service.dataplane.records import InferInput, RequestedOutput
from service.errors import InvalidInputError
from service.spec import ModelSpec, TensorSpec

SHARED_MEMORY = "shared_memory_region"


def inputs(spec: ModelSpec, given: Sequence[InferInput]) -> dict[str, np.ndarray]:
    """Validated and decoded arrays, keyed by input name, ready for the batcher."""
    expected = {t.name: t for t in spec.inputs}
    arrays: dict[str, np.ndarray] = {}
    batch_sizes: dict[str, int] = {}
    for tensor in given:
        t = expected.get(tensor.name)
        if t is None:
            raise InvalidInputError(
                f"unknown input {tensor.name!r} for model {spec.name!r} "
                f"(inputs: {', '.join(expected)})"
            )
        if tensor.name in arrays:
            raise InvalidInputError(f"input {tensor.name!r} is given twice")
        if SHARED_MEMORY in tensor.parameters:
            raise InvalidInputError(f"input {tensor.name!r}: shared memory is not supported")
        if tensor.datatype != t.datatype:
            raise InvalidInputError(
                f"input {tensor.name!r}: expected datatype {t.datatype}, got "
                f"{tensor.datatype or '(none)'}"
            )
        check_shape(spec, t, tensor.shape)
        if spec.batching:
            batch_sizes[tensor.name] = tensor.shape[0]
        datatype = datatypes.DATATYPES[t.datatype]
        arrays[tensor.name] = tensor.decode(datatype, tensor.shape)
    missing = [name for name in expected if name not in arrays]
    if missing:
        raise InvalidInputError(
            f"missing input(s) {', '.join(map(repr, missing))} for model {spec.name!r}"
        )
    if len(set(batch_sizes.values())) > 1:
        raise InvalidInputError(f"inputs disagree on the batch size: {batch_sizes}")
    return arrays


def check_shape(spec: ModelSpec, t: TensorSpec, shape: tuple[int, ...]) -> None:
    # The common case first, in a few comparisons (this runs for every request).
    if spec.batching:
        if (
            len(shape) == len(t.dims) + 1
            and 0 < shape[0] <= spec.max_batch_size
            and (shape[1:] == t.dims or t.matches(shape[1:]))
        ):
            return
    elif shape == t.dims:
        return
    wanted = spec.wire_shape(t)
    if any(d < 0 for d in shape):
        # -1 appears in metadata shapes; a request must say how big its tensor is.
        raise InvalidInputError(
            f"input {t.name!r}: shape {list(shape)} has a negative dimension; send the actual "
            f"sizes (model shape {wanted}, -1 = any size)"
        )
    if spec.batching and shape and shape[0] == 0:
        raise InvalidInputError(
            f"input {t.name!r}: batch size 0; send 1 to {spec.max_batch_size} rows "
            f"(shape {wanted}, the first axis is the batch)"
        )
    if spec.batching:
        ok = len(shape) == len(t.dims) + 1 and shape[0] >= 1 and t.matches(shape[1:])
    else:
        ok = t.matches(shape)
    if not ok:
        raise InvalidInputError(
            f"input {t.name!r}: expected shape {wanted}, got {list(shape)}"
            + (" (the first axis is the batch)" if spec.batching else "")
        )
    if spec.batching and shape[0] > spec.max_batch_size:
        raise InvalidInputError(
            f"input {t.name!r}: batch size {shape[0]} exceeds max_batch_size "
            f"{spec.max_batch_size} of model {spec.name!r}"
        )


def outputs(spec: ModelSpec, requested: Sequence[RequestedOutput]) -> list[tuple[TensorSpec, int]]:
    """(output, classification k or 0) in the requested order; every output when none asked."""
    if not requested:
        return [(t, 0) for t in spec.outputs]
    wanted: list[tuple[TensorSpec, int]] = []
    for out in requested:
        tensor = spec.output(out.name)
        if tensor is None:
            raise InvalidInputError(
                f"unknown output {out.name!r} for model {spec.name!r} "
                f"(outputs: {', '.join(t.name for t in spec.outputs)})"
            )
        if SHARED_MEMORY in out.parameters:
            raise InvalidInputError(f"output {out.name!r}: shared memory is not supported")
        wanted.append((tensor, _classification(out)))
    return wanted


def _classification(out: RequestedOutput) -> int:
    if "classification" not in out.parameters:
        return 0
    value: Any = out.parameters["classification"]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(
            f"output {out.name!r}: classification must be a positive integer, got {value!r}"
        )
    return value

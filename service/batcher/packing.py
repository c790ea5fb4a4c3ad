"""Batches in and out of ONNX Runtime: packing requests into a buffer, padding, splitting outputs.

One `Packer` per instance (one batch at a time per instance, so its buffers are never shared).
Copies are kept to the ones that cannot be avoided:

* a batch of one request that needs no padding is fed as is — the request's own arrays, which
  for KServe raw inputs are read-only views of the request message (no copy from the wire);
* otherwise the requests' rows are copied into one buffer per input, sized for the largest batch
  and used through a leading slice (still C-contiguous, so ONNX Runtime reads it without a copy);
* outputs are handed back as row slices (views) of ONNX Runtime's output arrays, which are fresh
  for every run; only an output that may alias an input buffer (an Identity graph) is copied,
  since the next batch overwrites that buffer.

Padding (to the smallest bucket that fits) repeats the last real row: real data keeps every
kernel on its usual path (no denormals or NaN from garbage); the padded rows' outputs are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from service.spec import ModelSpec

Tensors = dict[str, np.ndarray]


class Packer:
    """Input buffers and the pack/split rules of one instance of one model version."""

    def __init__(self, spec: ModelSpec, *, pad: bool) -> None:
        self.spec = spec
        self.pad = pad
        self._capacity = max((spec.max_batch_size, *spec.buckets)) if spec.batching else 1
        self._buffers: Tensors = {}

    def bucket(self, rows: int) -> int:
        """The batch size to run `rows` real rows at: the smallest bucket that fits, if padding."""
        if self.pad:
            for size in self.spec.buckets:
                if size >= rows:
                    return size
        return rows

    def pack(self, parts: Sequence[Tensors], rows: int) -> Tensors:
        """The feed for one batch: the lone request's arrays, or every request packed and padded."""
        if not self.spec.batching:
            return parts[0]
        size = self.bucket(rows)
        if len(parts) == 1 and size == rows:
            return parts[0]  # nothing to pack: no copy
        return {
            t.name: self._fill(t.name, [p[t.name] for p in parts], rows, size)
            for t in self.spec.inputs
        }

    def split(self, feed: Tensors, outputs: Tensors, rows: Sequence[int]) -> list[Tensors]:
        """Each request's rows of every output, in request order (`rows`: rows per request)."""
        if not self.spec.batching:
            return [outputs]
        if len(rows) == 1 and next(iter(outputs.values()), np.empty(0)).shape[:1] == (rows[0],):
            return [self._own(feed, outputs)]
        owned = self._own(feed, outputs)
        results: list[Tensors] = []
        offset = 0
        for count in rows:
            end = offset + count
            results.append({name: out[offset:end] for name, out in owned.items()})
            offset = end
        return results

    def release(self) -> None:
        """Drop the buffers (the version is unloading)."""
        self._buffers = {}

    def _own(self, feed: Tensors, outputs: Tensors) -> Tensors:
        """Outputs that no later batch can overwrite: copies of those that alias a feed array."""
        fed = list(feed.values())
        return {
            name: out.copy() if any(np.may_share_memory(out, f) for f in fed) else out
            for name, out in outputs.items()
        }

    def _fill(self, name: str, parts: list[np.ndarray], rows: int, size: int) -> np.ndarray:
        first = parts[0]
        buffer = self._buffers.get(name)
        if (
            buffer is None
            or len(buffer) < size
            or buffer.shape[1:] != first.shape[1:]
            or buffer.dtype != first.dtype
        ):
            buffer = np.empty((max(size, self._capacity), *first.shape[1:]), dtype=first.dtype)
            # Variable shapes would keep reallocating: such a model gets a fresh buffer per batch.
            if not self.spec.variable_inputs:
                self._buffers[name] = buffer
        buffer = buffer[:size]
        offset = 0
        for part in parts:
            buffer[offset : offset + len(part)] = part
            offset += len(part)
        buffer[rows:size] = buffer[rows - 1]
        return buffer

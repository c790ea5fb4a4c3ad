"""Model outputs -> answers: activations, top-k, Triton classification strings, speech windows.

Pure NumPy, no I/O, no protocol. Scores are computed in float64 and returned as float32 (what
the protocols carry) so a softmax over thousands of classes does not lose the small
probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from service.preprocess.audio import merge_segments

Scores = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Ranked:
    index: int
    label: str
    score: float


class WindowResult(NamedTuple):
    start_s: float
    end_s: float
    probability: float


def activate(logits: npt.NDArray[Any], activation: str) -> Scores:
    """Apply the model's output_activation ("softmax", "sigmoid", "none") along the last axis."""
    x = np.asarray(logits, dtype=np.float64)
    if activation == "softmax":
        shifted = np.exp(x - x.max(axis=-1, keepdims=True))
        x = shifted / shifted.sum(axis=-1, keepdims=True)
    elif activation == "sigmoid":
        # exp of -|x| never overflows, and the x < 0 branch keeps full relative precision for
        # tiny probabilities (0.5 * (1 + tanh(x / 2)) cancels: 2e-5 relative error at x = -28).
        e = np.exp(-np.abs(x))
        x = np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    elif activation != "none":
        raise ValueError(f"unknown output_activation {activation!r}")
    return x.astype(np.float32)


def top_k(scores: npt.NDArray[Any], k: int, labels: Sequence[str] | None = None) -> list[Ranked]:
    """The k highest scores of a 1-D array, best first; ties keep the lower index first."""
    flat = np.asarray(scores).reshape(-1)
    k = max(0, min(k, flat.size))
    order = np.argsort(-flat.astype(np.float64), kind="stable")[:k]
    return [Ranked(int(i), label_of(int(i), labels), float(flat[i])) for i in order]


def label_of(index: int, labels: Sequence[str] | None) -> str:
    """The class label, or the index as text when the model has no (or too few) labels."""
    if labels is not None and 0 <= index < len(labels) and labels[index]:
        return labels[index]
    return str(index)


def classification(
    values: npt.NDArray[Any], k: int, labels: Sequence[str] | None, *, batched: bool
) -> npt.NDArray[np.object_]:
    """Triton's classification extension: top-k "score:index:label" strings per batch row.

    Like Triton, the output's own values are ranked (no activation is applied) and the score is
    printed as C++ std::to_string does (six decimals); ":label" is left out without labels.
    Returns [batch, k] (or [k] for a model without a batch axis) BYTES elements.
    """
    rows = values.reshape(values.shape[0], -1) if batched else values.reshape(1, -1)
    out = []
    for row in rows:
        ranked = top_k(row, k, labels)
        out.append(
            [
                f"{r.score:f}:{r.index}" + (f":{r.label}" if _has(labels, r.index) else "")
                for r in ranked
            ]
        )
    arr = np.array([[s.encode() for s in row] for row in out], dtype=np.object_)
    arr = arr.reshape(len(out), -1)
    return arr if batched else arr[0]


def speech_probabilities(
    logits: npt.NDArray[Any], activation: str, speech_index: int
) -> npt.NDArray[np.float32]:
    """Per-window speech probability from [N, C] outputs (C == 1: the single score itself)."""
    rows = np.asarray(logits).reshape(logits.shape[0], -1)
    if rows.shape[1] == 1:
        return activate(rows, "sigmoid" if activation == "softmax" else activation)[:, 0]
    if not 0 <= speech_index < rows.shape[1]:
        raise ValueError(f"speech_index {speech_index} outside the {rows.shape[1]} output classes")
    return activate(rows, activation)[:, speech_index]


def window_results(
    starts: Sequence[int] | npt.NDArray[np.int64],
    ends: Sequence[int] | npt.NDArray[np.int64],
    probabilities: npt.NDArray[np.float32],
    sample_rate: int,
) -> list[WindowResult]:
    """Sample offsets and probabilities -> (start_s, end_s, probability) per window."""
    return [
        WindowResult(int(s) / sample_rate, int(e) / sample_rate, float(p))
        for s, e, p in zip(starts, ends, probabilities, strict=True)
    ]


def segments(windows: Sequence[WindowResult], threshold: float) -> list[tuple[float, float]]:
    """Merged speech segments of a whole clip."""
    return merge_segments(windows, threshold)


@dataclass
class SegmentTracker:
    """Speech segments of a stream, each reported once, as soon as no later window can extend it.

    Windows arrive in increasing start order (StreamWindower guarantees it, its flush window
    included), and merge_segments joins only windows that overlap or touch; so a segment is
    closed once a window starts after its end. Gives the same segments as merge_segments over
    the whole stream.
    """

    threshold: float
    _open: tuple[float, float] | None = field(default=None, init=False)

    def add(self, windows: Sequence[WindowResult]) -> list[tuple[float, float]]:
        """Feed windows in stream order; returns the segments they closed."""
        closed: list[tuple[float, float]] = []
        for w in windows:
            if self._open is not None and w.start_s > self._open[1] + 1e-9:
                closed.append(self._open)
                self._open = None
            if w.probability >= self.threshold:
                if self._open is None:
                    self._open = (w.start_s, w.end_s)
                else:
                    self._open = (self._open[0], max(self._open[1], w.end_s))
        return closed

    def close(self) -> list[tuple[float, float]]:
        """End of stream: the segment still open, if any."""
        last, self._open = self._open, None
        return [] if last is None else [last]


def _has(labels: Sequence[str] | None, index: int) -> bool:
    return labels is not None and 0 <= index < len(labels) and bool(labels[index])

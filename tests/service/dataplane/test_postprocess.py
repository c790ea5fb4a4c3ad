"""service.dataplane.postprocess: activations, top-k, Triton classification strings, segments."""

from __future__ import annotations

import numpy as np
import pytest

from service.dataplane import postprocess
from service.dataplane.postprocess import SegmentTracker, WindowResult
from service.preprocess.audio import merge_segments


def test_softmax_is_stable_and_normalised(rng: np.random.Generator) -> None:
    logits = rng.standard_normal((3, 1000)).astype(np.float32) * 50 + 1e4  # would overflow exp
    p = postprocess.activate(logits, "softmax")
    assert p.dtype == np.float32 and np.isfinite(p).all()
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(np.argmax(p, -1), np.argmax(logits, -1))


def test_sigmoid_and_none(rng: np.random.Generator) -> None:
    x = rng.standard_normal(7).astype(np.float32) * 10
    reference = 1 / (1 + np.exp(-x.astype(np.float64)))  # in float64: float32 exp is off by ~1e-6
    np.testing.assert_allclose(postprocess.activate(x, "sigmoid"), reference, rtol=1e-6)
    assert postprocess.activate(np.array([-1e4, 1e4]), "sigmoid").tolist() == [0.0, 1.0]
    np.testing.assert_array_equal(postprocess.activate(x, "none"), x)
    with pytest.raises(ValueError, match="unknown output_activation"):
        postprocess.activate(x, "relu")


def test_top_k_orders_caps_and_labels() -> None:
    scores = np.array([0.1, 0.5, 0.2, 0.5, 0.0], dtype=np.float32)
    ranked = postprocess.top_k(scores, 3, ["a", "b", "c", "d", "e"])
    assert [(r.index, r.label) for r in ranked] == [(1, "b"), (3, "d"), (2, "c")]  # ties: index
    assert len(postprocess.top_k(scores, 99)) == 5  # capped at the class count
    assert [r.label for r in postprocess.top_k(scores, 2)] == ["1", "3"]  # no labels: the index


def test_classification_strings_match_tritons_format() -> None:
    values = np.array([[0.25, 3.0, -1.0], [2.0, 0.5, 1.5]], dtype=np.float32)
    out = postprocess.classification(values, 2, ["cat", "dog", "bird"], batched=True)
    assert out.shape == (2, 2)
    assert out.tolist() == [
        [b"3.000000:1:dog", b"0.250000:0:cat"],
        [b"2.000000:0:cat", b"1.500000:2:bird"],
    ]
    unbatched = postprocess.classification(values[0], 1, None, batched=False)
    assert unbatched.tolist() == [b"3.000000:1"]


def test_speech_probabilities() -> None:
    logits = np.array([[2.0, -2.0], [-3.0, 3.0]], dtype=np.float32)
    p = postprocess.speech_probabilities(logits, "softmax", 1)
    np.testing.assert_allclose(p, [1 / (1 + np.exp(4)), 1 / (1 + np.exp(-6))], rtol=1e-6)
    single = postprocess.speech_probabilities(np.array([[0.0], [100.0]]), "softmax", 1)
    np.testing.assert_allclose(single, [0.5, 1.0])  # one logit: sigmoid
    with pytest.raises(ValueError, match="speech_index 2"):
        postprocess.speech_probabilities(logits, "softmax", 2)


def _windows(
    probabilities: list[float], hop: float = 0.05, width: float = 0.1
) -> list[WindowResult]:
    return [WindowResult(i * hop, i * hop + width, p) for i, p in enumerate(probabilities)]


@pytest.mark.parametrize("seed", range(5))
def test_segment_tracker_equals_merge_segments(seed: int) -> None:
    """Streaming segments, fed in arbitrary pieces, are exactly the whole-clip merge."""
    rng = np.random.default_rng(seed)
    windows = _windows((rng.random(60) > 0.6).astype(float).tolist())
    tracker = SegmentTracker(0.5)
    streamed: list[tuple[float, float]] = []
    i = 0
    while i < len(windows):
        step = int(rng.integers(0, 5))
        closed = tracker.add(windows[i : i + step])
        # A segment is reported only when no later window can touch it.
        for _, end in closed:
            assert windows[min(i + step, len(windows)) - 1].start_s > end
        streamed += closed
        i += step
    streamed += tracker.close()
    assert streamed == merge_segments(windows, 0.5)
    assert tracker.close() == []


def test_segment_tracker_keeps_open_segment_until_a_window_starts_after_it() -> None:
    tracker = SegmentTracker(0.5)
    assert tracker.add(_windows([0.9, 0.9])) == []
    assert tracker.add([WindowResult(0.1, 0.2, 0.1)]) == []  # overlaps the open segment's end
    # Starts where it ends: a speech window starting there would still join it.
    assert tracker.add([WindowResult(0.15000000000000002, 0.25, 0.1)]) == []
    assert tracker.add([WindowResult(0.2, 0.3, 0.1)]) == [(0.0, 0.15000000000000002)]

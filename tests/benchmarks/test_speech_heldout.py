"""benchmarks/speech: the metrics, and the held-out table script on a small corpus."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.speech import heldout, metrics, prepare_ship
from benchmarks.speech.scorers import aggregate
from export.card import CARD_JSON
from export.data.speech_packages import PACKAGED
from export.models import get_model
from export.onnx_export import export_onnx

SHIPPED = Path(__file__).resolve().parents[2] / "weights" / "speech_cnn"
TOOLS = all(shutil.which(t) for t in ("espeak-ng", "flite", "sox", "fluidsynth"))
PACKAGES = all(p.files() for p in PACKAGED)


def test_roc_auc_matches_pair_counting() -> None:
    rng = np.random.default_rng()
    y = rng.integers(0, 2, 300)
    s = np.round(rng.random(300) + 0.3 * y, 1)  # rounded: ties happen
    pos, neg = s[y == 1], s[y == 0]
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert metrics.roc_auc(y, s) == pytest.approx(pairs)
    assert np.isnan(metrics.roc_auc(np.ones(5), rng.random(5)))


def test_best_threshold_maximises_balanced_accuracy() -> None:
    rng = np.random.default_rng()
    y = rng.integers(0, 2, 400)
    s = rng.random(400) + 0.6 * y
    t = metrics.best_threshold(y, s)
    best = metrics.rates(y, s, t)["balanced_accuracy"]
    for other in np.linspace(s.min(), s.max(), 101):
        assert metrics.rates(y, s, other)["balanced_accuracy"] <= best + 1e-12
    r = metrics.rates(y, s, t)
    assert r["balanced_accuracy"] == pytest.approx((r["recall"] + 1 - r["false_alarm"]) / 2)


def test_silero_window_aggregates() -> None:
    probs = np.random.default_rng().random((4, 31)).astype(np.float32)
    np.testing.assert_array_equal(aggregate(probs, "max"), probs.max(axis=1))
    assert np.all(aggregate(probs, "kth") <= aggregate(probs, "max"))


@pytest.mark.slow
@pytest.mark.skipif(not (TOOLS and PACKAGES), reason="speech corpus tools or packages missing")
def test_heldout_table_on_a_small_corpus(tmp_path: Path) -> None:
    """The card's table script end to end: shipped weights when present, else a fresh model."""
    if (SHIPPED / CARD_JSON).is_file():
        model = SHIPPED
    else:
        torch.manual_seed(0)
        model = tmp_path / "speech_cnn.onnx"
        export_onnx(get_model("speech_cnn"), (16_000,), model)
    out = tmp_path / "results"
    argv = ["--model", str(model), "--cache-dir", str(tmp_path / "cache"),
            "--windows", "40", "60", "60", "--limit", "40", "--out", str(out)]  # fmt: skip
    assert heldout.main(argv) == 0
    result = json.loads((out / "heldout.json").read_text())
    assert (out / "heldout.md").read_text().startswith("# speech_cnn vs silero-vad")
    overall = result["test"]["overall"]["speech_cnn"]
    assert overall["n"] == 40 and 0 <= overall["balanced_accuracy"] <= 1
    assert 0 <= overall["roc_auc"] <= 1 and 0 < result["thresholds"]["speech_cnn"] < 1.01
    sources = result["test"]["sources"]
    assert sum(row["n"] for row in sources.values()) == 40
    test_speech = {p.name for p in PACKAGED if p.split == "test" and p.kind == "speech"}
    train_names = {p.name for p in PACKAGED if p.split == "train"}
    assert not set(sources) & train_names  # only held-out sources are reported
    assert {n for n, r in sources.items() if r["kind"] == "speech"} - test_speech <= {
        "espeak-ng", "flite:awb"
    }  # fmt: skip


def test_card_extras_from_a_heldout_result() -> None:
    rng = np.random.default_rng()
    row = {"n": 10, "recall": float(rng.random()), "false_alarm": float(rng.random()),
           "roc_auc": 0.9, "balanced_accuracy": 0.8, "threshold": 0.4}  # fmt: skip
    result = {
        "thresholds": {"speech_cnn": 0.4, "silero_vad": 0.1},
        "val": {"overall": {"speech_cnn": row, "silero_vad": row}},
        "test": {
            "overall": {"speech_cnn": row, "silero_vad": row},
            "sources": {"klettres:de": {"kind": "speech", "n": 10, "speech_cnn": row,
                                        "silero_vad": row},
                        "psi-plus-sounds": {"kind": "events", "n": 10, "speech_cnn": row,
                                            "silero_vad": row}},
            "conditions": {"partial": {"n": 10, "speech_cnn": {"recall": 0.5},
                                       "silero_vad": {"recall": 0.4}}},
        },
    }  # fmt: skip
    extra = prepare_ship.extra_metrics(result, None, None)
    assert extra["threshold"] == 0.4 and extra["test_recall"] == round(row["recall"], 4)
    assert extra["silero_vad_test_false_alarm"] == round(row["false_alarm"], 4)
    table = extra["test_per_source"]
    assert table["klettres:de (speech)"]["speech_cnn recall"] == round(row["recall"], 4)
    assert table["psi-plus-sounds (events)"]["silero_vad false alarm"] == round(
        row["false_alarm"], 4
    )
    assert extra["test_per_condition"]["partial"] == {"n": 10, "speech_cnn": 0.5, "silero_vad": 0.4}
    sources = prepare_ship.data_sources()
    assert {s["split"] for s in sources} >= {"train", "val", "test"}
    assert all(s["licence"] for s in sources)

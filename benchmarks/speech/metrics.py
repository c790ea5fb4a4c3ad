"""Detection metrics for speech / no-speech scores: balanced accuracy, ROC AUC, thresholds.

Plain NumPy so the benchmark needs nothing beyond the project's environment. A score is the
probability of speech; a window is called speech when its score is >= the threshold.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from export.evaluation import best_threshold  # the rule the shipped threshold follows

__all__ = ["best_threshold", "rates", "roc_auc", "summary"]


def roc_auc(y: NDArray[Any], score: NDArray[Any]) -> float:
    """Area under the ROC curve (Mann-Whitney U with ties counted half); nan with one class."""
    y = np.asarray(y).astype(bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    s = np.asarray(score)[order]
    ranks = np.empty(len(s))
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[i : j + 1] = (i + j) / 2 + 1
        i = j + 1
    rank_of = np.empty(len(s))
    rank_of[order] = ranks
    return float((rank_of[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def rates(y: NDArray[Any], score: NDArray[Any], threshold: float) -> dict[str, float]:
    """Recall on speech, false-alarm rate on non-speech, and their balanced accuracy."""
    y = np.asarray(y).astype(bool)
    said = np.asarray(score) >= threshold
    recall = float(said[y].mean()) if y.any() else float("nan")
    false_alarm = float(said[~y].mean()) if (~y).any() else float("nan")
    out = {"n": len(y), "recall": recall, "false_alarm": false_alarm}
    if y.any() and (~y).any():
        out["balanced_accuracy"] = (recall + 1.0 - false_alarm) / 2
    return out


def summary(y: NDArray[Any], score: NDArray[Any], threshold: float) -> dict[str, float]:
    return {**rates(y, score, threshold), "roc_auc": roc_auc(y, score), "threshold": threshold}

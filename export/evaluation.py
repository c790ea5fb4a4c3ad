"""What a training run measures: the loss it optimises and the validation metrics it reports.

``evaluate`` returns, for a model in eval mode over a loader:

    val_loss                 mean cross-entropy
    val_top1                 top-1 accuracy
    val_top5                 top-5 accuracy (only with ≥ 5 classes)
    val_balanced_accuracy    mean per-class recall over the classes present in the targets, so
                             a rare class counts as much as a common one (the speech corpus's
                             held-out sources are not balanced)

Any of them can pick ``best.pt``: :class:`export.train_data.TrainingData` names the metric
(``select_metric``); every one of them except the loss is better when higher.

GoogLeNet trains with its auxiliary heads: in train mode it returns ``(logits, aux2, aux1)`` and
the loss is main + AUX_WEIGHT·(aux1 + aux2), as in the paper.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

AUX_WEIGHT = 0.3
#: Metrics where lower is better; every other metric is better when higher.
LOWER_IS_BETTER = frozenset({"val_loss"})


def loss_and_logits(
    output: Tensor | tuple[Tensor, ...], target: Tensor, smoothing: float
) -> tuple[Tensor, Tensor]:
    """(loss, main logits); auxiliary heads (GoogLeNet in train mode) add AUX_WEIGHT each."""
    if isinstance(output, Tensor):
        return F.cross_entropy(output, target, label_smoothing=smoothing), output
    logits, *aux = output
    loss = F.cross_entropy(logits, target, label_smoothing=smoothing)
    for head in aux:
        loss = loss + AUX_WEIGHT * F.cross_entropy(head, target, label_smoothing=smoothing)
    return loss, logits


def count_correct(logits: Tensor, target: Tensor, k: int) -> int:
    """How many rows of ``logits`` have ``target`` among their ``k`` highest scores."""
    topk = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return int((topk == target[:, None]).any(dim=1).sum().item())


def balanced_accuracy(predicted: Tensor, target: Tensor, num_classes: int) -> float:
    """Mean recall over the classes that occur in ``target`` (0.0 for no targets)."""
    support = torch.bincount(target, minlength=num_classes)
    hits = torch.bincount(target[predicted == target], minlength=num_classes)
    present = support > 0
    if not bool(present.any()):
        return 0.0
    return float((hits[present].double() / support[present].double()).mean().item())


def to_device(x: Tensor, device: torch.device) -> Tensor:
    """Image batches go channels-last: oneDNN's convolutions run 1.2-1.6x faster that way on CPU
    (measured on ResNet-20 at 32 px), and the results stay deterministic."""
    if x.dim() == 4:
        return x.to(device, memory_format=torch.channels_last)
    return x.to(device)


def evaluate(
    model: nn.Module, loader: DataLoader[Any], device: torch.device, num_classes: int
) -> dict[str, float]:
    """The validation metrics of the module docstring for ``model`` in eval mode."""
    model.eval()
    total, loss_sum, top1, top5 = 0, 0.0, 0, 0
    predicted: list[Tensor] = []
    targets: list[Tensor] = []
    with torch.no_grad():
        for x, y in loader:
            x, y = to_device(x, device), y.to(device)
            logits = model(x)
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum").item())
            top1 += count_correct(logits, y, 1)
            top5 += count_correct(logits, y, 5)
            total += len(y)
            predicted.append(logits.argmax(dim=1).cpu())
            targets.append(y.cpu())
    metrics = {"val_loss": loss_sum / max(total, 1), "val_top1": top1 / max(total, 1)}
    if num_classes >= 5:
        metrics["val_top5"] = top5 / max(total, 1)
    if targets:
        metrics["val_balanced_accuracy"] = balanced_accuracy(
            torch.cat(predicted), torch.cat(targets), num_classes
        )
    return metrics


def is_better(metric: str, value: float, best: float | None) -> bool:
    """Whether ``value`` of ``metric`` improves on ``best`` (None: nothing to beat yet)."""
    if best is None:
        return True
    return value < best if metric in LOWER_IS_BETTER else value > best


def best_threshold(y: Any, score: Any) -> float:
    """The decision threshold that maximises balanced accuracy on labels ``y`` (1 = positive)
    and scores ``score`` (called positive when >= threshold): the midpoint between neighbouring
    scores. The speech model's served threshold is chosen this way on its val split, both when
    it ships (benchmarks/speech/heldout.py) and when ``build-defaults --retrain`` retrains it."""
    import numpy as np

    y = np.asarray(y).astype(bool)
    s = np.unique(np.asarray(score, dtype=np.float64))
    candidates = np.concatenate([[s[0] - 1e-6], (s[1:] + s[:-1]) / 2, [s[-1] + 1e-6]])
    if len(candidates) > 4000:  # enough resolution, bounded cost
        candidates = np.quantile(candidates, np.linspace(0, 1, 4000))
    pos, neg = np.sort(np.asarray(score)[y]), np.sort(np.asarray(score)[~y])
    tpr = 1 - np.searchsorted(pos, candidates, side="left") / max(len(pos), 1)
    tnr = np.searchsorted(neg, candidates, side="left") / max(len(neg), 1)
    return float(candidates[int(np.argmax(tpr + tnr))])


def class_scores(model: nn.Module, loader: DataLoader[Any], index: int) -> tuple[Any, Any]:
    """(softmax probability of class ``index``, targets) over ``loader``, as NumPy arrays."""
    import numpy as np

    model.eval()
    scores: list[Any] = []
    targets: list[Any] = []
    with torch.no_grad():
        for x, y in loader:
            scores.append(torch.softmax(model(x), dim=1)[:, index].numpy())
            targets.append(y.numpy())
    return np.concatenate(scores), np.concatenate(targets)

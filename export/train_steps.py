"""The steps of a training run, each a function of modest size; :func:`export.train.train` calls
them in order. Mutable run state lives in :class:`Progress` (what a checkpoint restores); the
schedule is fixed before the first step (:class:`Schedule`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from export.checkpoint import save_checkpoint
from export.evaluation import count_correct, is_better, loss_and_logits, to_device
from export.train_config import TrainConfig
from export.train_data import TrainingData

WARMUP_FRACTION = 0.03
FINAL_LR_FRACTION = 0.01
DEFAULT_LR = {"adamw": 2e-3, "sgd": 0.05}
_DEFAULT_BATCH = {"fashion-mnist": 128, "speech": 64}


@dataclass
class Schedule:
    """Batch size and learning-rate curve of a run, fixed before the first step."""

    batch_size: int
    peak_lr: float
    drop_last: bool  # a last batch of 1 would break BatchNorm
    total_steps: int


@dataclass
class Progress:
    """What changes as a run goes on, and what a checkpoint restores."""

    epoch: int = 0
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)

    def best(self, metric: str) -> float | None:
        """Best value of ``metric`` over the epochs so far (what best.pt holds)."""
        best: float | None = None
        for h in self.history:
            if metric in h and is_better(metric, h[metric], best):
                best = h[metric]
        return best


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def lr_at(step: int, total: int, peak: float) -> float:
    """Warm-up then cosine; a pure function of the global step (resume needs no scheduler state)."""
    warmup = max(1, int(WARMUP_FRACTION * total))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    floor = peak * FINAL_LR_FRACTION
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def schedule(cfg: TrainConfig, data: TrainingData) -> Schedule:
    batch_size = cfg.batch_size or _DEFAULT_BATCH.get(data.name, 64)
    drop_last = data.n_train > batch_size
    steps_per_epoch = data.n_train // batch_size if drop_last else 1
    peak_lr = cfg.lr if cfg.lr is not None else DEFAULT_LR[cfg.optimizer]
    return Schedule(batch_size, peak_lr, drop_last, steps_per_epoch * cfg.epochs)


def make_optimizer(cfg: TrainConfig, model: nn.Module, peak_lr: float) -> torch.optim.Optimizer:
    """AdamW, or SGD with Nesterov momentum 0.9; the learning rate is set per step by lr_at."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=peak_lr,
            momentum=0.9,
            nesterov=True,
            weight_decay=cfg.weight_decay,
        )
    return torch.optim.AdamW(model.parameters(), lr=peak_lr, weight_decay=cfg.weight_decay)


def restore(
    cfg: TrainConfig,
    resumed: dict[str, Any] | None,
    optimizer: torch.optim.Optimizer,
    log: Callable[[str], None],
) -> Progress:
    """Where the run starts: from scratch, or the checkpoint's epoch, step, history, optimizer."""
    if resumed is None:
        return Progress()
    if "optimizer" in resumed:
        optimizer.load_state_dict(resumed["optimizer"])
    progress = Progress(
        int(resumed["epoch"]), int(resumed.get("step", 0)), list(resumed.get("history", []))
    )
    log(f"resuming {cfg.arch} from {cfg.resume} at epoch {progress.epoch}/{cfg.epochs}")
    return progress


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: TrainingData,
    plan: Schedule,
    progress: Progress,
    cfg: TrainConfig,
    device: torch.device,
) -> dict[str, float]:
    """One pass over the training split; advances ``progress.step``; train loss, top-1 and lr."""
    from tqdm import tqdm

    # Reseeded per epoch, so epoch k shuffles and augments alike whether or not the run resumed.
    seed_everything(cfg.seed + progress.epoch + 1)
    loader = DataLoader(
        data.train, batch_size=plan.batch_size, shuffle=True, drop_last=plan.drop_last
    )
    model.train()
    seen, loss_sum, correct = 0, 0.0, 0
    bar = tqdm(
        loader,
        desc=f"epoch {progress.epoch + 1}/{cfg.epochs}",
        disable=not cfg.progress,
        leave=False,
        dynamic_ncols=True,
    )
    for x, y in bar:
        x, y = to_device(x, device), y.to(device)
        lr = lr_at(progress.step, plan.total_steps, plan.peak_lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss, logits = loss_and_logits(model(x), y, cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        progress.step += 1
        seen += len(y)
        loss_sum += float(loss.item()) * len(y)
        correct += count_correct(logits.detach(), y, 1)
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}", lr=f"{lr:.2e}")
    bar.close()
    return {
        "train_loss": loss_sum / max(seen, 1),
        "train_top1": correct / max(seen, 1),
        "lr": lr_at(max(progress.step - 1, 0), plan.total_steps, plan.peak_lr),
    }


def checkpoint(
    run_dir: Path,
    meta: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    progress: Progress,
    select_metric: str,
) -> None:
    """``last.pt`` always; ``best.pt`` when this epoch is the best yet on ``select_metric``."""
    latest = progress.history[-1][select_metric]
    earlier = Progress(history=progress.history[:-1]).best(select_metric)
    improved = is_better(select_metric, latest, earlier)
    ckpt = {
        **meta,
        "epoch": progress.epoch,
        "step": progress.step,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "history": progress.history,
        "best_metric": select_metric,
        "best_value": progress.best(select_metric),
        "best_top1": progress.best("val_top1"),
    }
    best = run_dir / "best.pt"
    save_checkpoint(ckpt, run_dir / "last.pt")
    if improved or not best.exists():
        save_checkpoint(ckpt, best)

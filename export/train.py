"""``convserve train``: one architecture on one data set, with checkpoints, metrics and a curve.

    cfg = TrainConfig(arch="lenet5", dataset="fashion-mnist", epochs=3)
    result = train(cfg)     # -> runs/lenet5-fashion-mnist/{last.pt,best.pt,curves.png}

Per epoch: a tqdm bar over the training batches, then train loss/top-1 and validation loss, top-1
and top-5 (top-5 only with ≥ 5 classes), ``last.pt`` always and ``best.pt`` when validation top-1
improved, and ``curves.png`` (loss and top-1 per epoch). Checkpoints are described in
:mod:`export.checkpoint`; ``--resume`` restores weights, optimizer, step and history and goes on
from the checkpoint's epoch up to ``epochs`` in total.

Optimisation: AdamW (default; lr 2e-3, weight decay 5e-4) or SGD + Nesterov momentum 0.9 (lr 0.05,
weight decay 5e-4), one learning-rate curve for both — linear warm-up over the first 3 % of steps,
then cosine to 1 % of the peak — computed from the global step, so a resumed run continues exactly
where it stopped. Optional label smoothing. GoogLeNet trains with its auxiliary heads; in train
mode it returns ``(logits, aux2, aux1)`` and the loss is main + 0.3·(aux1 + aux2), as in the paper.

Determinism: ``torch.manual_seed``/NumPy seeded from ``seed`` (and again per epoch from seed +
epoch, so shuffling and augmentation of epoch k are the same whether or not the run was resumed),
``torch.use_deterministic_algorithms(True, warn_only=True)``. CPU by default, CUDA when present.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from export.checkpoint import build_model, load_checkpoint, save_checkpoint
from export.errors import ExportError, as_export_error
from export.models import get_model, get_model_info
from export.train_data import TrainingData, load_training_data

AUX_WEIGHT = 0.3
WARMUP_FRACTION = 0.03
FINAL_LR_FRACTION = 0.01
_DEFAULT_LR = {"adamw": 2e-3, "sgd": 0.05}
_DEFAULT_BATCH = {"fashion-mnist": 128, "speech": 64}


@dataclass
class TrainConfig:
    """One training run. ``None`` means "the default for this dataset / optimizer"."""

    arch: str
    dataset: str = "fashion-mnist"  # "fashion-mnist", "speech", or an image-folder directory
    epochs: int = 5  # total epochs (a resumed run stops here too)
    batch_size: int | None = None  # 128 images / 64 speech windows
    lr: float | None = None  # peak learning rate: 2e-3 AdamW, 0.05 SGD
    optimizer: Literal["adamw", "sgd"] = "adamw"
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    limit: int | None = None  # random subset of the training split (quick runs)
    eval_limit: int | None = None  # random subset of the validation split
    out: Path = Path("runs")  # checkpoints go to out/<arch>-<dataset>/
    resume: Path | None = None  # checkpoint to continue from
    seed: int = 0
    device: str | None = None  # "cpu" | "cuda"; None: cuda when available
    data_root: Path | None = None  # Fashion-MNIST IDX directory (default: export.data's)
    cache_dir: Path | None = None  # speech corpus cache (default: export.data's)
    speech_windows: tuple[int, int] | None = None  # speech corpus (train, val) size to build
    progress: bool = True  # tqdm bars


@dataclass
class TrainResult:
    run_dir: Path
    last: Path
    best: Path
    curves: Path
    history: list[dict[str, float]] = field(default_factory=list)
    best_top1: float = 0.0
    seconds: float = 0.0


def _seed_everything(seed: int) -> None:
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


def _loss(
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


def _correct(logits: Tensor, target: Tensor, k: int) -> int:
    topk = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return int((topk == target[:, None]).any(dim=1).sum().item())


def evaluate(
    model: nn.Module, loader: DataLoader[Any], device: torch.device, num_classes: int
) -> dict[str, float]:
    """Mean loss, top-1 and (≥ 5 classes) top-5 accuracy of ``model`` in eval mode."""
    model.eval()
    total, loss_sum, top1, top5 = 0, 0.0, 0, 0
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            logits = model(x)
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum").item())
            top1 += _correct(logits, y, 1)
            top5 += _correct(logits, y, 5)
            total += len(y)
    metrics = {"val_loss": loss_sum / max(total, 1), "val_top1": top1 / max(total, 1)}
    if num_classes >= 5:
        metrics["val_top5"] = top5 / max(total, 1)
    return metrics


def plot_curves(history: list[dict[str, float]], path: Path, title: str) -> None:
    """Loss and top-1 per epoch, train and validation, as a PNG (matplotlib Agg, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [int(h["epoch"]) for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], "o-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_acc.plot(epochs, [h["train_top1"] for h in history], "o-", label="train")
    ax_acc.plot(epochs, [h["val_top1"] for h in history], "o-", label="validation")
    ax_acc.set(xlabel="epoch", ylabel="top-1 accuracy", title="top-1")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def _prepare_run_dir(cfg: TrainConfig, dataset_name: str) -> Path:
    slug = Path(dataset_name).name if Path(dataset_name).is_dir() else dataset_name
    run_dir = cfg.out / f"{cfg.arch}-{slug}"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ExportError(
            f"cannot write to output directory {run_dir}: {exc.strerror or exc}; "
            "pass a writable --out"
        ) from exc
    return run_dir


def _device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise ExportError(f"unknown device {name!r}: use --device cpu or --device cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise ExportError("--device cuda but no CUDA device is available: use --device cpu")
    return torch.device(name)


def _model_kwargs(info_family: str, data: TrainingData) -> dict[str, Any]:
    kwargs = dict(data.model_kwargs)
    if info_family == "googlenet":
        kwargs["aux_logits"] = True  # aux heads train; the eval-mode export never contains them
    return kwargs


def train(cfg: TrainConfig, log: Callable[[str], None] = print) -> TrainResult:
    """Train ``cfg.arch`` on ``cfg.dataset``; every user error is a one-line ExportError."""
    start = time.perf_counter()
    try:
        info = get_model_info(cfg.arch)
    except KeyError as exc:
        raise as_export_error(exc) from exc
    if cfg.epochs < 1:
        raise ExportError(f"--epochs must be at least 1, got {cfg.epochs}")
    if cfg.optimizer not in _DEFAULT_LR:
        raise ExportError(f"unknown optimizer {cfg.optimizer!r}: use adamw or sgd")
    device = _device(cfg.device)
    resumed = load_checkpoint(cfg.resume, expected_arch=cfg.arch) if cfg.resume else None
    _seed_everything(cfg.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)

    data = load_training_data(
        cfg.dataset,
        info,
        limit=cfg.limit,
        eval_limit=cfg.eval_limit,
        seed=cfg.seed,
        data_root=cfg.data_root,
        cache_dir=cfg.cache_dir,
        progress=cfg.progress,
        speech_windows=cfg.speech_windows,
    )
    if resumed is not None and (
        resumed.get("dataset") != data.name or list(resumed["classes"]) != data.classes
    ):
        raise ExportError(
            f"{cfg.resume} was trained on {resumed.get('dataset')!r} with classes "
            f"{list(resumed['classes'])[:4]}..., not on {data.name!r}: "
            "resume with the same --dataset"
        )
    run_dir = _prepare_run_dir(cfg, data.name)
    kwargs = _model_kwargs(info.family, data)
    if resumed is not None:
        model = build_model(resumed, str(cfg.resume))
    else:
        model = get_model(cfg.arch, **kwargs)
    model.to(device)

    batch_size = cfg.batch_size or _DEFAULT_BATCH.get(data.name, 64)
    peak_lr = cfg.lr if cfg.lr is not None else _DEFAULT_LR[cfg.optimizer]
    optimizer: torch.optim.Optimizer
    if cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(
            model.parameters(),
            lr=peak_lr,
            momentum=0.9,
            nesterov=True,
            weight_decay=cfg.weight_decay,
        )
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=peak_lr, weight_decay=cfg.weight_decay)
    history: list[dict[str, float]] = []
    epoch, step, best_top1 = 0, 0, -1.0
    if resumed is not None:
        if "optimizer" in resumed:
            optimizer.load_state_dict(resumed["optimizer"])
        history = list(resumed.get("history", []))
        epoch, step = int(resumed["epoch"]), int(resumed.get("step", 0))
        best_top1 = float(resumed.get("best_top1", -1.0))
        log(f"resuming {cfg.arch} from {cfg.resume} at epoch {epoch}/{cfg.epochs}")

    n_train = data.n_train
    drop_last = n_train > batch_size  # a batch of 1 would break BatchNorm
    steps_per_epoch = n_train // batch_size if drop_last else 1
    total_steps = steps_per_epoch * cfg.epochs
    val_loader = DataLoader(data.val, batch_size=max(batch_size, 256), shuffle=False)
    num_classes = len(data.classes)
    last, best, curves = run_dir / "last.pt", run_dir / "best.pt", run_dir / "curves.png"
    meta: dict[str, Any] = {
        "arch": cfg.arch,
        "model_kwargs": kwargs,
        "task": info.task,
        "dataset": data.name,
        "val_split": data.val_split,
        "classes": data.classes,
        "preprocessing": data.input.to_dict(),
        "seed": cfg.seed,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
    }
    log(
        f"training {cfg.arch} ({sum(p.numel() for p in model.parameters()):,} parameters) on "
        f"{data.name}: {data.n_train} train / {data.n_val} {data.val_split} samples, "
        f"{cfg.epochs} epochs, batch {batch_size}, {cfg.optimizer} lr {peak_lr:g}, {device}"
    )
    from tqdm import tqdm

    first_epoch = epoch
    while epoch < cfg.epochs:
        epoch_start = time.perf_counter()
        _seed_everything(cfg.seed + epoch + 1)
        loader = DataLoader(data.train, batch_size=batch_size, shuffle=True, drop_last=drop_last)
        model.train()
        seen, loss_sum, correct = 0, 0.0, 0
        bar = tqdm(
            loader,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            disable=not cfg.progress,
            leave=False,
            dynamic_ncols=True,
        )
        for x, y in bar:
            x, y = x.to(device), y.to(device)
            lr = lr_at(step, total_steps, peak_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss, logits = _loss(model(x), y, cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            step += 1
            seen += len(y)
            loss_sum += float(loss.item()) * len(y)
            correct += _correct(logits.detach(), y, 1)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", lr=f"{lr:.2e}")
        bar.close()
        epoch += 1
        metrics = {
            "epoch": float(epoch),
            "train_loss": loss_sum / max(seen, 1),
            "train_top1": correct / max(seen, 1),
            **evaluate(model, val_loader, device, num_classes),
            "lr": lr_at(max(step - 1, 0), total_steps, peak_lr),
            "seconds": time.perf_counter() - epoch_start,
        }
        history.append(metrics)
        top5 = f" top-5 {metrics['val_top5']:.4f}" if "val_top5" in metrics else ""
        log(
            f"epoch {epoch}/{cfg.epochs}: train loss {metrics['train_loss']:.4f} top-1 "
            f"{metrics['train_top1']:.4f} | {data.val_split} loss {metrics['val_loss']:.4f} "
            f"top-1 {metrics['val_top1']:.4f}{top5} | {metrics['seconds']:.1f}s"
        )
        improved = metrics["val_top1"] > best_top1
        best_top1 = max(best_top1, metrics["val_top1"])
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        ckpt = {
            **meta,
            "epoch": epoch,
            "step": step,
            "state_dict": state,
            "optimizer": optimizer.state_dict(),
            "history": history,
            "best_top1": best_top1,
        }
        save_checkpoint(ckpt, last)
        if improved or not best.exists():
            save_checkpoint(ckpt, best)
        plot_curves(history, curves, f"{cfg.arch} on {data.name}")
    if epoch == first_epoch:  # resumed at or past --epochs: the checkpoint is the result
        log(f"{cfg.resume} already has {epoch} of {cfg.epochs} epochs: nothing to train")
    if not last.exists() and resumed is not None:
        save_checkpoint(resumed, last)
    if not best.exists():
        save_checkpoint(load_checkpoint(last), best)
    if history and not curves.exists():
        plot_curves(history, curves, f"{cfg.arch} on {data.name}")
    return TrainResult(
        run_dir, last, best, curves, history, max(best_top1, 0.0), time.perf_counter() - start
    )

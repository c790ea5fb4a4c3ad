"""``convserve train``: one architecture on one data set, with checkpoints, metrics and a curve.

    cfg = TrainConfig(arch="lenet5", dataset="fashion-mnist", epochs=3)
    result = train(cfg)     # -> runs/lenet5-fashion-mnist/{last.pt,best.pt,curves.png}

Per epoch: a tqdm bar over the training batches, then train loss/top-1 and validation loss, top-1
and top-5 (top-5 only with ≥ 5 classes), ``last.pt`` always and ``best.pt`` when validation top-1
improved on the data's selection metric (``TrainingData.select_metric``: validation top-1 for
images, whatever the data source names otherwise; see :mod:`export.evaluation`), and
``curves.png`` (loss and top-1 per epoch). Checkpoints are described in
:mod:`export.checkpoint`; ``--resume`` restores weights, optimizer, step and history and goes on
from the checkpoint's epoch up to ``epochs`` in total.

Optimisation: AdamW (default; lr 2e-3, weight decay 5e-4) or SGD + Nesterov momentum 0.9 (lr 0.05,
weight decay 5e-4), one learning-rate curve for both — linear warm-up over the first 3 % of steps,
then cosine to 1 % of the peak — computed from the global step, so a resumed run continues exactly
where it stopped. Optional label smoothing; GoogLeNet's auxiliary heads train too
(:func:`export.evaluation.loss_and_logits`).

:func:`train` is the sequence of its steps: check the settings, restore a checkpoint, load the
data, build the network, plan the schedule, make the optimizer, then per epoch
:func:`train_one_epoch`, :func:`~export.evaluation.evaluate` and :func:`checkpoint`.

Determinism: ``torch.manual_seed``/NumPy seeded from ``seed`` (and again per epoch from seed +
epoch, so shuffling and augmentation of epoch k are the same whether or not the run was resumed),
``torch.use_deterministic_algorithms(True, warn_only=True)``. CPU by default, CUDA when present.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from export.card import describe_hardware
from export.checkpoint import build_model, load_checkpoint, save_checkpoint
from export.curves import plot_curves
from export.errors import ExportError, as_export_error
from export.evaluation import AUX_WEIGHT, evaluate
from export.models import ModelInfo, get_model, get_model_info
from export.train_config import TrainConfig, TrainResult
from export.train_data import TrainingData, load_training_data
from export.train_steps import (
    DEFAULT_LR,
    checkpoint,
    lr_at,
    make_optimizer,
    restore,
    schedule,
    seed_everything,
    train_one_epoch,
)

__all__ = ["AUX_WEIGHT", "TrainConfig", "TrainResult", "lr_at", "train"]


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


def check_config(cfg: TrainConfig) -> ModelInfo:
    """The architecture's metadata, once the settings that need no data are known to be valid."""
    try:
        info = get_model_info(cfg.arch)
    except KeyError as exc:
        raise as_export_error(exc) from exc
    if cfg.epochs < 1:
        raise ExportError(f"--epochs must be at least 1, got {cfg.epochs}")
    if cfg.optimizer not in DEFAULT_LR:
        raise ExportError(f"unknown optimizer {cfg.optimizer!r}: use adamw or sgd")
    return info


def load_data(cfg: TrainConfig, info: ModelInfo, resumed: dict[str, Any] | None) -> TrainingData:
    """The run's data; a resumed run must continue on the data set and classes it started with."""
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
    return data


def build_network(
    cfg: TrainConfig,
    info: ModelInfo,
    kwargs: dict[str, Any],
    resumed: dict[str, Any] | None,
    device: torch.device,
) -> nn.Module:
    """A fresh network (drawing its initial weights from the seeded RNG) or the checkpoint's."""
    model = build_model(resumed, str(cfg.resume)) if resumed else get_model(cfg.arch, **kwargs)
    model.to(device)
    if len(info.input_shape) == 3:  # images: see evaluation.to_device
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model


def model_kwargs(info: ModelInfo, data: TrainingData) -> dict[str, Any]:
    kwargs = dict(data.model_kwargs)
    if info.family == "googlenet":
        kwargs["aux_logits"] = True  # aux heads train; the eval-mode export never contains them
    return kwargs


def _log_epoch(log: Callable[[str], None], m: dict[str, float], epochs: int, split: str) -> None:
    top5 = f" top-5 {m['val_top5']:.4f}" if "val_top5" in m else ""
    log(
        f"epoch {int(m['epoch'])}/{epochs}: train loss {m['train_loss']:.4f} top-1 "
        f"{m['train_top1']:.4f} | {split} loss {m['val_loss']:.4f} "
        f"top-1 {m['val_top1']:.4f}{top5} | {m['seconds']:.1f}s"
    )


def train(cfg: TrainConfig, log: Callable[[str], None] = print) -> TrainResult:
    """Train ``cfg.arch`` on ``cfg.dataset``; every user error is a one-line ExportError."""
    start = time.perf_counter()
    info = check_config(cfg)
    device = _device(cfg.device)
    resumed = load_checkpoint(cfg.resume, expected_arch=cfg.arch) if cfg.resume else None
    seed_everything(cfg.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    data = load_data(cfg, info, resumed)
    run_dir = _prepare_run_dir(cfg, data.name)
    kwargs = model_kwargs(info, data)
    model = build_network(cfg, info, kwargs, resumed, device)
    plan = schedule(cfg, data)
    optimizer = make_optimizer(cfg, model, plan.peak_lr)
    progress = restore(cfg, resumed, optimizer, log)
    meta: dict[str, Any] = {
        "arch": cfg.arch,
        "model_kwargs": kwargs,
        "task": info.task,
        "dataset": data.name,
        "val_split": data.val_split,
        "classes": data.classes,
        "preprocessing": data.input.to_dict(),
        "seed": cfg.seed,
        "hardware": describe_hardware(),
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
    }
    val_loader = DataLoader(data.val, batch_size=max(plan.batch_size, 256), shuffle=False)
    last, best, curves = run_dir / "last.pt", run_dir / "best.pt", run_dir / "curves.png"
    log(
        f"training {cfg.arch} ({sum(p.numel() for p in model.parameters()):,} parameters) on "
        f"{data.name}: {data.n_train} train / {data.n_val} {data.val_split} samples, "
        f"{cfg.epochs} epochs, batch {plan.batch_size}, {cfg.optimizer} lr {plan.peak_lr:g}, "
        f"{device}; best.pt by {data.select_metric}"
    )
    first_epoch = progress.epoch
    while progress.epoch < cfg.epochs:
        epoch_start = time.perf_counter()
        metrics = train_one_epoch(model, optimizer, data, plan, progress, cfg, device)
        progress.epoch += 1
        metrics.update(evaluate(model, val_loader, device, len(data.classes)))
        metrics.update(epoch=float(progress.epoch), seconds=time.perf_counter() - epoch_start)
        progress.history.append(metrics)
        _log_epoch(log, metrics, cfg.epochs, data.val_split)
        checkpoint(run_dir, meta, model, optimizer, progress, data.select_metric)
        plot_curves(progress.history, curves, f"{cfg.arch} on {data.name}")
    if progress.epoch == first_epoch:  # resumed at or past --epochs: the checkpoint is the result
        log(f"{cfg.resume} already has {progress.epoch} of {cfg.epochs} epochs: nothing to train")
    if not last.exists() and resumed is not None:
        save_checkpoint(resumed, last)
    if not best.exists():
        save_checkpoint(load_checkpoint(last), best)
    if progress.history and not curves.exists():
        plot_curves(progress.history, curves, f"{cfg.arch} on {data.name}")
    return TrainResult(
        run_dir,
        last,
        best,
        curves,
        progress.history,
        progress.best("val_top1") or 0.0,
        time.perf_counter() - start,
        data.select_metric,
        progress.best(data.select_metric),
    )

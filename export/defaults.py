"""``convserve build-defaults``: the default model repository, trained and exported from scratch.

    mobilenet_v2     MobileNetV2, torchvision's real ImageNet weights, 1000 ImageNet class names,
                     resize 256 / centre-crop 224, ImageNet mean/std (the default image model)
    lenet5_fashion   LeNet-5 trained on Fashion-MNIST (full 60k, 4 epochs)
    speech_cnn       speech_cnn trained on the speech corpus (6000/1500 windows, 4 epochs)
    resnet_fashion   resnet_small (ResNet-8) trained on Fashion-MNIST (full 60k, 3 epochs)

About 9 minutes on two CPU cores, measured; ``--quick`` trains one epoch on small subsets (still
real data, real training) in about a minute, for CI and test fixtures.

Idempotent: a model whose directory already holds ``config.pbtxt`` and a version with
``model.onnx`` is skipped; delete the directory to rebuild it. A finished training run whose
checkpoint matches the plan (architecture, epochs, subset, seed) is exported again instead of
re-trained. Checkpoints and a JSON report (per model: wall time, final test/val top-1, parity) go
under the cache directory (default ``.cache/convserve``: ``runs/`` and ``reports/``), never into
the repository, which holds only what the server reads.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from export.checkpoint import load_checkpoint
from export.errors import ExportError
from export.onnx_export import export_to_repository, source_from_arch, source_from_checkpoint
from export.repository import has_servable_version
from export.train import TrainConfig, train

DEFAULT_REPOSITORY = Path("model_repository")
DEFAULT_CACHE = Path(".cache/convserve")


@dataclass(frozen=True)
class DefaultModel:
    """One model of the default repository; ``dataset=None`` means pretrained weights."""

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
        "resnet_small",
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
    top1: float | None = None  # final epoch's test/val top-1 (None: pretrained)
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
        "epochs": plan.epochs,
        "limit": plan.limit,
        "eval_limit": plan.eval_limit,
        "seed": plan.seed,
        "lr": plan.lr,
        "speech_windows": plan.speech_windows,
    }
    same = all(_norm(cfg.get(k)) == _norm(v) for k, v in wanted.items())
    return same and int(ckpt["epoch"]) >= plan.epochs


def _norm(value: Any) -> Any:
    return list(value) if isinstance(value, tuple | list) else value


def build_one(
    spec: DefaultModel,
    repository: Path,
    *,
    quick: bool,
    cache_dir: Path,
    speech_cache: Path | None,
    progress: bool,
    log: Callable[[str], None],
) -> BuildResult:
    start = time.perf_counter()
    if has_servable_version(repository / spec.name):
        return BuildResult(spec.name, "skipped")
    train_seconds, top1, split = 0.0, None, ""
    if spec.dataset is None:
        source = source_from_arch(spec.arch, pretrained=True)
    else:
        plan = TrainConfig(
            arch=spec.arch,
            dataset=spec.dataset,
            epochs=1 if quick else spec.epochs,
            limit=spec.quick_limit if quick else spec.limit,
            eval_limit=spec.quick_eval_limit if quick else None,
            lr=spec.lr,
            out=cache_dir / "runs" / ("quick" if quick else "full"),
            cache_dir=speech_cache,
            speech_windows=QUICK_SPEECH_WINDOWS if quick and spec.dataset == "speech" else None,
            progress=progress,
        )
        slug = spec.dataset
        last = plan.out / f"{spec.arch}-{slug}" / "last.pt"
        if _reusable(last, plan):
            log(f"{spec.name}: reusing the finished training run {last}")
        else:
            result = train(plan, log=log)
            last, train_seconds = result.last, result.seconds
        source = source_from_checkpoint(last)  # the final epoch, not the best on the test split
        history = load_checkpoint(last).get("history", [])
        top1 = float(history[-1]["val_top1"]) if history else None
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
        )
        if result.status == "skipped":
            log(f"{spec.name}: already in {repository / spec.name}, skipped")
        else:
            acc = (
                f", final {result.top1_split} top-1 {result.top1:.4f}"
                if result.top1 is not None
                else ""
            )
            log(
                f"{spec.name}: version {result.version} in {result.seconds:.1f}s{acc}, ONNX parity "
                f"max abs diff {result.max_abs_diff:.2e}"
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

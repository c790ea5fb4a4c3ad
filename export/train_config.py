"""The settings of one training run and what it returns (``convserve train``'s flags, as data)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal


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
    best_metric: str = "val_top1"  # the metric that chose best.pt
    best_value: float | None = None

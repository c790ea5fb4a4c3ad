"""What a training run learns from: ``--dataset fashion-mnist | speech | PATH`` → datasets.

Each source yields a :class:`TrainingData`: train and validation ``Dataset``\\ s, the class names,
the model kwargs the data implies (``num_classes``, ``in_channels``) and the input description the
serving config will carry (:class:`~export.repository.ImageInput` / ``AudioInput``), so what the
model was trained on and what the server feeds it cannot drift apart.

* ``fashion-mnist``: the 60k/10k IDX files (``export.data.idx``), 28 px resized to the model's input
  size (32 for LeNet-5 and the small variants), mean/std 0.2860/0.3530; training augmentation is a
  random crop after zero-padding by 2 and a horizontal flip. Validation is the 10k test split.
* ``speech``: the corpus of ``export.data.speech`` (1 s windows at 16 kHz, no_speech/speech;
  ``speech_windows`` = (train, val) sizes to build, the test split as large as val; default the
  corpus's own sizes). Validation is the corpus's ``val`` split: whole speakers, voices, packages
  and generators that training never hears, so it measures generalisation to new sources (the
  ``test`` split, other held-out sources, is never used here). Augmentation is a random circular
  roll, a random polarity and a random gain of ±6 dB (``speech_cnn`` is loudness-invariant itself;
  the gain matters for architectures that are not).
* a directory: ImageFolder layout. ``PATH/train`` + ``PATH/val`` (or ``PATH/test``) when present,
  otherwise a seeded 90/10 split of ``PATH`` itself.

``limit`` takes a seeded random subset of the training split (quick runs), ``eval_limit`` of the
validation split.
"""

from __future__ import annotations

from collections.abc import Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor
from torch.utils.data import Dataset, Subset

from export.data.errors import DatasetError
from export.errors import ExportError
from export.models import ModelInfo
from export.repository import AudioInput, ImageInput

SPEECH_CLASSES = ("no_speech", "speech")
FASHION_PAD = 2  # augmentation: zero-pad then random-crop back (the background is black)


@dataclass
class TrainingData:
    """Everything ``train`` needs from a data source."""

    name: str
    train: Dataset[tuple[Tensor, int]]
    val: Dataset[tuple[Tensor, int]]
    val_split: str  # "test" or "val": what the validation metrics are measured on
    classes: list[str]
    input: ImageInput | AudioInput
    model_kwargs: dict[str, Any]
    # The validation metric that picks best.pt (export.evaluation: val_top1, val_top5,
    # val_balanced_accuracy or val_loss).
    select_metric: str = "val_top1"

    @property
    def n_train(self) -> int:
        return len(cast(Sized, self.train))  # every dataset here is map-style

    @property
    def n_val(self) -> int:
        return len(cast(Sized, self.val))


class WaveformDataset(Dataset[tuple[Tensor, int]]):
    """float32 waveforms N×samples + labels → ``(samples, label)``, optionally augmented."""

    def __init__(
        self, waves: NDArray[np.float32], labels: NDArray[np.int64], *, augment: bool = False
    ) -> None:
        if waves.ndim != 2 or len(waves) != len(labels):
            raise ValueError(f"waves must be N×samples matching labels, got {waves.shape}")
        self.waves = torch.from_numpy(np.ascontiguousarray(waves, dtype=np.float32))
        self.labels = np.asarray(labels, dtype=np.int64)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        x = self.waves[index]
        if self.augment:
            shift = int(torch.randint(0, x.shape[0], ()).item())
            gain_db = float(torch.empty(()).uniform_(-6.0, 6.0).item())
            sign = 1.0 if torch.rand(()) < 0.5 else -1.0  # polarity carries no information
            x = torch.roll(x, shift) * (sign * 10.0 ** (gain_db / 20.0))
        return x, int(self.labels[index])


def subset_indices(n: int, limit: int | None, seed: int) -> NDArray[np.int64]:
    """A seeded random subset of ``range(n)`` of size ``min(limit, n)``, sorted; all if no limit."""
    if limit is None or limit >= n:
        return np.arange(n, dtype=np.int64)
    if limit < 1:
        raise ExportError(f"--limit must be at least 1, got {limit}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=limit, replace=False)).astype(np.int64)


def _fashion_mnist(
    info: ModelInfo, limit: int | None, eval_limit: int | None, seed: int, root: Path | None
) -> TrainingData:
    from export.data.idx import (
        FASHION_MNIST_CLASSES,
        FASHION_MNIST_MEAN,
        FASHION_MNIST_STD,
        load_fashion_mnist,
    )
    from export.data.images import ArrayImageDataset

    x_train, y_train = load_fashion_mnist("train", root)
    x_test, y_test = load_fashion_mnist("test", root)
    tr = subset_indices(len(y_train), limit, seed)
    te = subset_indices(len(y_test), eval_limit, seed + 1)
    size = info.input_shape[-1]
    common: dict[str, Any] = {"size": size, "mean": FASHION_MNIST_MEAN, "std": FASHION_MNIST_STD}
    return TrainingData(
        name="fashion-mnist",
        train=ArrayImageDataset(x_train[tr], y_train[tr], augment=True, pad=FASHION_PAD, **common),
        val=ArrayImageDataset(x_test[te], y_test[te], augment=False, **common),
        val_split="test",
        classes=list(FASHION_MNIST_CLASSES),
        input=ImageInput(
            size=size, channels=1, mean=(FASHION_MNIST_MEAN,), std=(FASHION_MNIST_STD,)
        ),
        model_kwargs={"num_classes": len(FASHION_MNIST_CLASSES), "in_channels": 1},
    )


def _speech(
    limit: int | None,
    eval_limit: int | None,
    seed: int,
    cache_dir: Path | None,
    progress: bool,
    windows: tuple[int, int] | None,
) -> TrainingData:
    from export.data import speech

    # The corpus is data, not part of the run: seed 0 always, so every run shares one cached build.
    sizes = {"n_train": windows[0], "n_val": windows[1], "n_test": windows[1]} if windows else {}
    corpus = speech.build_speech_corpus(cache_dir, seed=0, progress=progress, **sizes)
    tr = subset_indices(len(corpus.y_train), limit, seed)
    va = subset_indices(len(corpus.y_val), eval_limit, seed + 1)
    window = int(speech.WINDOW_SAMPLES)
    return TrainingData(
        name="speech",
        train=WaveformDataset(corpus.x_train[tr], corpus.y_train[tr], augment=True),
        val=WaveformDataset(corpus.x_val[va], corpus.y_val[va], augment=False),
        val_split="val",
        classes=list(SPEECH_CLASSES),
        input=AudioInput(sample_rate=int(speech.SAMPLE_RATE), window_samples=window),
        model_kwargs={"num_classes": len(SPEECH_CLASSES)},
        select_metric="val_balanced_accuracy",  # on held-out sources, not the last epoch
    )


def _image_folder(
    path: Path, info: ModelInfo, limit: int | None, eval_limit: int | None, seed: int
) -> TrainingData:
    from export.data.folder import ImageFolderDataset
    from export.data.images import IMAGENET_MEAN, IMAGENET_STD

    channels, size = info.input_shape[0], info.input_shape[-1]
    mean = IMAGENET_MEAN if channels == 3 else (0.5,)
    std = IMAGENET_STD if channels == 3 else (0.5,)
    # ImageNet's 256 -> 224 ratio for big inputs; small inputs are resized straight to size.
    resize_size = round(size * 256 / 224) if size >= 64 else size
    kw: dict[str, Any] = {
        "size": size,
        "channels": channels,
        "mean": mean,
        "std": std,
        "resize_size": resize_size,
    }
    val_dir = next((path / d for d in ("val", "test") if (path / d).is_dir()), None)
    if (path / "train").is_dir() and val_dir is not None:
        train_full = ImageFolderDataset(path / "train", augment=True, **kw)
        val_full = ImageFolderDataset(val_dir, augment=False, **kw)
        if val_full.classes != train_full.classes:
            raise ExportError(
                f"{val_dir} has classes {val_full.classes}, {path / 'train'} has "
                f"{train_full.classes}: both splits need the same class directories"
            )
        tr = subset_indices(len(train_full), limit, seed)
        va = subset_indices(len(val_full), eval_limit, seed + 1)
        val_split = val_dir.name
    else:
        train_full = ImageFolderDataset(path, augment=True, **kw)
        val_full = ImageFolderDataset(path, augment=False, **kw)
        order = np.random.default_rng(seed).permutation(len(train_full))
        n_val = max(1, len(order) // 10)
        va_all, tr_all = np.sort(order[:n_val]), np.sort(order[n_val:])
        tr = tr_all[subset_indices(len(tr_all), limit, seed)]
        va = va_all[subset_indices(len(va_all), eval_limit, seed + 1)]
        val_split = "val"
    return TrainingData(
        name=str(path),
        train=Subset(train_full, tr.tolist()),
        val=Subset(val_full, va.tolist()),
        val_split=val_split,
        classes=list(train_full.classes),
        input=ImageInput(
            size=size, channels=channels, mean=tuple(mean), std=tuple(std), resize_size=resize_size
        ),
        model_kwargs={"num_classes": len(train_full.classes), "in_channels": channels},
    )


def load_training_data(
    dataset: str,
    info: ModelInfo,
    *,
    limit: int | None = None,
    eval_limit: int | None = None,
    seed: int = 0,
    data_root: Path | None = None,
    cache_dir: Path | None = None,
    progress: bool = True,
    speech_windows: tuple[int, int] | None = None,
) -> TrainingData:
    """Resolve ``dataset`` for architecture ``info``; any failure is a one-line ExportError."""
    speech = info.task == "speech_detection"
    try:
        if dataset == "speech":
            if not speech:
                raise ExportError(
                    f"{info.name} is an image model; --dataset speech needs a speech architecture "
                    "(e.g. speech_cnn)"
                )
            return _speech(limit, eval_limit, seed, cache_dir, progress, speech_windows)
        if speech:
            raise ExportError(f"{info.name} is a speech model: train it with --dataset speech")
        if dataset in ("fashion-mnist", "fashion_mnist", "fashionmnist"):
            return _fashion_mnist(info, limit, eval_limit, seed, data_root)
        path = Path(dataset)
        if not path.is_dir():
            raise ExportError(
                f"dataset {dataset!r} is neither fashion-mnist, speech, nor an existing "
                "image-folder directory (PATH/<class>/<images>)"
            )
        return _image_folder(path, info, limit, eval_limit, seed)
    except DatasetError as exc:
        raise ExportError(str(exc)) from exc

"""Users' own images laid out ImageFolder-style: ``root/<class name>/<image files>``.

Class names are the sub-directory names, sorted, and label ``i`` is ``classes[i]``. Files are found
recursively under each class directory; hidden files and directories (".name") are skipped, and so
is anything whose extension is not in :data:`IMAGE_EXTENSIONS`. A root with no class directory, or a
class directory with no image, is a :class:`DatasetError` — an empty class would still take a label
index, silently shifting every class after it.

Per image (see :mod:`export.data.images` for the recorded :class:`ImagePreprocessing`): Pillow
decodes it (first frame of a GIF; EXIF orientation applied; palette images go through RGBA so
transparency does not warn), converts to "L" or "RGB", resizes the shorter side to ``resize_size``
with the longer side ``int(resize_size * long / short)`` (torchvision's rounding), bilinear, then
crops ``size``×``size`` at the center (offsets ``round((dim - size) / 2)``), scales by 1/255 and
normalises. With ``augment=True`` the crop is taken at a random position instead, and flipped
left-right half the time. Decoding is lazy: a corrupt file raises :class:`DatasetError` naming it
when it is first read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset

from export.data.errors import DatasetError
from export.data.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImagePreprocessing,
    normalize,
    per_channel,
)

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)


def scan_image_folder(root: Path | str) -> tuple[list[str], list[tuple[Path, int]]]:
    """``(sorted class names, [(image path, label), ...])`` for an ImageFolder-style tree."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: image folder does not exist or is not a directory")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DatasetError(f"{root}: no class directories (expected {root}/<class name>/<images>)")
    samples: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        files = sorted(
            p
            for p in (root / name).rglob("*")
            if p.is_file()
            and p.suffix.lower() in IMAGE_EXTENSIONS
            and not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
        if not files:
            raise DatasetError(
                f"{root / name}: class {name!r} has no images "
                f"(extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
        samples.extend((p, label) for p in files)
    return classes, samples


def decode_image(path: Path, mode: str) -> Image.Image:
    """Open ``path`` with Pillow and convert it to ``mode`` ("L" or "RGB")."""
    try:
        with Image.open(path) as opened:
            opened.seek(0)
            img = ImageOps.exif_transpose(opened) or opened
            if img.mode in ("P", "PA"):
                img = img.convert("RGBA")
            return img.convert(mode)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot decode image: {exc}") from exc


def resize_shorter_side(img: Image.Image, target: int) -> Image.Image:
    """Resize so the shorter side is ``target``, longer side ``int(target * long / short)``."""
    w, h = img.size
    if w <= h:
        new_w, new_h = target, int(target * h / w)
    else:
        new_w, new_h = int(target * w / h), target
    if (new_w, new_h) == (w, h):
        return img
    return img.resize((new_w, new_h), Image.Resampling.BILINEAR)


class ImageFolderDataset(Dataset[tuple[torch.Tensor, int]]):
    """``root/<class>/<image>`` → ``(float C×size×size, label)``, labels index :attr:`classes`."""

    def __init__(
        self,
        root: Path | str,
        size: int = 224,
        *,
        channels: int = 3,
        mean: float | Sequence[float] = IMAGENET_MEAN,
        std: float | Sequence[float] = IMAGENET_STD,
        resize_size: int | None = None,
        augment: bool = False,
        hflip: bool = True,
    ) -> None:
        self.root = Path(root)
        self.classes, self.samples = scan_image_folder(self.root)
        resize_size = size if resize_size is None else resize_size
        if resize_size < size:
            raise ValueError(f"resize_size {resize_size} is smaller than the crop size {size}")
        self.preprocessing = ImagePreprocessing(
            size=size,
            channels=channels,
            mean=per_channel(mean, channels),
            std=per_channel(std, channels),
            resize="shorter_side",
            resize_size=resize_size,
        )
        self.augment = augment
        self.hflip = hflip

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> torch.Tensor:
        """Decoded, resized, cropped uint8 image ``index`` as C×size×size (no normalisation)."""
        path, _ = self.samples[index]
        pre = self.preprocessing
        img = resize_shorter_side(decode_image(path, pre.color_mode), pre.resize_size or pre.size)
        arr = np.asarray(img, dtype=np.uint8)
        arr = arr[..., None] if arr.ndim == 2 else arr
        h, w = arr.shape[:2]
        if self.augment:
            top = int(torch.randint(0, h - pre.size + 1, ()).item())
            left = int(torch.randint(0, w - pre.size + 1, ()).item())
        else:
            top = round((h - pre.size) / 2.0)
            left = round((w - pre.size) / 2.0)
        crop = arr[top : top + pre.size, left : left + pre.size]
        return torch.from_numpy(np.array(crop)).permute(2, 0, 1)  # a writable copy

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = self.load(index).to(torch.float32) * self.preprocessing.scale
        if self.augment and self.hflip and bool(torch.rand(()) < 0.5):
            x = x.flip(-1)
        return normalize(x, self.preprocessing), self.samples[index][1]

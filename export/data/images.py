"""Image preprocessing as data, and a torch ``Dataset`` over in-memory uint8 image arrays.

The preprocessing a model is trained with must be reproduced exactly by the server, which has no
torch. So it is written down once, as plain numbers (:class:`ImagePreprocessing`), and export copies
``to_dict()`` into the model's serving config. The steps, in order:

1. decode to ``channels`` (1 = "L", 3 = "RGB"), uint8 H×W×C;
2. resize: ``"stretch"`` resizes H×W straight to ``size``×``size``; ``"shorter_side"`` resizes
   the shorter side to ``resize_size`` (aspect kept) then center-crops ``size``×``size``. Bilinear
   with half-pixel centres (torch ``align_corners=False``; Pillow's BILINEAR when upsampling);
3. ``x = pixel * scale`` (scale = 1/255, so [0, 1]);
4. ``x = (x - mean[c]) / std[c]`` per channel; layout C×H×W.

The array dataset resizes with the server's own operation -- Pillow's BILINEAR on the uint8 image,
once for the whole array at construction -- so a model trains on exactly the pixels the server
feeds it from a PNG of the same image (a float resize differs by up to 0.5/255 per pixel after
the server rounds to whole grey levels, and that was measurable in served accuracy).

Training-only augmentation (never recorded in the config): zero-pad by ``pad`` then random-crop
back to ``size``, and a random horizontal flip. Padding happens before normalisation so the border
is black, which is Fashion-MNIST's background.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from PIL import Image
from torch.utils.data import Dataset

from export.data.idx import FASHION_MNIST_MEAN, FASHION_MNIST_STD

#: ImageNet statistics, the usual choice for RGB photographs.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ImagePreprocessing:
    """Everything the server must do to an image before the model sees it (see module docstring)."""

    size: int  # output height = width, pixels
    channels: int  # 1 ("L") or 3 ("RGB")
    mean: tuple[float, ...]  # one per channel, in the [0, 1] scale
    std: tuple[float, ...]  # one per channel
    scale: float = 1.0 / 255.0  # uint8 -> [0, 1]
    resize: Literal["stretch", "shorter_side"] = "stretch"
    resize_size: int | None = None  # shorter side target for "shorter_side"; None = size
    interpolation: Literal["bilinear"] = "bilinear"

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if not len(self.mean) == len(self.std) == self.channels:
            raise ValueError(f"need one mean and std per channel, got {self.mean}, {self.std}")
        if not all(s > 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")
        if self.size < 1:
            raise ValueError(f"size must be positive, got {self.size}")

    @property
    def color_mode(self) -> str:
        """Pillow mode the image is converted to before anything else."""
        return "L" if self.channels == 1 else "RGB"

    def to_dict(self) -> dict[str, Any]:
        """Plain numbers and strings, ready for the serving config's ``parameters``."""
        out = asdict(self)
        out["mean"] = list(self.mean)
        out["std"] = list(self.std)
        out["color_mode"] = self.color_mode
        out["resize_size"] = self.resize_size if self.resize_size is not None else self.size
        out["crop"] = "center" if self.resize == "shorter_side" else "none"
        out["layout"] = "CHW"
        return out


def per_channel(value: float | Sequence[float], channels: int) -> tuple[float, ...]:
    """Broadcast one number to every channel, or check a per-channel sequence has ``channels``."""
    if isinstance(value, int | float):
        return (float(value),) * channels
    values = tuple(float(v) for v in value)
    if len(values) == 1:
        return values * channels
    if len(values) != channels:
        raise ValueError(f"expected 1 or {channels} values, got {len(values)}")
    return values


def normalize(x: torch.Tensor, pre: ImagePreprocessing) -> torch.Tensor:
    """``(x - mean) / std`` per channel on a C×H×W (or N×C×H×W) float tensor in [0, 1]."""
    mean = torch.tensor(pre.mean, dtype=x.dtype).view(-1, 1, 1)
    std = torch.tensor(pre.std, dtype=x.dtype).view(-1, 1, 1)
    return (x - mean) / std


def random_crop_flip(x: torch.Tensor, pad: int, hflip: bool) -> torch.Tensor:
    """Zero-pad C×H×W by ``pad``, crop back to H×W at a random offset, maybe flip left-right."""
    if pad > 0:
        h, w = x.shape[-2:]
        padded = F.pad(x, (pad, pad, pad, pad))
        top = int(torch.randint(0, 2 * pad + 1, ()).item())
        left = int(torch.randint(0, 2 * pad + 1, ()).item())
        x = padded[..., top : top + h, left : left + w]
    if hflip and bool(torch.rand(()) < 0.5):
        x = x.flip(-1)
    return x


def pillow_resize(images: NDArray[np.uint8], size: int) -> NDArray[np.uint8]:
    """N×H×W×C uint8 → N×size×size×C uint8 with Pillow's BILINEAR, as the server resizes."""
    n, _, _, channels = images.shape
    out = np.empty((n, size, size, channels), dtype=np.uint8)
    for i, image in enumerate(images):
        pil = Image.fromarray(image[..., 0] if channels == 1 else image)
        resized = np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR))
        out[i] = resized.reshape(size, size, channels)
    return out


class ArrayImageDataset(Dataset[tuple[torch.Tensor, int]]):
    """uint8 images N×H×W or N×H×W×C plus int labels → ``(float C×size×size, label)``.

    Images whose H×W differs from ``size`` are resized once, as uint8, at construction
    (:func:`pillow_resize`); scaling, augmentation and normalisation happen per item, so one uint8
    array is the only copy in memory.
    """

    def __init__(
        self,
        images: NDArray[np.uint8],
        labels: NDArray[np.integer[Any]] | Sequence[int],
        size: int = 32,
        mean: float | Sequence[float] = FASHION_MNIST_MEAN,
        std: float | Sequence[float] = FASHION_MNIST_STD,
        *,
        augment: bool = False,
        pad: int = 4,
        hflip: bool = True,
    ) -> None:
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise ValueError(f"images must be uint8 N×H×W(×C), got {images.dtype} {images.shape}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        arr = images[..., None] if images.ndim == 3 else images
        channels = arr.shape[-1]
        if arr.shape[1:3] != (size, size):
            arr = pillow_resize(arr, size)
        self.images = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2)  # N×C×H×W
        self.labels = np.asarray(labels, dtype=np.int64)
        self.preprocessing = ImagePreprocessing(
            size=size,
            channels=channels,
            mean=per_channel(mean, channels),
            std=per_channel(std, channels),
        )
        self.augment = augment
        self.pad = pad
        self.hflip = hflip

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = self.images[index].to(torch.float32) * self.preprocessing.scale  # C×H×W in [0, 1]
        if self.augment:
            x = random_crop_flip(x, self.pad, self.hflip)
        return normalize(x, self.preprocessing), int(self.labels[index])

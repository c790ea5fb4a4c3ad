"""torchvision's ImageNet evaluation transforms, importable beside the CPU build of torch.

The reference that service/preprocess/image.py must match: PIL decode, RGB, ``Resize(256)``
(bilinear, antialias), ``CenterCrop(224)``, ``ToTensor()``, ``Normalize(mean, std)``.

PyPI's torchvision wheel is built against PyTorch's CUDA wheel: beside the CPU wheel we install
(the CUDA one is several GB), its compiled operators (``nms``, ``roi_align``, ...) cannot load
(``libc10_cuda.so`` is missing) and ``import torchvision`` then fails while registering their
meta kernels ("operator torchvision::nms does not exist"). CPU builds of torchvision exist only
on PyTorch's own package index, which CI cannot reach. The transforms used here are pure Python
over PIL images and never touch those operators, so skipping the meta registrations (and only
that module) leaves the reference exactly as torchvision ships it.
"""

from __future__ import annotations

import sys
import types
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_eval_transform(resize: int = 256, crop: int = 224) -> Any:
    """torchvision.transforms' ImageNet eval pipeline (input: a PIL image, output: C×H×W)."""
    name = "torchvision._meta_registrations"
    if "torchvision" not in sys.modules:
        sys.modules.setdefault(name, types.ModuleType(name))
    from torchvision import transforms as T

    return T.Compose(
        [
            T.Resize(resize, interpolation=T.InterpolationMode.BILINEAR, antialias=True),
            T.CenterCrop(crop),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )

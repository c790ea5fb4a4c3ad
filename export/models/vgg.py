"""VGG (Simonyan & Zisserman, 2014), the layer plan kept as data as in torchvision's ``vgg.py``.

``cfgs`` maps a configuration letter of the paper's Table 1 to its conv plan: an int is a 3x3
conv (padding 1) with that many filters followed by ReLU (BatchNorm first in ``_bn`` variants),
``"M"`` a 2x2 stride-2 max pool. Keys match torchvision (``features.N``, ``classifier.{0,3,6}``).
VGG-16 has 138.36M parameters at 1000 classes, 124M of them in the first FC layer.

``vgg_small`` is configuration ``"S"`` below, for 28-32 px grey images (Fashion-MNIST). What
changed versus the 224 px models: six convs in three pooled stages of 16/32/64 filters instead of
13 convs in five stages of 64-512 (a 32 px image supports three halvings, not five), always with
BatchNorm (trains from scratch in a few CPU epochs), global average pooling instead of the
adaptive 7x7 pool (any input size, plain ``GlobalAveragePool`` in ONNX), and a 256-wide hidden FC
layer instead of two 4096-wide ones.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from export.models._registry import register_model

# fmt: off
cfgs: dict[str, list[str | int]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [
        64, 64, "M",
        128, 128, "M",
        256, 256, 256, 256, "M",
        512, 512, 512, 512, "M",
        512, 512, 512, 512, "M",
    ],
    "S": [16, 16, "M", 32, 32, "M", 64, 64, "M"],  # vgg_small
}
# fmt: on


def make_layers(
    cfg: list[str | int], in_channels: int = 3, batch_norm: bool = False
) -> nn.Sequential:
    layers: list[nn.Module] = []
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        if not isinstance(v, int):
            raise ValueError(f"VGG layer plan entries are ints or 'M', got {v!r}")
        layers.append(nn.Conv2d(in_channels, v, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(v))
        layers.append(nn.ReLU(inplace=True))
        in_channels = v
    return nn.Sequential(*layers)


class VGG(nn.Module):
    def __init__(
        self,
        features: nn.Sequential,
        feature_channels: int = 512,
        pool_size: int = 7,
        hidden: tuple[int, ...] = (4096, 4096),
        num_classes: int = 1000,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((pool_size, pool_size))
        head: list[nn.Module] = []
        width = feature_channels * pool_size * pool_size
        for h in hidden:
            head += [nn.Linear(width, h), nn.ReLU(inplace=True), nn.Dropout(p=dropout)]
            width = h
        self.classifier = nn.Sequential(*head, nn.Linear(width, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        # N x 3 x 224 x 224    | small: N x 1 x 32 x 32
        x = self.features(x)
        # N x 512 x 7 x 7      | small: N x 64 x 4 x 4
        x = self.avgpool(x)
        # N x 512 x 7 x 7      | small: N x 64 x 1 x 1
        x = torch.flatten(x, 1)
        # N x 25088            | small: N x 64
        x = self.classifier(x)
        # N x 1000 (num_classes)
        return x


def _vgg(cfg: str, batch_norm: bool, *, in_channels: int, num_classes: int, **kwargs: Any) -> VGG:
    features = make_layers(cfgs[cfg], in_channels=in_channels, batch_norm=batch_norm)
    feature_channels = [v for v in cfgs[cfg] if isinstance(v, int)][-1]
    return VGG(features, feature_channels, num_classes=num_classes, **kwargs)


@register_model("vgg11")
def vgg11(*, num_classes: int = 1000, in_channels: int = 3, **kwargs: Any) -> VGG:
    """VGG-11 (configuration "A")."""
    return _vgg("A", False, in_channels=in_channels, num_classes=num_classes, **kwargs)


@register_model("vgg11_bn")
def vgg11_bn(*, num_classes: int = 1000, in_channels: int = 3, **kwargs: Any) -> VGG:
    """VGG-11 (configuration "A") with BatchNorm."""
    return _vgg("A", True, in_channels=in_channels, num_classes=num_classes, **kwargs)


@register_model("vgg13")
def vgg13(*, num_classes: int = 1000, in_channels: int = 3, **kwargs: Any) -> VGG:
    """VGG-13 (configuration "B")."""
    return _vgg("B", False, in_channels=in_channels, num_classes=num_classes, **kwargs)


@register_model("vgg13_bn")
def vgg13_bn(*, num_classes: int = 1000, in_channels: int = 3, **kwargs: Any) -> VGG:
    """VGG-13 (configuration "B") with BatchNorm."""
    return _vgg("B", True, in_channels=in_channels, num_classes=num_classes, **kwargs)


@register_model("vgg16")
def vgg16(*, num_classes: int = 1000, in_channels: int = 3, **kwargs: Any) -> VGG:
    """VGG-16 (configuration "D")."""
    return _vgg("D", False, in_channels=in_channels, num_classes=num_classes, **kwargs)


@register_model("vgg16_bn")
def vgg16_bn(*, num_classes: int = 1000, in_channels: int = 3, **kwargs: Any) -> VGG:
    """VGG-16 (configuration "D") with BatchNorm."""
    return _vgg("D", True, in_channels=in_channels, num_classes=num_classes, **kwargs)


@register_model("vgg19")
def vgg19(*, num_classes: int = 1000, in_channels: int = 3, **kwargs: Any) -> VGG:
    """VGG-19 (configuration "E")."""
    return _vgg("E", False, in_channels=in_channels, num_classes=num_classes, **kwargs)


@register_model("vgg19_bn")
def vgg19_bn(*, num_classes: int = 1000, in_channels: int = 3, **kwargs: Any) -> VGG:
    """VGG-19 (configuration "E") with BatchNorm."""
    return _vgg("E", True, in_channels=in_channels, num_classes=num_classes, **kwargs)


@register_model("vgg_small", input_shape=(1, 32, 32), num_classes=10)
def vgg_small(*, num_classes: int = 10, in_channels: int = 1, **kwargs: Any) -> VGG:
    """VGG for 28-32 px images: configuration "S" (16-16-32-32-64-64, BN), global pool, FC 256."""
    kwargs = {"pool_size": 1, "hidden": (256,), **kwargs}
    return _vgg("S", True, in_channels=in_channels, num_classes=num_classes, **kwargs)

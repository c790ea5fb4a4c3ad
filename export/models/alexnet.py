"""AlexNet (Krizhevsky et al., 2012), in torchvision's single-tower layout.

torchvision's variant (and ours, key for key: ``features.{0,3,6,8,10}``, ``classifier.{1,4,6}``)
follows Krizhevsky's "one weird trick" paper: 64/192/384/256/256 filters instead of the original
two-GPU 96/256/384/384/256, and no local response normalisation. 61.10M parameters at 1000 classes.

``alexnet_small`` is the same five-conv plan for 28-32 px grey images (Fashion-MNIST). What changed
versus the 224 px model: the 11x11 stride-4 stem becomes 5x5 stride 1 (a 32 px image has nothing to
skip), widths are 32/64/96/64/64, BatchNorm follows every conv (so it trains from scratch in a few
CPU epochs without LRN or careful learning rates), the adaptive 6x6 pool becomes global average
pooling (any input size, plain ``GlobalAveragePool`` in ONNX) and the classifier's hidden layers
are 256 wide instead of 4096.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from export.models._registry import register_model


class _Conv(NamedTuple):
    out_channels: int
    kernel_size: int
    stride: int
    padding: int
    pool: bool  # 3x3 stride-2 (overlapping) max pool after the ReLU


_PLANS: dict[str, list[_Conv]] = {
    "imagenet": [
        _Conv(64, 11, 4, 2, True),
        _Conv(192, 5, 1, 2, True),
        _Conv(384, 3, 1, 1, False),
        _Conv(256, 3, 1, 1, False),
        _Conv(256, 3, 1, 1, True),
    ],
    "small": [
        _Conv(32, 5, 1, 2, True),
        _Conv(64, 5, 1, 2, True),
        _Conv(96, 3, 1, 1, False),
        _Conv(64, 3, 1, 1, False),
        _Conv(64, 3, 1, 1, True),
    ],
}


def _make_features(plan: list[_Conv], in_channels: int, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for conv in plan:
        layers.append(
            nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding)
        )
        if batch_norm:
            layers.append(nn.BatchNorm2d(conv.out_channels))
        layers.append(nn.ReLU(inplace=True))
        if conv.pool:
            layers.append(nn.MaxPool2d(kernel_size=3, stride=2))
        in_channels = conv.out_channels
    return nn.Sequential(*layers)


class AlexNet(nn.Module):
    def __init__(
        self,
        features: nn.Sequential,
        feature_channels: int,
        pool_size: int = 6,
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
            head += [nn.Dropout(p=dropout), nn.Linear(width, h), nn.ReLU(inplace=True)]
            width = h
        self.classifier = nn.Sequential(*head, nn.Linear(width, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        # N x 3 x 224 x 224           | small: N x 1 x 32 x 32
        x = self.features(x)
        # N x 256 x 6 x 6             | small: N x 64 x 3 x 3
        x = self.avgpool(x)
        # N x 256 x 6 x 6             | small: N x 64 x 1 x 1
        x = torch.flatten(x, 1)
        # N x 9216                    | small: N x 64
        x = self.classifier(x)
        # N x 1000 (num_classes)
        return x


def _alexnet(
    plan: str,
    *,
    in_channels: int,
    batch_norm: bool,
    pool_size: int,
    hidden: tuple[int, ...],
    num_classes: int,
    **kwargs: Any,
) -> AlexNet:
    layers = _PLANS[plan]
    features = _make_features(layers, in_channels, batch_norm)
    return AlexNet(features, layers[-1].out_channels, pool_size, hidden, num_classes, **kwargs)


@register_model("alexnet")
def alexnet(*, num_classes: int = 1000, in_channels: int = 3, **kwargs: Any) -> AlexNet:
    """AlexNet, torchvision layout (64-192-384-256-256 convs, 6x6 pool, 4096-4096 classifier)."""
    return _alexnet(
        "imagenet",
        in_channels=in_channels,
        batch_norm=False,
        pool_size=6,
        hidden=(4096, 4096),
        num_classes=num_classes,
        **kwargs,
    )


@register_model("alexnet_small", input_shape=(1, 32, 32), num_classes=10)
def alexnet_small(*, num_classes: int = 10, in_channels: int = 1, **kwargs: Any) -> AlexNet:
    """AlexNet for 28-32 px images: 5x5/1 stem, narrow, BatchNorm, global pool, 256-wide FC."""
    return _alexnet(
        "small",
        in_channels=in_channels,
        batch_norm=True,
        pool_size=1,
        hidden=(256, 256),
        num_classes=num_classes,
        **kwargs,
    )

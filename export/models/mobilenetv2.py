"""MobileNetV2 (Sandler et al., 2018) with torchvision's exact state-dict keys.

``features.0`` is the stem ``ConvBNReLU`` (keys ``features.0.0`` conv, ``features.0.1`` BN),
``features.1`` .. ``features.17`` are ``InvertedResidual`` blocks (their layers under ``.conv``),
``features.18`` is the final 1x1 ``ConvBNReLU`` to 1280 channels, ``classifier.1`` the Linear.
3.50M parameters at 1000 classes. The test suite loads torchvision's real ImageNet checkpoint
(``mobilenet_v2-b0353104.pth``, see :mod:`export.models.pretrained`) with ``strict=True``.

``mobilenet_v2_small`` is the same network for 28-32 px grey images (Fashion-MNIST). What changed
versus the 224 px model: the first 24-channel stage has stride 1 instead of 2 (total downsampling
16x instead of 32x: 32 px -> 2x2 before the pool), every width is halved (``width_mult=0.5``: a
16-channel stem, then 8-16-16-32-48-80-160-channel stages), and the final 1x1 conv has 320
channels instead of 1280. Same 17 inverted-residual blocks and expansions. (A stride-1 stem, as
CIFAR ports do, was measured 5x slower to train on CPU: expanded depthwise layers at 32x32.)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from export.models._registry import register_model

# t: expansion, c: output channels, n: blocks, s: stride of the first block (Table 2 of the paper)
inverted_residual_settings: dict[str, list[tuple[int, int, int, int]]] = {
    "imagenet": [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ],
    "small": [
        (1, 16, 1, 1),
        (6, 24, 2, 1),  # stride 2 -> 1: a 32 px input cannot afford 32x downsampling
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ],
}


def _make_divisible(v: float, divisor: int, min_value: int | None = None) -> int:
    """Round ``v`` to the nearest multiple of ``divisor``, never going more than 10% below it.

    From the original TensorFlow repository; every layer width passes through it.
    """
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvBNReLU(nn.Sequential):
    """Conv (no bias, 'same' padding) -> BatchNorm -> ReLU6; keys ``.0`` conv, ``.1`` BN."""

    def __init__(
        self,
        in_planes: int,
        out_planes: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
    ) -> None:
        padding = (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(
                in_planes, out_planes, kernel_size, stride, padding, groups=groups, bias=False
            ),
            nn.BatchNorm2d(out_planes),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """1x1 expand (skipped when t=1) -> 3x3 depthwise -> 1x1 linear projection (+ skip)."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden_dim = round(inp * expand_ratio)
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU(inp, hidden_dim, kernel_size=1))  # pw
        layers += [
            ConvBNReLU(hidden_dim, hidden_dim, stride=stride, groups=hidden_dim),  # dw
            # pw-linear: no ReLU after the projection, the paper's "linear bottleneck"
            nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.conv(x)
        return x + out if self.use_res_connect else out


class MobileNetV2(nn.Module):
    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        width_mult: float = 1.0,
        setting: str = "imagenet",
        stem_stride: int = 2,
        last_channel: int = 1280,
        round_nearest: int = 8,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        input_channel = _make_divisible(32 * width_mult, round_nearest)
        # torchvision never narrows the last conv below 1280 for width_mult < 1.
        self.last_channel = _make_divisible(last_channel * max(1.0, width_mult), round_nearest)
        features: list[nn.Module] = [ConvBNReLU(in_channels, input_channel, stride=stem_stride)]
        for t, c, n, s in inverted_residual_settings[setting]:
            output_channel = _make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                stride = s if i == 0 else 1
                features.append(InvertedResidual(input_channel, output_channel, stride, t))
                input_channel = output_channel
        features.append(ConvBNReLU(input_channel, self.last_channel, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(self.last_channel, num_classes),
        )

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        # N x 3 x 224 x 224        | small: N x 1 x 32 x 32
        x = self.features(x)
        # N x 1280 x 7 x 7         | small: N x 320 x 2 x 2
        x = nn.functional.adaptive_avg_pool2d(x, (1, 1))
        # N x 1280 x 1 x 1         | small: N x 320 x 1 x 1
        x = torch.flatten(x, 1)
        # N x 1280                 | small: N x 320
        x = self.classifier(x)
        # N x 1000 (num_classes)
        return x


@register_model("mobilenet_v2")
def mobilenet_v2(*, num_classes: int = 1000, in_channels: int = 3, **kwargs: Any) -> MobileNetV2:
    """MobileNetV2 (width 1.0), torchvision keys; loads torchvision's ImageNet weights."""
    return MobileNetV2(num_classes=num_classes, in_channels=in_channels, **kwargs)


@register_model("mobilenet_v2_small", input_shape=(1, 32, 32), num_classes=10)
def mobilenet_v2_small(
    *, num_classes: int = 10, in_channels: int = 1, **kwargs: Any
) -> MobileNetV2:
    """MobileNetV2 for 28-32 px images: stride-1 stage 2, width 0.5, 320-channel last conv."""
    kwargs = {"width_mult": 0.5, "setting": "small", "last_channel": 320, **kwargs}
    return MobileNetV2(num_classes=num_classes, in_channels=in_channels, **kwargs)

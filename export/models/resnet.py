"""ResNet (He et al., 2015), built torchvision-style: helpers -> blocks -> network -> builder ->
one-line factories, with torchvision's state-dict keys (``conv1``, ``bn1``, ``layer1..4``, ``fc``,
``downsample.0/.1``).

``Bottleneck`` puts the stride on the 3x3 conv ("ResNet v1.5", as torchvision does; the paper put
it on the first 1x1). ResNet-18 has 11.69M parameters, ResNet-50 25.56M, at 1000 classes.

``ResNetSmall`` is the paper's own CIFAR network (section 4.2) for 28-32 px images: what changes
versus the ImageNet model is only the stem and the widths -- a 3x3 stride-1 conv and no max pool
(a 32 px image cannot afford the 4x downsampling of a 7x7/2 conv + pool), then three stages of
16/32/64 channels (not four of 64-512) of the same ``BasicBlock``, global average pooling and one
``fc``; depth is 6n+2. One difference from the paper: where a stage changes width, the shortcut is
the ImageNet models' 1x1 projection (``downsample``), not the paper's parameter-free zero padding
("option A"); it costs ~1% more parameters and keeps one ``BasicBlock`` for both networks.
``resnet_small`` is ResNet-8 (n=1, 78k parameters): measured at ~75 s per Fashion-MNIST epoch
(60k images at 32 px, batch 128, two CPU threads); ``resnet20_small`` (n=3, 272k parameters, the
shipped ``resnet_fashion``: test top-1 0.9415 after 20 epochs) takes ~2.2x as long.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from export.models._registry import register_model


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion: ClassVar[int] = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + identity)


class Bottleneck(nn.Module):
    expansion: ClassVar[int] = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return torch.relu(out + identity)


Block = type[BasicBlock] | type[Bottleneck]


def _make_layer(
    block: Block, inplanes: int, planes: int, blocks: int, stride: int = 1
) -> nn.Sequential:
    """One stage: ``blocks`` blocks, the first one changing resolution/width (1x1 projection)."""
    downsample: nn.Module | None = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(
            conv1x1(inplanes, planes * block.expansion, stride),
            nn.BatchNorm2d(planes * block.expansion),
        )
    layers: list[nn.Module] = [block(inplanes, planes, stride, downsample)]
    layers += [block(planes * block.expansion, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def _init_weights(model: nn.Module, zero_init_residual: bool) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        # Each residual branch starts as zero, so each block starts as the identity
        # (Goyal et al., 2017, "Accurate, Large Minibatch SGD"): +0.2-0.3% top-1 on ImageNet.
        for m in model.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)
            elif isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)


class ResNet(nn.Module):
    def __init__(
        self,
        block: Block,
        layers: list[int],
        num_classes: int = 1000,
        in_channels: int = 3,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if len(layers) != 4:
            raise ValueError(f"ImageNet ResNets have four stages, got {layers}")
        e = block.expansion
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = _make_layer(block, 64, 64, layers[0])
        self.layer2 = _make_layer(block, 64 * e, 128, layers[1], stride=2)
        self.layer3 = _make_layer(block, 128 * e, 256, layers[2], stride=2)
        self.layer4 = _make_layer(block, 256 * e, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * e, num_classes)
        _init_weights(self, zero_init_residual)

    def forward(self, x: Tensor) -> Tensor:
        # N x 3 x 224 x 224; channel counts below are ResNet-18/34's (x4 from layer1 on for -50)
        x = self.relu(self.bn1(self.conv1(x)))
        # N x 64 x 112 x 112
        x = self.maxpool(x)
        # N x 64 x 56 x 56
        x = self.layer1(x)
        # N x 64 x 56 x 56
        x = self.layer2(x)
        # N x 128 x 28 x 28
        x = self.layer3(x)
        # N x 256 x 14 x 14
        x = self.layer4(x)
        # N x 512 x 7 x 7
        x = self.avgpool(x)
        # N x 512 x 1 x 1
        x = torch.flatten(x, 1)
        # N x 512
        x = self.fc(x)
        # N x 1000 (num_classes)
        return x


class ResNetSmall(nn.Module):
    def __init__(
        self,
        blocks_per_stage: int,
        widths: tuple[int, int, int] = (16, 32, 64),
        num_classes: int = 10,
        in_channels: int = 1,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        w1, w2, w3 = widths
        self.conv1 = conv3x3(in_channels, w1)
        self.bn1 = nn.BatchNorm2d(w1)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = _make_layer(BasicBlock, w1, w1, blocks_per_stage)
        self.layer2 = _make_layer(BasicBlock, w1, w2, blocks_per_stage, stride=2)
        self.layer3 = _make_layer(BasicBlock, w2, w3, blocks_per_stage, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(w3, num_classes)
        _init_weights(self, zero_init_residual)

    def forward(self, x: Tensor) -> Tensor:
        # N x 1 x 32 x 32 (28 x 28 works too: 28 -> 14 -> 7)
        x = self.relu(self.bn1(self.conv1(x)))
        # N x 16 x 32 x 32
        x = self.layer1(x)
        # N x 16 x 32 x 32
        x = self.layer2(x)
        # N x 32 x 16 x 16
        x = self.layer3(x)
        # N x 64 x 8 x 8
        x = self.avgpool(x)
        # N x 64 x 1 x 1
        x = torch.flatten(x, 1)
        # N x 64
        x = self.fc(x)
        # N x 10 (num_classes)
        return x


def _resnet(
    block: Block, layers: list[int], *, num_classes: int, in_channels: int, **kwargs: Any
) -> ResNet:
    return ResNet(block, layers, num_classes=num_classes, in_channels=in_channels, **kwargs)


def _resnet_small(depth: int, *, num_classes: int, in_channels: int, **kwargs: Any) -> ResNetSmall:
    if depth < 8 or (depth - 2) % 6 != 0:
        raise ValueError(f"CIFAR ResNet depth is 6n+2 with n >= 1, got {depth}")
    n = (depth - 2) // 6
    return ResNetSmall(n, num_classes=num_classes, in_channels=in_channels, **kwargs)


@register_model("resnet18")
def resnet18(*, num_classes: int = 1000, in_channels: int = 3, **kwargs: Any) -> ResNet:
    """ResNet-18 (BasicBlock, 2-2-2-2)."""
    return _resnet(
        BasicBlock, [2, 2, 2, 2], num_classes=num_classes, in_channels=in_channels, **kwargs
    )


@register_model("resnet34")
def resnet34(*, num_classes: int = 1000, in_channels: int = 3, **kwargs: Any) -> ResNet:
    """ResNet-34 (BasicBlock, 3-4-6-3)."""
    return _resnet(
        BasicBlock, [3, 4, 6, 3], num_classes=num_classes, in_channels=in_channels, **kwargs
    )


@register_model("resnet50")
def resnet50(*, num_classes: int = 1000, in_channels: int = 3, **kwargs: Any) -> ResNet:
    """ResNet-50 (Bottleneck, 3-4-6-3, stride on the 3x3 conv: v1.5)."""
    return _resnet(
        Bottleneck, [3, 4, 6, 3], num_classes=num_classes, in_channels=in_channels, **kwargs
    )


@register_model("resnet_small", input_shape=(1, 32, 32), num_classes=10)
def resnet_small(*, num_classes: int = 10, in_channels: int = 1, **kwargs: Any) -> ResNetSmall:
    """CIFAR-style ResNet-8 for 28-32 px images (3x3 stem, no max pool, 16-32-64, 78k params)."""
    return _resnet_small(8, num_classes=num_classes, in_channels=in_channels, **kwargs)


@register_model("resnet20_small", input_shape=(1, 32, 32), num_classes=10)
def resnet20_small(*, num_classes: int = 10, in_channels: int = 1, **kwargs: Any) -> ResNetSmall:
    """CIFAR-style ResNet-20 of the paper (n=3, 0.27M params): slower, a little more accurate."""
    return _resnet_small(20, num_classes=num_classes, in_channels=in_channels, **kwargs)

"""GoogLeNet / Inception v1 (Szegedy et al., 2014) with torchvision's module and key names
(``conv1.conv``, ``conv1.bn``, ``inception3a.branch1.conv``, ..., ``aux1.fc2``, ``fc``).

Known deviation, kept on purpose: like torchvision, the "5x5" branch (``branch3``) uses a 3x3
kernel. This is a known bug inherited from the TensorFlow port of the weights
(https://github.com/pytorch/vision/issues/906); we keep it so that torchvision GoogLeNet
checkpoints load into this model unchanged.

The auxiliary classifiers exist only with ``aux_logits=True`` (training). Then ``forward`` in
train mode returns ``GoogLeNetOutputs(logits, aux_logits2, aux_logits1)``, and in eval mode the
logits alone, so an exported (eval) graph never contains the aux heads. The parameter count,
6.62M at 1000 classes, is that of the model without aux heads (as torchvision's 6,624,904).
torchvision's ``transform_input`` (re-normalising inputs for the TensorFlow-ported weights) is
left out: there are no such weights here.

``googlenet_small`` is the same network for 28-32 px grey images (Fashion-MNIST). What changed
versus the 224 px model: the 7x7 stride-2 stem conv is a 3x3 stride-1 conv (total downsampling
16x instead of 32x: 32 px -> 2x2 before the final pool), and every width -- stem, all nine
inception modules, the aux heads' 128-channel conv and 1024-wide FC -- is divided by 4.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from export.models._registry import register_model


class GoogLeNetOutputs(NamedTuple):
    logits: Tensor
    aux_logits2: Tensor
    aux_logits1: Tensor


class _InceptionCfg(NamedTuple):
    in_channels: int
    ch1x1: int
    ch3x3red: int
    ch3x3: int
    ch5x5red: int
    ch5x5: int
    pool_proj: int


# Table 1 of the paper, full ImageNet widths; output channels = ch1x1 + ch3x3 + ch5x5 + pool_proj.
inception_cfgs: dict[str, _InceptionCfg] = {
    "3a": _InceptionCfg(192, 64, 96, 128, 16, 32, 32),
    "3b": _InceptionCfg(256, 128, 128, 192, 32, 96, 64),
    "4a": _InceptionCfg(480, 192, 96, 208, 16, 48, 64),
    "4b": _InceptionCfg(512, 160, 112, 224, 24, 64, 64),
    "4c": _InceptionCfg(512, 128, 128, 256, 24, 64, 64),
    "4d": _InceptionCfg(512, 112, 144, 288, 32, 64, 64),
    "4e": _InceptionCfg(528, 256, 160, 320, 32, 128, 128),
    "5a": _InceptionCfg(832, 256, 160, 320, 32, 128, 128),
    "5b": _InceptionCfg(832, 384, 192, 384, 48, 128, 128),
}


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 1e-3, as the TensorFlow original) -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs: Any) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class Inception(nn.Module):
    def __init__(self, cfg: _InceptionCfg) -> None:
        super().__init__()
        self.branch1 = BasicConv2d(cfg.in_channels, cfg.ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(
            BasicConv2d(cfg.in_channels, cfg.ch3x3red, kernel_size=1),
            BasicConv2d(cfg.ch3x3red, cfg.ch3x3, kernel_size=3, padding=1),
        )
        self.branch3 = nn.Sequential(
            BasicConv2d(cfg.in_channels, cfg.ch5x5red, kernel_size=1),
            # The paper says 5x5 here; kernel_size=3 is torchvision's known bug
            # (pytorch/vision#906), kept for checkpoint compatibility.
            BasicConv2d(cfg.ch5x5red, cfg.ch5x5, kernel_size=3, padding=1),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
            BasicConv2d(cfg.in_channels, cfg.pool_proj, kernel_size=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        branches = [self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)]
        return torch.cat(branches, 1)


class InceptionAux(nn.Module):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        conv_channels: int = 128,
        hidden: int = 1024,
        dropout: float = 0.7,
    ) -> None:
        super().__init__()
        self.conv = BasicConv2d(in_channels, conv_channels, kernel_size=1)
        self.fc1 = nn.Linear(conv_channels * 4 * 4, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)
        self.dropout = nn.Dropout(p=dropout)

    def forward(self, x: Tensor) -> Tensor:
        # aux1: N x 512 x 14 x 14, aux2: N x 528 x 14 x 14
        x = F.adaptive_avg_pool2d(x, (4, 4))
        # aux1: N x 512 x 4 x 4, aux2: N x 528 x 4 x 4
        x = self.conv(x)
        # N x 128 x 4 x 4
        x = torch.flatten(x, 1)
        # N x 2048
        x = F.relu(self.fc1(x), inplace=True)
        # N x 1024
        x = self.fc2(self.dropout(x))
        # N x 1000 (num_classes)
        return x


class GoogLeNet(nn.Module):
    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        aux_logits: bool = False,
        dropout: float = 0.2,
        dropout_aux: float = 0.7,
        small_stem: bool = False,
        width_div: int = 1,
    ) -> None:
        super().__init__()
        d = width_div
        if d < 1:
            raise ValueError(f"width_div must be a positive integer, got {d}")
        cfgs = {k: _InceptionCfg(*(c // d for c in cfg)) for k, cfg in inception_cfgs.items()}
        if not all(
            c * d == full
            for k, cfg in cfgs.items()
            for c, full in zip(cfg, inception_cfgs[k], strict=True)
        ):
            raise ValueError(f"width_div={d} does not divide every Inception width")
        self.aux_logits = aux_logits

        if small_stem:
            self.conv1 = BasicConv2d(in_channels, 64 // d, kernel_size=3, padding=1)
        else:
            self.conv1 = BasicConv2d(in_channels, 64 // d, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64 // d, 64 // d, kernel_size=1)
        self.conv3 = BasicConv2d(64 // d, 192 // d, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)

        self.inception3a = Inception(cfgs["3a"])
        self.inception3b = Inception(cfgs["3b"])
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)

        self.inception4a = Inception(cfgs["4a"])
        self.inception4b = Inception(cfgs["4b"])
        self.inception4c = Inception(cfgs["4c"])
        self.inception4d = Inception(cfgs["4d"])
        self.inception4e = Inception(cfgs["4e"])
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)

        self.inception5a = Inception(cfgs["5a"])
        self.inception5b = Inception(cfgs["5b"])

        self.aux1: InceptionAux | None = None
        self.aux2: InceptionAux | None = None
        if aux_logits:
            self.aux1 = InceptionAux(
                cfgs["4b"].in_channels, num_classes, 128 // d, 1024 // d, dropout_aux
            )
            self.aux2 = InceptionAux(
                cfgs["4e"].in_channels, num_classes, 128 // d, 1024 // d, dropout_aux
            )

        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(1024 // d, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                # Truncated at 2 std like the original scipy truncnorm(-2, 2, scale=0.01);
                # torchvision's a=-2, b=2 are absolute bounds, i.e. effectively untruncated.
                nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-0.02, b=0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor | GoogLeNetOutputs:
        # Shapes are the 224 px model's; googlenet_small at 32 px has channels / 4 and
        # 32 -> 16 (maxpool1) -> 8 (maxpool2) -> 4 (maxpool3) -> 2 (maxpool4).
        # N x 3 x 224 x 224
        x = self.conv1(x)
        # N x 64 x 112 x 112
        x = self.maxpool1(x)
        # N x 64 x 56 x 56
        x = self.conv2(x)
        # N x 64 x 56 x 56
        x = self.conv3(x)
        # N x 192 x 56 x 56
        x = self.maxpool2(x)
        # N x 192 x 28 x 28
        x = self.inception3a(x)
        # N x 256 x 28 x 28
        x = self.inception3b(x)
        # N x 480 x 28 x 28
        x = self.maxpool3(x)
        # N x 480 x 14 x 14
        x = self.inception4a(x)
        # N x 512 x 14 x 14
        aux1 = self.aux1(x) if self.aux1 is not None and self.training else None
        x = self.inception4b(x)
        # N x 512 x 14 x 14
        x = self.inception4c(x)
        # N x 512 x 14 x 14
        x = self.inception4d(x)
        # N x 528 x 14 x 14
        aux2 = self.aux2(x) if self.aux2 is not None and self.training else None
        x = self.inception4e(x)
        # N x 832 x 14 x 14
        x = self.maxpool4(x)
        # N x 832 x 7 x 7
        x = self.inception5a(x)
        # N x 832 x 7 x 7
        x = self.inception5b(x)
        # N x 1024 x 7 x 7
        x = self.avgpool(x)
        # N x 1024 x 1 x 1
        x = torch.flatten(x, 1)
        # N x 1024
        x = self.fc(self.dropout(x))
        # N x 1000 (num_classes)
        if aux1 is not None and aux2 is not None:
            return GoogLeNetOutputs(x, aux2, aux1)
        return x


@register_model("googlenet")
def googlenet(
    *, num_classes: int = 1000, in_channels: int = 3, aux_logits: bool = False, **kwargs: Any
) -> GoogLeNet:
    """GoogLeNet (Inception v1), torchvision layout; aux heads only with aux_logits=True."""
    return GoogLeNet(
        num_classes=num_classes, in_channels=in_channels, aux_logits=aux_logits, **kwargs
    )


@register_model("googlenet_small", input_shape=(1, 32, 32), num_classes=10)
def googlenet_small(
    *, num_classes: int = 10, in_channels: int = 1, aux_logits: bool = False, **kwargs: Any
) -> GoogLeNet:
    """GoogLeNet for 28-32 px images: 3x3 stride-1 stem, all widths / 4."""
    return GoogLeNet(
        num_classes=num_classes,
        in_channels=in_channels,
        aux_logits=aux_logits,
        small_stem=True,
        width_div=4,
        **kwargs,
    )

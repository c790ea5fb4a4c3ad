"""LeNet-5 (LeCun et al., 1998, "Gradient-based learning applied to document recognition").

Layer plan of the paper: C1 6@5x5 -> S2 pool -> C3 16@5x5 -> S4 pool -> C5 120 -> F6 84 -> 10,
61,706 parameters at 10 classes. Two deliberate modernisations, both common practice and both
faster to train: ReLU instead of the scaled tanh, and max pooling instead of the trainable
average-pool "subsampling" units; C3 is fully connected to S2 (the paper's sparse connection table
was a 1998 compute saving). C5 is written as a Linear over the flattened 16x5x5 map, which is the
same thing as the paper's 5x5 convolution on a 5x5 input.

The model takes 32x32 inputs, as in the paper. 28x28 datasets (MNIST, Fashion-MNIST) are brought to
32x32 before the model -- by the training pipeline and by the serving config's preprocessing size --
rather than by changing the network.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from export.models._registry import register_model


class LeNet5(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5),  # C1
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),  # S2
            nn.Conv2d(6, 16, kernel_size=5),  # C3
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),  # S4
        )
        self.classifier = nn.Sequential(
            nn.Linear(16 * 5 * 5, 120),  # C5
            nn.ReLU(inplace=True),
            nn.Linear(120, 84),  # F6
            nn.ReLU(inplace=True),
            nn.Linear(84, num_classes),  # output
        )

    def forward(self, x: Tensor) -> Tensor:
        # N x 1 x 32 x 32
        x = self.features(x)
        # N x 16 x 5 x 5
        x = torch.flatten(x, 1)
        # N x 400
        x = self.classifier(x)
        # N x 10 (num_classes)
        return x


@register_model("lenet5", input_shape=(1, 32, 32), num_classes=10)
def lenet5(*, num_classes: int = 10, in_channels: int = 1, **kwargs: Any) -> LeNet5:
    """LeNet-5 (ReLU, max pooling) for 32x32 grey images; 28 px inputs are padded/resized to 32."""
    return LeNet5(num_classes=num_classes, in_channels=in_channels, **kwargs)

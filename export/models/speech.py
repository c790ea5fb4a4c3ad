"""``speech_cnn``: speech / no-speech detection from raw 16 kHz waveform, one second at a time.

Input ``(N, 16000)`` float samples in [-1, 1] (the model adds the channel axis itself); output
``(N, 2)`` logits ordered ``[no_speech, speech]``. The server only resamples to 16 kHz, cuts
1-second windows and passes raw samples: everything else is inside the graph.

* **Input normalisation.** Each window has its DC offset removed and is divided by
  ``sqrt(mean(x^2) + eps)`` (its RMS), so loudness and microphone gain do not matter. ``eps``
  (1e-6, i.e. an RMS floor of 1e-3, about -60 dBFS) keeps near-silent windows near silent
  instead of blowing their noise floor up to unit level.
* **Front end.** A strided 1-D conv of 80 taps (5 ms) with stride 4 is a learned filterbank
  (as M5 of Dai et al., 2017, "Very deep convolutional neural networks for raw waveforms"),
  then 3-tap convs with max pooling down to an 8 ms frame step.
* **Context.** Dilated 3-tap convs (dilation 2, 4, 8) on that 8 ms grid: each unit looks at a
  short time segment, and the receptive field grows to ~0.25 s (a syllable or two).
* **Head.** Global average and global max pooling over time (speech is often a fraction of a
  window: the max catches a short word, the average the overall texture) feeding a small fully
  connected classifier.

The layer plan is data (``_PLAN``); 63k parameters, ~20M multiply-adds per window. Every op has a
plain ONNX equivalent (Conv, BatchNormalization, MaxPool, ReduceMean/ReduceMax, Sqrt, Gemm) and
only the batch axis is dynamic. Other window lengths run too (anything above ~0.1 s), but the
model is trained on, exported for and served with 1 s windows.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from export.models._registry import register_model

SAMPLE_RATE = 16_000
WINDOW_SAMPLES = SAMPLE_RATE  # 1 s
LABELS = ("no_speech", "speech")


class _Conv1d(NamedTuple):
    out_channels: int
    kernel_size: int
    stride: int
    dilation: int
    pool: int  # max-pool factor after the ReLU; 1 = none


# Frames per window (16000 samples in) after each row, and the time one frame steps.
_PLAN: list[_Conv1d] = [
    _Conv1d(32, 80, 4, 1, 4),  # learned filterbank: 4000 frames -> pool -> 1000 (1 ms)
    _Conv1d(32, 3, 1, 1, 4),  # 1000 -> 250 (4 ms)
    _Conv1d(48, 3, 1, 1, 2),  # 250 -> 125 (8 ms)
    _Conv1d(64, 3, 1, 2, 1),  # 125, dilated: context grows 2x per row at no extra cost
    _Conv1d(64, 3, 1, 4, 1),  # 125
    _Conv1d(96, 3, 1, 8, 1),  # 125; receptive field 3948 samples (~0.25 s)
]


class RMSNorm1d(nn.Module):
    """Per-window DC removal and RMS normalisation over the last axis; no parameters."""

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        x = x - x.mean(dim=-1, keepdim=True)
        return x / torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)


class SpeechCNN(nn.Module):
    def __init__(
        self,
        num_classes: int = 2,
        hidden: int = 64,
        dropout: float = 0.3,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.norm = RMSNorm1d(eps)
        layers: list[nn.Module] = []
        channels = 1  # mono: forward adds the channel axis
        for row in _PLAN:
            # 'same' padding for the dilated convs; the strided front end pads half its width.
            padding = row.dilation * (row.kernel_size - 1) // 2
            layers += [
                nn.Conv1d(
                    channels,
                    row.out_channels,
                    row.kernel_size,
                    stride=row.stride,
                    padding=padding,
                    dilation=row.dilation,
                    bias=False,
                ),
                nn.BatchNorm1d(row.out_channels),
                nn.ReLU(inplace=True),
            ]
            if row.pool > 1:
                layers.append(nn.MaxPool1d(row.pool))
            channels = row.out_channels
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(2 * channels, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv1d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm1d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        # N x 16000 (raw samples in [-1, 1])
        x = self.norm(x)
        # N x 16000 (zero mean, unit RMS)
        x = x.unsqueeze(1)
        # N x 1 x 16000
        x = self.features(x)
        # N x 96 x 125
        x = torch.cat([x.mean(dim=-1), x.amax(dim=-1)], dim=1)
        # N x 192
        x = self.classifier(x)
        # N x 2 [no_speech, speech]
        return x


@register_model(
    "speech_cnn",
    input_shape=(WINDOW_SAMPLES,),
    num_classes=2,
    task="speech_detection",
)
def speech_cnn(*, num_classes: int = 2, **kwargs: Any) -> SpeechCNN:
    """1-D CNN on raw 16 kHz audio, 1 s windows -> [no_speech, speech] logits; RMS-normalised."""
    return SpeechCNN(num_classes=num_classes, **kwargs)

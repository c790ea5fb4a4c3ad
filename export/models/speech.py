"""``speech_cnn``: speech / no-speech detection from raw 16 kHz waveform, one second at a time.

Input ``(N, 16000)`` float samples in [-1, 1] (the model adds the axes it needs); output ``(N, 2)``
logits ordered ``[no_speech, speech]``. The server only resamples to 16 kHz, cuts 1-second windows
and passes raw samples: everything else is inside the graph, as plain ONNX ops.

* **Fixed front end: log-mel spectrogram.** The window's DC offset is removed; a 1-D convolution
  whose weights are the Hann-windowed cosines and sines of a 256-point DFT (16 ms frames, 10 ms
  hop: 99 frames per second) gives real and imaginary parts; their squares summed are the power
  spectrum; a fixed matrix folds the 129 bins into ``n_mels`` mel bands (60-7800 Hz); then
  ``log(power + eps)``. A fixed front end is the inductive bias that matters most for voices the
  model never heard: harmonics and formants look alike across speakers once on a log-frequency,
  log-power scale, and none of it has to be learned from a few hundred voices. The weights are
  buffers (saved, never trained).
* **Per-band mean removal** over the window's frames (cepstral mean normalisation): loudness,
  microphone and telephone colouration are a constant offset per band in the log domain, so this
  removes them, and stationary noise flattens out; what remains is how each band *changes*, which
  is what separates speech (syllable-rate modulation, moving formants) from most non-speech.
* **2-D stem** (3x3 convolutions, stride 2 in frequency) learns local time-frequency patterns that
  are shift-tolerant in frequency (a higher voice is the same pattern moved up), then the
  frequency axis is folded into channels.
* **Dilated residual blocks** on the 10 ms grid (depthwise 3-tap convolution with dilation
  1, 2, 4, 8, 16, 1, then a pointwise convolution): the receptive field grows to ~0.65 s, a few
  syllables, at little cost.
* **Head:** global average and max pooling over time (speech is often a fraction of a window: the
  max catches one word, the average the texture) into a small classifier.

About 0.3 M parameters and ~30 M multiply-adds per window (most of it the DFT); every op has a
plain ONNX equivalent (Conv, Mul, Add, Log, MatMul, ReduceMean/ReduceMax, Reshape, Gemm) and only
the batch axis is dynamic. Other window lengths run too (anything above ~0.1 s), but the model is
trained on, exported for and served with 1 s windows.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from export.models._registry import register_model

SAMPLE_RATE = 16_000
WINDOW_SAMPLES = SAMPLE_RATE  # 1 s
LABELS = ("no_speech", "speech")
N_FFT = 256  # 16 ms frames
HOP = 160  # 10 ms hop
# Below the quantisation noise of 16-bit audio (~1e-8 per bin at this DFT's scale), so digital
# near-silence stays a flat floor rather than turning into loud noise after the log.
LOG_EPS = 1e-9
DILATIONS = (1, 2, 4, 8, 16, 1)


def _hz_to_mel(f: np.ndarray[Any, np.dtype[np.float64]]) -> np.ndarray[Any, np.dtype[np.float64]]:
    return 2595.0 * np.log10(1.0 + f / 700.0)


def mel_matrix(n_mels: int, n_fft: int = N_FFT, fmin: float = 60.0, fmax: float = 7800.0) -> Tensor:
    """(n_mels, n_fft // 2 + 1) triangular HTK-mel filters, each row summing to one."""
    bins = np.arange(n_fft // 2 + 1) * SAMPLE_RATE / n_fft
    mel_lo, mel_hi = (float(m) for m in _hz_to_mel(np.array([fmin, fmax])))
    edges = 700.0 * (10 ** (np.linspace(mel_lo, mel_hi, n_mels + 2) / 2595) - 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    tri = np.maximum(0.0, np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)))
    # Low bands are narrower than one DFT bin: give each at least its nearest bin.
    for i, centre in enumerate(mid[:, 0]):
        if tri[i].sum() == 0:
            tri[i, int(np.argmin(np.abs(bins - centre)))] = 1.0
    tri /= tri.sum(axis=1, keepdims=True)
    return torch.tensor(tri, dtype=torch.float32)


def dft_kernels(n_fft: int = N_FFT) -> Tensor:
    """(2 * (n_fft // 2 + 1), 1, n_fft) Hann-windowed cosine then sine rows: an STFT as a Conv1d."""
    n = np.arange(n_fft)
    k = np.arange(n_fft // 2 + 1)[:, None]
    window = 0.5 - 0.5 * np.cos(2 * math.pi * n / n_fft)
    angle = 2 * math.pi * k * n / n_fft
    rows = np.concatenate([np.cos(angle) * window, -np.sin(angle) * window])
    return torch.tensor(rows[:, None, :], dtype=torch.float32)


class LogMel(nn.Module):
    """(N, samples) -> (N, n_mels, frames) log-mel power with each band's mean over time removed."""

    dft: Tensor
    mel: Tensor

    def __init__(self, n_mels: int) -> None:
        super().__init__()
        self.register_buffer("dft", dft_kernels())
        self.register_buffer("mel", mel_matrix(n_mels))
        self.bins = N_FFT // 2 + 1

    def forward(self, x: Tensor) -> Tensor:
        # A DC offset would leak into the lowest bands through the window's side lobes.
        x = x - x.mean(dim=-1, keepdim=True)
        spec = nn.functional.conv1d(x.unsqueeze(1), self.dft, stride=HOP)
        # N x 258 x 99 (real rows, then imaginary rows)
        power = spec[:, : self.bins].square() + spec[:, self.bins :].square()
        # N x 129 x 99
        logmel = torch.log(torch.matmul(self.mel, power) + LOG_EPS)
        # N x n_mels x 99
        return logmel - logmel.mean(dim=-1, keepdim=True)


class DilatedBlock(nn.Module):
    """Depthwise dilated 3-tap conv + pointwise conv, BatchNorm, ReLU, residual."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv1d(
            channels, channels, 3, padding=dilation, dilation=dilation, groups=channels, bias=False
        )
        self.bn1 = nn.BatchNorm1d(channels)
        self.pointwise = nn.Conv1d(channels, channels, 1, bias=False)
        self.bn2 = nn.BatchNorm1d(channels)

    def forward(self, x: Tensor) -> Tensor:
        y = torch.relu(self.bn1(self.depthwise(x)))
        return torch.relu(x + self.bn2(self.pointwise(y)))


class SpeechCNN(nn.Module):
    def __init__(
        self,
        num_classes: int = 2,
        n_mels: int = 40,
        stem: tuple[int, int] = (16, 32),
        channels: int = 160,
        hidden: int = 64,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if n_mels % 4 or n_mels < 8:
            raise ValueError(f"n_mels must be a multiple of 4 and at least 8, got {n_mels}")
        if channels < 8 or hidden < 2 or not 0.0 <= dropout < 1.0:
            raise ValueError(f"bad sizes: channels={channels} hidden={hidden} dropout={dropout}")
        self.frontend = LogMel(n_mels)
        c1, c2 = stem
        self.stem = nn.Sequential(
            nn.Conv2d(1, c1, 3, stride=(2, 1), padding=1, bias=False),
            nn.BatchNorm2d(c1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, 3, stride=(2, 1), padding=1, bias=False),
            nn.BatchNorm2d(c2),
            nn.ReLU(inplace=True),
        )
        self.fold = nn.Sequential(
            nn.Conv1d(c2 * (n_mels // 4), channels, 1, bias=False),
            nn.BatchNorm1d(channels),
            nn.ReLU(inplace=True),
        )
        self.blocks = nn.Sequential(*(DilatedBlock(channels, d) for d in DILATIONS))
        self.classifier = nn.Sequential(
            nn.Linear(2 * channels, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv1d | nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for block in self.blocks:
            assert isinstance(block, DilatedBlock)
            nn.init.zeros_(block.bn2.weight)  # each residual block starts as the identity

    def forward(self, x: Tensor) -> Tensor:
        # N x 16000 (raw samples in [-1, 1])
        x = self.frontend(x)
        # N x 40 x 99 (log-mel, per-band mean removed)
        x = self.stem(x.unsqueeze(1))
        # N x 32 x 10 x 99
        x = self.fold(x.flatten(1, 2))
        # N x 160 x 99
        x = self.blocks(x)
        # N x 160 x 99
        x = torch.cat([x.mean(dim=-1), x.amax(dim=-1)], dim=1)
        # N x 320
        logits: Tensor = self.classifier(x)
        # N x 2 [no_speech, speech]
        return logits


@register_model(
    "speech_cnn",
    input_shape=(WINDOW_SAMPLES,),
    num_classes=2,
    task="speech_detection",
)
def speech_cnn(*, num_classes: int = 2, **kwargs: Any) -> SpeechCNN:
    """Log-mel front end + 2-D stem + dilated 1-D CNN on 1 s of 16 kHz audio -> 2 logits."""
    return SpeechCNN(num_classes=num_classes, **kwargs)

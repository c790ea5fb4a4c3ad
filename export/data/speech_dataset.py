"""A torch ``Dataset`` over speech-corpus windows, with train-time augmentation.

Items are ``(float32 tensor 1×16000, label)``: one channel of raw 16 kHz samples, the layout the
speech model's first 1-D convolution expects. With ``augment=True`` each draw is rolled circularly
by up to ``max_shift`` samples either way (the seam this makes is one sample; speech onsets then
fall anywhere in the window) and scaled by a gain uniform in ``gain_db`` decibels, scaled back down
if the peak would pass 1.0 so samples stay in [-1, 1] as they are at serving time.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch.utils.data import Dataset

from export.data.speech import WINDOW_SAMPLES


class SpeechWindowDataset(Dataset[tuple[torch.Tensor, int]]):
    """Windows (N, 16000) float32 in [-1, 1] + labels (N,) → ``(1×16000 tensor, label)``."""

    def __init__(
        self,
        x: NDArray[np.float32],
        y: NDArray[np.integer[Any]],
        *,
        augment: bool = False,
        max_shift: int = 1600,
        gain_db: tuple[float, float] = (-12.0, 6.0),
    ) -> None:
        if x.ndim != 2 or x.shape[1] != WINDOW_SAMPLES:
            raise ValueError(f"windows must be (N, {WINDOW_SAMPLES}), got {x.shape}")
        if len(x) != len(y):
            raise ValueError(f"{len(x)} windows but {len(y)} labels")
        self.x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        self.y = np.asarray(y, dtype=np.int64)
        self.augment = augment
        self.max_shift = max_shift
        self.gain_db = gain_db

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        w = self.x[index]
        if self.augment:
            if self.max_shift > 0:
                shift = int(torch.randint(-self.max_shift, self.max_shift + 1, ()).item())
                w = torch.roll(w, shift)
            lo, hi = self.gain_db
            w = w * 10.0 ** ((lo + (hi - lo) * torch.rand(())) / 20.0)
            peak = float(w.abs().max())
            if peak > 1.0:
                w = w / peak
        return w.unsqueeze(0), int(self.y[index])

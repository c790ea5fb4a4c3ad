"""GPU memory and utilisation through NVML, when it is there.

NVML comes from the optional `pynvml` module (package nvidia-ml-py); without it, or without a
driver, `GpuMonitor.open` returns None and the GPU gauges are simply not exported. The reads are
cheap (microseconds) and happen at scrape time, so there is no polling thread.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
from types import ModuleType
from typing import Any

logger = logging.getLogger(__name__)


def _nvml() -> ModuleType | None:
    try:
        import pynvml
    except ImportError:
        return None
    module: ModuleType = pynvml
    return module


class GpuMonitor:
    """One GPU, addressed by its CUDA device ordinal (as ONNX Runtime's device_id)."""

    def __init__(self, nvml: ModuleType, handle: Any, ordinal: int) -> None:
        self._nvml = nvml
        self._handle = handle
        self._lock = threading.Lock()
        self.ordinal = ordinal

    @classmethod
    def open(cls, ordinal: int) -> GpuMonitor | None:
        """Monitor for CUDA device `ordinal`, or None when NVML is unavailable."""
        nvml = _nvml()
        if nvml is None:
            logger.info("pynvml is not installed: GPU memory/utilisation metrics are off")
            return None
        try:
            nvml.nvmlInit()
            handle = _handle_for_ordinal(nvml, ordinal)
        except Exception as exc:  # NVMLError subclasses per cause; any of them means "no data"
            logger.warning("NVML unavailable for GPU %d: %s; GPU metrics are off", ordinal, exc)
            return None
        return cls(nvml, handle, ordinal)

    def memory(self) -> tuple[float, float]:
        """(used, total) bytes; NaN when the read fails (a scrape must not raise)."""
        with self._lock:
            try:
                info = self._nvml.nvmlDeviceGetMemoryInfo(self._handle)
                return float(info.used), float(info.total)
            except Exception:  # NVML errors are transient (driver reset, GPU lost)
                return math.nan, math.nan

    def utilization(self) -> float:
        """Fraction of the last sample period the GPU was busy (0..1); NaN when unknown."""
        with self._lock:
            try:
                return float(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu) / 100.0
            except Exception:
                return math.nan

    def close(self) -> None:
        # Already shut down or never fully up: nothing left to release.
        with contextlib.suppress(Exception):
            self._nvml.nvmlShutdown()


def _handle_for_ordinal(nvml: ModuleType, ordinal: int) -> Any:
    """NVML indexes every GPU on the host; CUDA numbers only the visible ones.

    Honour CUDA_VISIBLE_DEVICES when it lists indexes or UUIDs. Known limitation: MIG instance
    names in CUDA_VISIBLE_DEVICES are not resolved (the parent GPU's index is used).
    """
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v]
    if ordinal < len(visible):
        entry = visible[ordinal]
        if entry.isdigit():
            return nvml.nvmlDeviceGetHandleByIndex(int(entry))
        if entry.startswith("GPU-"):
            return nvml.nvmlDeviceGetHandleByUUID(entry)
    return nvml.nvmlDeviceGetHandleByIndex(ordinal)

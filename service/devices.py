"""Can this process run CUDA at all? Answered before ONNX Runtime is asked, so a CPU-only machine
starts quietly.

ONNX Runtime's GPU build lists CUDAExecutionProvider as available whether or not a GPU or the
CUDA libraries are present; asking it for CUDA on such a machine prints several
`[E:onnxruntime:...] Failed to load library ... libcublasLt.so.13` lines per session and then runs
on CPU anyway. With `--device auto` convserve checks first — an NVIDIA driver, then the CUDA
provider library and everything it links — and when CUDA cannot work it asks for CPU only and
says why in one INFO line. An explicit `--device cuda[:N]` still asks ONNX Runtime, so a broken
GPU set-up stays loud (its errors, a warning, and the provider metric's alert).
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from pathlib import Path

logger = logging.getLogger(__name__)

_DRIVER_MARKERS = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/nvidia0")
_lock = threading.Lock()
_checked: list[str | None] = []
_announced: set[str] = set()


def cuda_unavailable_reason() -> str | None:
    """Why CUDA cannot work in this process, or None when it may (checked once, then cached)."""
    with _lock:
        if not _checked:
            _checked.append(_check())
        return _checked[0]


def _check() -> str | None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "this ONNX Runtime build has no CUDA execution provider"
    if not any(os.path.exists(p) for p in _DRIVER_MARKERS):
        return "no NVIDIA GPU driver found (no /proc/driver/nvidia, no /dev/nvidia*)"
    provider = Path(ort.__file__).parent / "capi" / "libonnxruntime_providers_cuda.so"
    if not provider.is_file():
        return f"{provider.name} is missing from the ONNX Runtime install"
    problem = _dlopen(provider)
    preload = getattr(ort, "preload_dlls", None)
    if problem is not None and preload is not None:
        # The CUDA/cuDNN libraries may come from the nvidia-* wheels, which onnxruntime-gpu can
        # load itself; only then is the provider's dependency list satisfiable.
        try:
            preload(directory="")
        except Exception:  # what stays missing is named by the second dlopen
            logger.debug("onnxruntime.preload_dlls failed", exc_info=True)
        problem = _dlopen(provider)
    if problem is not None:
        return f"the CUDA libraries ONNX Runtime needs cannot be loaded ({problem})"
    return None


def _dlopen(library: Path) -> str | None:
    """Load a shared library to resolve its dependencies; dlopen's error (naming the missing
    library) or None."""
    try:
        ctypes.CDLL(str(library), mode=os.RTLD_LAZY | os.RTLD_LOCAL)
    except OSError as exc:
        return str(exc)
    return None


def announce_cpu_fallback(reason: str) -> None:
    """One INFO line per process (per reason): --device auto runs on CPU, and why. Sessions
    are created in several threads at once, hence the lock."""
    with _lock:
        if reason in _announced:
            return
        _announced.add(reason)
    logger.info("--device auto: running on CPU: %s", reason)

"""Is there an NVIDIA GPU here? The same test as run.sh's, for the tests and the benchmark.

Presence only (a driver's device node or a GPU that nvidia-smi lists), not whether ONNX Runtime
can use it: a host with a GPU whose CUDA libraries are broken must fail the CUDA tests, not skip
them.
"""

from __future__ import annotations

import glob
import shutil
import subprocess


def no_gpu_reason() -> str | None:
    """Why there is no GPU here, or None when one is present."""
    if glob.glob("/dev/nvidia[0-9]*"):
        return None
    smi = shutil.which("nvidia-smi")
    if smi is not None:
        try:
            listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            listed = None
        lines = listed.stdout.split("\n") if listed is not None else []
        if any(line.startswith("GPU ") for line in lines):
            return None
    return "no GPU present (no /dev/nvidia[0-9]*, and no GPU listed by nvidia-smi)"

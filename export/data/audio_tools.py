"""The external programs and files the speech corpus is rendered with, and audio I/O helpers.

Every tool runs as a subprocess with a timeout; a missing program or file is a
:class:`DatasetError` that names the Debian package providing it. Audio comes back as 16 kHz mono
float32 (channels averaged, resampled with a polyphase filter when the rate differs).
"""

from __future__ import annotations

import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
from numpy.typing import NDArray
from scipy.signal import resample_poly

from export.data.errors import DatasetError

SAMPLE_RATE = 16_000

#: program -> Debian package that provides it.
TOOL_PACKAGES: dict[str, str] = {
    "espeak-ng": "espeak-ng",
    "flite": "flite",
    "sox": "sox",
    "fluidsynth": "fluidsynth",
}
# FluidR3 (fluid-soundfont-gm/-gs, and the MuseScore fonts derived from it) is reserved for
# independent evaluation: never used here.
SOUNDFONT = (Path("/usr/share/sounds/sf2/TimGM6mb.sf2"), "timgm6mb-soundfont")
TEST_SOUNDFONT = (Path("/usr/share/sounds/sf2/sf_GMbank.sf2"), "csound-soundfont")
TOOL_TIMEOUT_S = 300.0  # generous: on a loaded 2-core machine a 20 s render can take a minute


def require_tool(name: str) -> str:
    """Absolute path of program ``name``, or :class:`DatasetError` saying what to install."""
    path = shutil.which(name)
    if path is None:
        package = TOOL_PACKAGES.get(name, name)
        raise DatasetError(
            f"`{name}` not found on PATH; the speech corpus needs it: apt-get install {package}"
        )
    return path


def require_file(path: Path, package: str) -> Path:
    if not path.is_file():
        raise DatasetError(
            f"{path} not found; the speech corpus needs it: apt-get install {package}"
        )
    return path


def find_soundfont(*, test: bool = False) -> Path:
    """The General MIDI soundfont fluidsynth renders Doom music with (test split: its own)."""
    return require_file(*(TEST_SOUNDFONT if test else SOUNDFONT))


def run_tool(args: list[str], *, timeout: float = TOOL_TIMEOUT_S) -> None:
    """Run ``args`` (``args[0]`` a program name), raising :class:`DatasetError` on any failure."""
    program = require_tool(args[0])
    try:
        done = subprocess.run(
            [program, *args[1:]],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise DatasetError(f"`{' '.join(args)[:200]}` timed out after {timeout:.0f} s") from exc
    except OSError as exc:
        raise DatasetError(f"cannot run {args[0]}: {exc}") from exc
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip()[-300:]
        raise DatasetError(
            f"`{' '.join(args)[:200]}` failed with exit status {done.returncode}: {tail}"
        )


def to_mono_16k(audio: NDArray[np.floating], rate: int) -> NDArray[np.float32]:
    """Average channels and resample ``rate`` → 16 kHz; float32."""
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if rate != SAMPLE_RATE:
        ratio = Fraction(SAMPLE_RATE, rate)
        x = resample_poly(x, ratio.numerator, ratio.denominator)
    return np.asarray(x, dtype=np.float32)


def read_wav_16k(path: Path) -> NDArray[np.float32]:
    """Read a rendered audio file as 16 kHz mono float32."""
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=False)
    except (RuntimeError, OSError) as exc:  # soundfile raises LibsndfileError(RuntimeError)
        raise DatasetError(f"{path}: cannot read rendered audio: {exc}") from exc
    if audio.size == 0:
        raise DatasetError(f"{path}: rendered audio is empty")
    return to_mono_16k(audio, int(rate))

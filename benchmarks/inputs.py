"""Real encoded inputs for the task API: JPEG photographs, Fashion-MNIST PNGs, espeak-ng WAVs.

    python benchmarks/inputs.py            # writes .cache/bench-inputs/<kind>/ once

* jpeg/: scikit-image's sample photographs (astronaut, coffee, chelsea, rocket, ...), saved as
  JPEG quality 90 at their own sizes (300×451 up to 1411×1411): what a phone or web client sends.
* png/: the first 64 Fashion-MNIST test images as 28×28 grayscale PNGs (from the system dataset,
  /usr/share/datasets/fashion-mnist); skipped when the dataset is not installed.
* wav/: short English phrases spoken by espeak-ng (16-bit PCM at espeak's 22.05 kHz, so the
  server resamples to the model's 16 kHz: part of the end-to-end cost); skipped without espeak-ng.
* wav1s/, wav10s/, wav60s/: clips of exactly 1, 10 and 60 seconds at 16 kHz, 16-bit mono (what a
  voice pipeline sends a speech detector): the espeak-ng phrases, resampled, cut to 1 s from the
  start of speech, or strung together with pauses of quiet noise between them up to 10 / 60 s.
"""

from __future__ import annotations

import argparse
import gzip
import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.common import INPUTS_DIR

SKIMAGE_SAMPLES = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "colorwheel",
    "retina",
)
PHRASES = (
    "The quick brown fox jumps over the lazy dog.",
    "Please turn the lights off in the kitchen.",
    "What time does the next train leave?",
    "Benchmarks measure what a server can do.",
    "One, two, three, four, five.",
    "It is going to rain this afternoon.",
)
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
KINDS = ("jpeg", "png", "wav", "wav1s", "wav10s", "wav60s")
CLIP_RATE = 16_000
CLIPS = {"wav1s": (1.0, 6), "wav10s": (10.0, 4), "wav60s": (60.0, 2)}  # kind -> (seconds, files)


def build(out: Path = INPUTS_DIR) -> dict[str, list[Path]]:
    made: dict[str, list[Path]] = {"jpeg": _jpegs(out / "jpeg"), "png": _pngs(out / "png")}
    made["wav"] = _wavs(out / "wav")
    for kind, (seconds, count) in CLIPS.items():
        made[kind] = _clips(out / kind, made["wav"], seconds, count)
    return made


def load(kind: str, out: Path = INPUTS_DIR) -> list[bytes]:
    """The encoded files of one kind (one of KINDS), building them first if missing."""
    folder = out / kind
    files = sorted(folder.glob("*")) if folder.is_dir() else []
    if not files:
        files = build(out)[kind]
    if not files:
        raise RuntimeError(f"no {kind} inputs could be made (see benchmarks/inputs.py)")
    return [f.read_bytes() for f in files]


def _jpegs(folder: Path) -> list[Path]:
    existing = sorted(folder.glob("*.jpg"))
    if existing:
        return existing
    import skimage.data
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in SKIMAGE_SAMPLES:
        image = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        path = folder / f"{name}.jpg"
        image.save(path, format="JPEG", quality=90)
        paths.append(path)
    return paths


def _pngs(folder: Path, count: int = 64) -> list[Path]:
    existing = sorted(folder.glob("*.png"))
    if existing:
        return existing
    source = FASHION_DIR / "t10k-images-idx3-ubyte.gz"
    if not source.is_file():
        return []
    from PIL import Image

    raw = gzip.decompress(source.read_bytes())
    n = int.from_bytes(raw[4:8], "big")
    images = np.frombuffer(raw, np.uint8, offset=16).reshape(n, 28, 28)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(min(count, n)):
        buf = io.BytesIO()
        Image.fromarray(images[i], mode="L").save(buf, format="PNG")
        path = folder / f"fashion_{i:03d}.png"
        path.write_bytes(buf.getvalue())
        paths.append(path)
    return paths


def _wavs(folder: Path) -> list[Path]:
    existing = sorted(folder.glob("*.wav"))
    if existing:
        return existing
    espeak = shutil.which("espeak-ng") or shutil.which("espeak")
    if espeak is None:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, phrase in enumerate(PHRASES):
        path = folder / f"phrase_{i}.wav"
        subprocess.run([espeak, "-w", str(path), phrase], check=True, timeout=60)
        paths.append(path)
    return paths


def _clips(folder: Path, phrases: list[Path], seconds: float, count: int) -> list[Path]:
    existing = sorted(folder.glob("*.wav"))
    if existing or not phrases:
        return existing
    import soundfile
    from scipy.signal import resample_poly

    speech = []
    for path in phrases:
        x, rate = soundfile.read(path, dtype="float32")
        x = resample_poly(x, CLIP_RATE, rate).astype(np.float32)
        loud = np.flatnonzero(np.abs(x) > 0.02)
        speech.append(x[loud[0] : loud[-1] + 1] if loud.size else x)
    rng = np.random.default_rng(0)
    n = round(seconds * CLIP_RATE)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        if seconds <= 1:
            clip = np.resize(speech[i % len(speech)], n)  # one phrase's first second
        else:
            parts, length, k = [], 0, i
            while length < n:
                pause = 0.002 * rng.standard_normal(int(rng.uniform(0.2, 0.8) * CLIP_RATE))
                parts += [speech[k % len(speech)], pause.astype(np.float32)]
                length += len(parts[-2]) + len(parts[-1])
                k += 1
            clip = np.concatenate(parts)[:n]
        path = folder / f"clip_{i}.wav"
        soundfile.write(path, clip, CLIP_RATE, subtype="PCM_16")
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=INPUTS_DIR)
    args = parser.parse_args(argv)
    for kind, paths in build(args.out).items():
        size = sum(p.stat().st_size for p in paths)
        print(f"{kind}: {len(paths)} files, {size / 1e3:.0f} kB in {args.out / kind}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

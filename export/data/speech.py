"""The speech / no-speech corpus: 1 s windows at 16 kHz, labelled 1 = speech, 0 = no speech.

``build_speech_corpus`` renders the sources of :mod:`export.data.speech_sources`, cuts and mixes
windows, and caches the result as one ``.npz`` under ``<cache root>/speech/`` (cache root:
``$CONVSERVE_CACHE_DIR``, else ``~/.cache/convserve``), keyed by a hash of every parameter and
:data:`CORPUS_VERSION`. Same parameters, same arrays — on one machine with the same tool versions
(espeak-ng, flite, sox and fluidsynth output is deterministic, but may change between releases).

Windows (every one peak-normalised to a random −35..−1 dBFS, so loudness is no cue, except digital
near-silence, which stays quiet because that is what silence is):

* **speech** (half of each split, exactly ⌊n/2⌋): a 1 s cut of a speech render in which ≥ 60 % of
  the 10 ms frames are within 30 dB of the render's loud frames (so pauses are short), mixed with a
  non-speech window of the same split at an SNR uniform in [0, 30] dB, or left clean (25 %);
* **no speech**: music 30 %, synth 30 %, effects 30 % (1–3 effects placed in the window), near
  silence 10 %; 30 % of the non-silent ones get a second non-speech source 3–20 dB below.

Every window gets a noise floor 45–75 dB below its peak, so exact digital zeros (espeak-ng's pauses)
cannot give speech away. Validation windows use validation sources only (held-out voices, songs,
effects, synth clips). Samples are stored as int16 (quantisation noise ~−90 dBFS); the arrays
returned are those int16 values / 32767 as float32, whether built or loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from export.data import speech_sources as src
from export.data.audio_tools import SAMPLE_RATE as SAMPLE_RATE
from export.data.audio_tools import require_tool
from export.data.errors import DatasetError

WINDOW_SAMPLES = 16_000
CORPUS_VERSION = 1
LABEL_NAMES = ("no_speech", "speech")
KIND_NAMES = ("speech", "music", "synth", "effects", "silence")
CACHE_ENV = "CONVSERVE_CACHE_DIR"
_NONSPEECH_WEIGHTS = {"music": 0.3, "synth": 0.3, "effects": 0.3, "silence": 0.1}
_HOP = 160  # 10 ms frames for the speech-activity measure
T = TypeVar("T")


@dataclass(frozen=True)
class SpeechCorpus:
    """Windows ``x_*`` (N, 16000) float32 in [-1, 1], labels ``y_*`` int64 (1 = speech)."""

    x_train: NDArray[np.float32]
    y_train: NDArray[np.int64]
    x_val: NDArray[np.float32]
    y_val: NDArray[np.int64]
    kind_train: NDArray[np.int8]  # index into KIND_NAMES: what each window mainly is
    kind_val: NDArray[np.int8]
    metadata: dict[str, Any] = field(default_factory=dict)  # voices/sources per split, params
    path: Path | None = None  # the cache file


def default_cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV)
    return (Path(root) if root else Path.home() / ".cache" / "convserve") / "speech"


def _progress(items: Iterable[T], total: int, desc: str, enabled: bool) -> Iterator[T]:
    if not enabled:
        yield from items
        return
    try:
        from tqdm import tqdm
    except ImportError:
        step = max(1, total // 10)
        for i, item in enumerate(items, 1):
            if i % step == 0 or i == total:
                print(f"{desc}: {i}/{total}", file=sys.stderr, flush=True)
            yield item
        return
    yield from tqdm(items, total=total, desc=desc, file=sys.stderr, leave=False)


def _rms(x: NDArray[np.float32]) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) + 1e-9


def _db(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(10.0 ** (rng.uniform(lo, hi) / 20.0))


def _speech_starts(audio: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Trim silence off both ends; sample offsets of windows that are mostly speech."""
    frames = len(audio) // _HOP
    energy = np.square(audio[: frames * _HOP], dtype=np.float64).reshape(frames, _HOP).mean(1)
    active = energy > np.percentile(energy, 95) * 1e-3 if frames else energy > 0  # −30 dB
    where = np.flatnonzero(active)
    if where.size == 0:
        return audio[:0], np.zeros(0, np.int64)
    first, last = max(0, where[0] - 5), min(frames, where[-1] + 6)
    trimmed, active = audio[first * _HOP : last * _HOP], active[first:last]
    per_window = WINDOW_SAMPLES // _HOP
    cum = np.concatenate([[0], np.cumsum(active)])
    fraction = (cum[per_window:] - cum[:-per_window]) / per_window
    return trimmed, np.flatnonzero(fraction >= 0.6).astype(np.int64) * _HOP


def _place(rng: np.random.Generator, clip: NDArray[np.float32]) -> NDArray[np.float32]:
    """A random 1 s cut of ``clip``, or ``clip`` at a random position in 1 s of zeros."""
    if len(clip) >= WINDOW_SAMPLES:
        start = int(rng.integers(0, len(clip) - WINDOW_SAMPLES + 1))
        return clip[start : start + WINDOW_SAMPLES].copy()
    out = np.zeros(WINDOW_SAMPLES, np.float32)
    start = int(rng.integers(0, WINDOW_SAMPLES - len(clip) + 1))
    out[start : start + len(clip)] = clip
    return out


class _Mixer:
    """Draws the windows of one split from that split's sources."""

    def __init__(self, sources: list[src.Source], split: str) -> None:
        self.speech: list[tuple[NDArray[np.float32], NDArray[np.int64]]] = []
        self.pools: dict[str, list[NDArray[np.float32]]] = {}
        for s in sources:
            if s.split != split:
                continue
            if s.kind == "speech":
                trimmed, starts = _speech_starts(s.audio)
                if starts.size:
                    self.speech.append((trimmed, starts))
            elif _rms(s.audio) > 1e-4:
                self.pools.setdefault(s.kind, []).append(s.audio)
        if not self.speech or not self.pools:
            raise DatasetError(f"the {split} split has no usable speech or non-speech sources")
        kinds = [k for k in _NONSPEECH_WEIGHTS if k in self.pools or k == "silence"]
        weights = np.array([_NONSPEECH_WEIGHTS[k] for k in kinds])
        self.kinds, self.weights = kinds, weights / weights.sum()

    def _source(self, rng: np.random.Generator, kind: str) -> NDArray[np.float32]:
        pool = self.pools[kind]
        if kind != "effects":
            return _place(rng, pool[int(rng.integers(len(pool)))])
        out = np.zeros(WINDOW_SAMPLES, np.float32)
        for _ in range(int(rng.integers(1, 4))):
            clip = _place(rng, pool[int(rng.integers(len(pool)))])
            out += clip / np.float32(_rms(clip) * _db(rng, 0, 12))
        return out

    def nonspeech(self, rng: np.random.Generator) -> tuple[NDArray[np.float32], str]:
        kind = str(rng.choice(self.kinds, p=self.weights))
        if kind == "silence":
            noise = rng.standard_normal(WINDOW_SAMPLES).astype(np.float32)
            return noise * np.float32(_db(rng, -85, -55)), kind
        x = self._source(rng, kind)
        x /= np.float32(_rms(x))
        if rng.random() < 0.3:
            other = self._source(rng, str(rng.choice(list(self.pools))))
            x += other * np.float32(_db(rng, -20, -3) / _rms(other))
        return x, kind

    def speech_window(self, rng: np.random.Generator) -> NDArray[np.float32]:
        audio, starts = self.speech[int(rng.integers(len(self.speech)))]
        start = int(starts[int(rng.integers(len(starts)))])
        x = audio[start : start + WINDOW_SAMPLES].copy()
        x /= np.float32(_rms(x))
        if rng.random() < 0.75:
            bg, _ = self.nonspeech(rng)
            x += bg * np.float32(_db(rng, -30, 0) / _rms(bg))  # SNR uniform in [0, 30] dB
        return x

    def windows(
        self, rng: np.random.Generator, n: int, progress: bool, desc: str
    ) -> tuple[NDArray[np.int16], NDArray[np.int64], NDArray[np.int8]]:
        y = rng.permutation(np.arange(n) < n // 2).astype(np.int64)
        x = np.empty((n, WINDOW_SAMPLES), np.int16)
        kinds = np.empty(n, np.int8)
        for i in _progress(range(n), n, desc, progress):
            if y[i]:
                w, kind = self.speech_window(rng), "speech"
            else:
                w, kind = self.nonspeech(rng)
            if kind != "silence":
                peak = float(np.abs(w).max()) + 1e-9
                w += rng.standard_normal(WINDOW_SAMPLES).astype(np.float32) * np.float32(
                    peak * _db(rng, -75, -45)
                )
                w *= np.float32(_db(rng, -35, -1) / (float(np.abs(w).max()) + 1e-9))
            x[i] = np.clip(np.round(w * 32767.0), -32767, 32767).astype(np.int16)
            kinds[i] = KIND_NAMES.index(kind)
        return x, y, kinds


def _plan(
    rng: np.random.Generator, n_train: int, n_val: int
) -> tuple[list[src.Job], dict[str, Any]]:
    for tool in ("espeak-ng", "flite", "sox", "fluidsynth"):
        require_tool(tool)
    voices = src.split_voices(rng, *src.available_voices())
    songs = src.music_songs()
    names = sorted(songs)
    order = [names[i] for i in rng.permutation(len(names))]
    n_val_songs = max(1, round(len(names) * 0.2))
    song_split = {"val": sorted(order[:n_val_songs]), "train": sorted(order[n_val_songs:])}
    jobs: list[src.Job] = []
    for split, n, cap in (("train", n_train, 1.0), ("val", n_val, 0.25)):
        jobs += src.plan_speech(rng, voices, split, int(np.clip(n // 25, 6, 240 * cap)))
        count = int(np.clip(n // 200, 2, 30 * cap))
        jobs += src.plan_music(rng, songs, song_split[split], split, count)
        jobs += src.plan_synth(rng, split, int(np.clip(n // 75, 4, 80 * cap)), len(jobs))
    return jobs, {"voices": voices, "songs": song_split}


def _render_all(jobs: list[src.Job], workers: int, progress: bool) -> list[src.Source]:
    # Threads are enough: each job is a subprocess, and results keep their planned order.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(_progress(pool.map(src.render, jobs), len(jobs), "rendering sources", progress))


def _params(seed: int, n_train: int, n_val: int) -> dict[str, int]:
    return {"version": CORPUS_VERSION, "seed": seed, "n_train": n_train, "n_val": n_val}


def cache_path(cache_dir: Path | None, *, seed: int, n_train: int, n_val: int) -> Path:
    """Where the corpus with these parameters is (or will be) cached."""
    blob = json.dumps(_params(seed, n_train, n_val), sort_keys=True).encode()
    name = f"speech-v{CORPUS_VERSION}-{hashlib.sha256(blob).hexdigest()[:16]}.npz"
    return (cache_dir if cache_dir is not None else default_cache_dir()) / name


def _corpus(arrays: dict[str, NDArray[Any]], metadata: dict[str, Any], path: Path) -> SpeechCorpus:
    scale = np.float32(1.0 / 32767.0)
    return SpeechCorpus(
        x_train=arrays["x_train"].astype(np.float32) * scale,
        y_train=arrays["y_train"].astype(np.int64),
        x_val=arrays["x_val"].astype(np.float32) * scale,
        y_val=arrays["y_val"].astype(np.int64),
        kind_train=arrays["kind_train"].astype(np.int8),
        kind_val=arrays["kind_val"].astype(np.int8),
        metadata=metadata,
        path=path,
    )


def load_speech_corpus(path: Path) -> SpeechCorpus:
    """Read a cached corpus file."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        return _corpus(arrays, json.loads(str(arrays.pop("metadata"))), path)
    except (OSError, KeyError, ValueError) as exc:
        raise DatasetError(f"{path}: unreadable speech corpus cache: {exc}") from exc


def build_speech_corpus(
    cache_dir: Path | None = None,
    *,
    seed: int = 0,
    n_train: int = 6000,
    n_val: int = 1500,
    progress: bool = True,
    workers: int | None = None,
) -> SpeechCorpus:
    """Build (or load from the cache) the speech / no-speech corpus; see the module docstring."""
    if n_train < 2 or n_val < 2:
        raise ValueError("n_train and n_val must be at least 2 (one window per class)")
    path = cache_path(cache_dir, seed=seed, n_train=n_train, n_val=n_val)
    if path.is_file():
        try:
            return load_speech_corpus(path)
        except DatasetError as exc:
            print(f"rebuilding: {exc}", file=sys.stderr)
    began = time.monotonic()
    jobs, plan = _plan(np.random.default_rng([seed, 1]), n_train, n_val)
    sources = _render_all(jobs, workers or os.cpu_count() or 2, progress)
    sources += src.effect_sources(np.random.default_rng([seed, 2]))
    arrays: dict[str, NDArray[Any]] = {}
    for i, (split, n) in enumerate((("train", n_train), ("val", n_val))):
        mixer = _Mixer(sources, split)
        x, y, kinds = mixer.windows(np.random.default_rng([seed, 3, i]), n, progress, split)
        arrays |= {f"x_{split}": x, f"y_{split}": y, f"kind_{split}": kinds}
    metadata: dict[str, Any] = {
        **_params(seed, n_train, n_val),
        "sample_rate": SAMPLE_RATE,
        "window_samples": WINDOW_SAMPLES,
        "label_names": list(LABEL_NAMES),
        "kind_names": list(KIND_NAMES),
        **plan,
        "sources": {
            split: {
                kind: sorted({s.identity for s in sources if s.split == split and s.kind == kind})
                for kind in ("speech", "music", "synth", "effects")
            }
            for split in ("train", "val")
        },
        "build_seconds": round(time.monotonic() - began, 1),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # same directory, so the rename is atomic
    try:
        with tmp.open("wb") as f:
            payload: dict[str, Any] = {"metadata": np.array(json.dumps(metadata)), **arrays}
            np.savez(f, **payload)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if progress:
        print(
            f"speech corpus: {n_train} + {n_val} windows from {len(sources)} sources in "
            f"{metadata['build_seconds']} s -> {path}",
            file=sys.stderr,
        )
    return _corpus(arrays, metadata, path)

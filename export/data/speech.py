"""The speech / no-speech corpus: 1 s windows at 16 kHz, labelled 1 = speech, 0 = no speech.

``build_speech_corpus`` gathers the sources (recordings shipped by Debian packages,
:mod:`export.data.speech_packages`; espeak-ng / flite voices, Freedoom music and effects and sox
synth renders, :mod:`export.data.speech_sources`; NumPy-synthesised events and noises,
:mod:`export.data.speech_synth`), draws windows from them (:mod:`export.data.speech_mix`: label
rule, mixing, partial windows) and passes them through a channel (:mod:`export.data.speech_channel`:
reverberation, telephone band, GSM and mu-law). It caches the result as one ``.npz`` under
``<cache root>/speech/`` (cache root: ``$CONVSERVE_CACHE_DIR``, else ``~/.cache/convserve``), keyed
by a hash of every parameter and :data:`CORPUS_VERSION`. Same parameters, same arrays — on one
machine with the same package and tool versions.

Three splits of **whole sources** (a speaker, a language's speaker, a package of sounds, a
generator kind, a soundfont, a song): ``train`` (learned from), ``val`` (chooses the checkpoint and
the decision threshold) and ``test`` (only reported). No speaker, voice, song, effect, event kind or
sound package is in two splits; only the steady background noises (hum, wind, breath, fan, room
tone, sox noise) and near-silence are drawn in every split, with fresh random parameters.

Each split is half speech (exactly ⌊n/2⌋ windows). Per window the corpus stores the label
(``y_*``), what it mainly is (``kind_*``, index into :data:`KIND_NAMES`), its main source
(``src_*``, index into ``metadata["source_names"][split]``: the speech source of a speech window)
and its conditions (``cond_*``, bits of :data:`export.data.speech_mix.COND_BITS`). Samples are
stored as int16 with one LSB of dither (so exact digital zeros are never a cue); the arrays
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

from export.data import speech_channel as channel
from export.data import speech_sources as src
from export.data import speech_synth as synth
from export.data.audio_tools import SAMPLE_RATE as SAMPLE_RATE
from export.data.audio_tools import require_tool
from export.data.errors import DatasetError
from export.data.speech_mix import MIN_SPEECH_S, Mixer, Pool, finish
from export.data.speech_packages import packaged_sources

WINDOW_SAMPLES = 16_000
CORPUS_VERSION = 2
LABEL_NAMES = ("no_speech", "speech")
KIND_NAMES = ("speech", "music", "events", "noise", "silence")
SPLITS = ("train", "val", "test")
CACHE_ENV = "CONVSERVE_CACHE_DIR"
_CHUNK = 512  # windows per codec batch
_ARRAYS = ("x", "y", "kind", "src", "cond")
T = TypeVar("T")


@dataclass(frozen=True)
class SpeechCorpus:
    """Per split: windows ``x_*`` (N, 16000) float32 in [-1, 1], labels ``y_*`` (1 = speech)."""

    x_train: NDArray[np.float32]
    y_train: NDArray[np.int64]
    x_val: NDArray[np.float32]
    y_val: NDArray[np.int64]
    x_test: NDArray[np.float32]
    y_test: NDArray[np.int64]
    kind_train: NDArray[np.int8]  # index into KIND_NAMES: what each window mainly is
    kind_val: NDArray[np.int8]
    kind_test: NDArray[np.int8]
    src_train: NDArray[np.int16]  # index into metadata["source_names"][split]
    src_val: NDArray[np.int16]
    src_test: NDArray[np.int16]
    cond_train: NDArray[np.uint8]  # speech_mix.COND_BITS
    cond_val: NDArray[np.uint8]
    cond_test: NDArray[np.uint8]
    metadata: dict[str, Any] = field(default_factory=dict)  # sources per split, params
    path: Path | None = None  # the cache file

    def split(self, name: str) -> dict[str, NDArray[Any]]:
        """``{"x", "y", "kind", "src", "cond"}`` of one split."""
        return {a: getattr(self, f"{a}_{name}") for a in _ARRAYS}

    def source_names(self, split: str) -> list[str]:
        return list(self.metadata["source_names"][split])


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
        yield from items
        return
    yield from tqdm(items, total=total, desc=desc, file=sys.stderr, leave=False)


def _plan(rng: np.random.Generator, sizes: dict[str, int]) -> tuple[list[src.Job], dict[str, Any]]:
    for tool in ("espeak-ng", "flite", "sox", "fluidsynth"):
        require_tool(tool)
    voices = src.split_voices(rng, *src.available_voices())
    songs = src.music_songs()
    names = sorted(songs)
    order = [names[i] for i in rng.permutation(len(names))]
    k = max(1, round(len(names) * 0.2))
    song_split = {"val": sorted(order[:k]), "test": sorted(order[k : 2 * k]),
                  "train": sorted(order[2 * k :])}  # fmt: skip
    jobs: list[src.Job] = []
    for split in SPLITS:
        n = sizes[split]
        cap = 1.0 if split == "train" else 0.4
        jobs += src.plan_speech(rng, voices, split, int(np.clip(n // 40, 6, 300 * cap)))
        jobs += src.plan_music(rng, songs, song_split[split], split, int(np.clip(n // 300, 2, 30)))
        jobs += src.plan_synth(rng, split, int(np.clip(n // 100, 4, 80 * cap)), len(jobs))
    return jobs, {"voices": voices, "songs": song_split}


def _render_all(jobs: list[src.Job], workers: int, progress: bool) -> list[src.Source]:
    # Threads are enough: each job is a subprocess, and results keep their planned order.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(_progress(pool.map(src.render, jobs), len(jobs), "rendering sources", progress))


def _pools(sources: list[src.Source], split: str) -> list[Pool]:
    """Every source of ``split`` as a :class:`Pool`, rendered clips grouped by voice/generator."""
    pools: dict[str, Pool] = {}

    def add(name: str, kind: str, clip: Any) -> None:
        pools.setdefault(name, Pool(name, kind, split, [])).clips.append(clip)

    for s in sources:
        if s.split != split:
            continue
        if s.kind == "speech":
            engine = s.identity.partition(":")[0]
            add("espeak-ng" if engine == "espeak" else s.identity, "speech", s.audio)
        elif s.kind == "music":
            add(f"freedoom-music@{s.identity.rsplit('@', 1)[1]}", "music", s.audio)
        elif s.kind == "synth":
            add("sox-synth", "noise", s.audio)
        elif s.kind == "effects":
            add("freedoom-effects", "events", s.audio)
    for p in packaged_sources():
        if p.split == split:
            for f in p.files():
                add(p.name, p.kind, f)
    for name, gen in synth.EVENTS[split].items():
        add(f"synth:{name}", "events", gen)
    for name, noise in synth.NOISES.items():
        add(f"synth:{name}", "noise", noise)
    return sorted(pools.values(), key=lambda p: (p.kind, p.name))


def _windows(
    mixer: Mixer, rng: np.random.Generator, n: int, progress: bool, desc: str
) -> dict[str, NDArray[Any]]:
    y = rng.permutation(np.arange(n) < n // 2).astype(np.int64)
    x = np.empty((n, WINDOW_SAMPLES), np.int16)
    kinds, sources, conds = np.empty(n, np.int8), np.empty(n, np.int16), np.empty(n, np.uint8)
    for lo in _progress(range(0, n, _CHUNK), (n + _CHUNK - 1) // _CHUNK, desc, progress):
        hi = min(n, lo + _CHUNK)
        chunk = np.empty((hi - lo, WINDOW_SAMPLES), np.float32)
        codecs: dict[str, list[int]] = {"gsm": [], "mulaw": []}
        for i in range(lo, hi):
            if y[i]:
                w, source, bits = mixer.speech_window(rng)
                kind = "speech"
            else:
                w, kind, source, bits = mixer.nonspeech(rng)
            w, codec, more = finish(rng, w, kind == "silence")
            for c in codec:
                codecs[c].append(i - lo)
            chunk[i - lo] = w
            kinds[i], sources[i], conds[i] = KIND_NAMES.index(kind), source, bits | more
        for name, rows in codecs.items():
            if rows:
                chunk[rows] = channel.codec_round_trip(chunk[rows], name)
        dither = rng.random(chunk.shape, dtype=np.float32)
        dither -= rng.random(chunk.shape, dtype=np.float32)  # triangular, one LSB
        x[lo:hi] = np.clip(np.round(chunk * 32767.0 + dither), -32767, 32767).astype(np.int16)
    return {"x": x, "y": y, "kind": kinds, "src": sources, "cond": conds}


def _params(seed: int, sizes: dict[str, int]) -> dict[str, int]:
    return {"version": CORPUS_VERSION, "seed": seed, **{f"n_{k}": v for k, v in sizes.items()}}


def cache_path(cache_dir: Path | None, *, seed: int, n_train: int, n_val: int, n_test: int) -> Path:
    """Where the corpus with these parameters is (or will be) cached."""
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    blob = json.dumps(_params(seed, sizes), sort_keys=True).encode()
    name = f"speech-v{CORPUS_VERSION}-{hashlib.sha256(blob).hexdigest()[:16]}.npz"
    return (cache_dir if cache_dir is not None else default_cache_dir()) / name


def _corpus(arrays: dict[str, NDArray[Any]], metadata: dict[str, Any], path: Path) -> SpeechCorpus:
    scale = np.float32(1.0 / 32767.0)
    fields: dict[str, Any] = {}
    for split in SPLITS:
        fields[f"x_{split}"] = arrays[f"x_{split}"].astype(np.float32) * scale
        fields[f"y_{split}"] = arrays[f"y_{split}"].astype(np.int64)
        fields[f"kind_{split}"] = arrays[f"kind_{split}"].astype(np.int8)
        fields[f"src_{split}"] = arrays[f"src_{split}"].astype(np.int16)
        fields[f"cond_{split}"] = arrays[f"cond_{split}"].astype(np.uint8)
    return SpeechCorpus(**fields, metadata=metadata, path=path)


def load_speech_corpus(path: Path) -> SpeechCorpus:
    """Read a cached corpus file."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        return _corpus(arrays, json.loads(str(arrays.pop("metadata"))), path)
    except (OSError, KeyError, ValueError) as exc:
        raise DatasetError(f"{path}: unreadable speech corpus cache: {exc}") from exc


def _save(path: Path, arrays: dict[str, NDArray[Any]], metadata: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # same directory, so the rename is atomic
    try:
        with tmp.open("wb") as f:
            payload: dict[str, Any] = {"metadata": np.array(json.dumps(metadata)), **arrays}
            np.savez(f, **payload)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def build_speech_corpus(
    cache_dir: Path | None = None,
    *,
    seed: int = 0,
    n_train: int = 16_000,
    n_val: int = 3_000,
    n_test: int = 4_000,
    progress: bool = True,
    workers: int | None = None,
) -> SpeechCorpus:
    """Build (or load from the cache) the speech / no-speech corpus; see the module docstring."""
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    if min(sizes.values()) < 2:
        raise ValueError("every split needs at least 2 windows (one per class)")
    path = cache_path(cache_dir, seed=seed, n_train=n_train, n_val=n_val, n_test=n_test)
    if path.is_file():
        try:
            return load_speech_corpus(path)
        except DatasetError as exc:
            print(f"rebuilding: {exc}", file=sys.stderr)
    began = time.monotonic()
    jobs, plan = _plan(np.random.default_rng([seed, 1]), sizes)
    sources = _render_all(jobs, workers or os.cpu_count() or 2, progress)
    sources += src.effect_sources(np.random.default_rng([seed, 2]))
    arrays: dict[str, NDArray[Any]] = {}
    names: dict[str, list[str]] = {}
    pools_meta: dict[str, list[dict[str, Any]]] = {}
    for i, split in enumerate(SPLITS):
        pools = _pools(sources, split)
        mixer = Mixer(pools)
        rng = np.random.default_rng([seed, 3, i])
        for key, value in _windows(mixer, rng, sizes[split], progress, split).items():
            arrays[f"{key}_{split}"] = value
        names[split] = mixer.names
        pools_meta[split] = [{"name": p.name, "kind": p.kind, "clips": len(p.clips)} for p in pools]
    metadata: dict[str, Any] = {
        **_params(seed, sizes),
        "sample_rate": SAMPLE_RATE,
        "window_samples": WINDOW_SAMPLES,
        "label_names": list(LABEL_NAMES),
        "kind_names": list(KIND_NAMES),
        "label_rule": f"speech when >= {MIN_SPEECH_S} s of the window is active speech",
        "source_names": names,
        "pools": pools_meta,
        **plan,
        # what the rendered pools (espeak-ng, flite, freedoom music and effects, sox) hold per split
        "members": {
            split: sorted({f"{s.kind}:{s.identity}" for s in sources if s.split == split})
            for split in SPLITS
        },
        "build_seconds": round(time.monotonic() - began, 1),
    }
    _save(path, arrays, metadata)
    if progress:
        print(
            f"speech corpus: {sizes} windows from {len(sources)} rendered sources + packaged "
            f"recordings in {metadata['build_seconds']} s -> {path}",
            file=sys.stderr,
        )
    return _corpus(arrays, metadata, path)

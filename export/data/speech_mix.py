"""How one split's windows are drawn from that split's sources (see :mod:`export.data.speech`).

A :class:`Pool` is one source (a speaker, a package of sounds, a generator) with its clips, loaded
lazily and cached, so a small corpus only reads the files it uses. :class:`Mixer` draws windows:

* **speech** — a speech source is drawn by family (:data:`SPEECH_FAMILY_WEIGHTS`: recorded
  voices first; with all four families present that is asterisk prompts 44 %, KLettres 28 %,
  flite 17 %, espeak-ng 11 %), uniformly among the family's sources of the split; then
  1-4 utterances of that source strung together with pauses, padded with
  0.8 s of silence at both ends, and a 1 s window cut at a random offset; the window counts as
  speech when at least :data:`MIN_SPEECH_S` of it is active speech (10 ms frames within 35 dB of
  the source clip's loud frames), otherwise the cut is drawn again. So windows that are only
  partly speech (an utterance starting or ending inside, a short word) are common and are
  labelled speech: a detector that misses the first 0.3 s of a sentence cuts words off. Windows
  with less than 0.2 s of speech are never made, so no label is ambiguous. 80 % of speech windows
  get a non-speech background at an SNR uniform in 0-20 dB (speech power over its active frames);
  the others a room-tone floor 40-60 dB down.
* **no speech** — music 25 %, events 30 % (1-4 short sounds over room tone or near-silence),
  steady noise 30 %, near-silence 15 %; 30 % of the non-silent ones get a second non-speech
  source 3-20 dB below.

Each non-silent window then goes through the channel (:mod:`export.data.speech_channel`) and is
scaled to a peak uniform in -45..0 dBFS; near-silence keeps its own tiny level.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from export.data import speech_channel as channel
from export.data import speech_synth as synth
from export.data.errors import DatasetError
from export.data.speech_packages import read_clip

WINDOW = 16_000
HOP = 160  # 10 ms activity frames
MIN_SPEECH_S = 0.2
ACTIVE_DB = 35.0
_PAD = 12_800  # 0.8 s of silence around a speech stream
SR_FRAMES = 100  # activity frames per second
NONSPEECH_WEIGHTS = {"music": 0.25, "events": 0.3, "noise": 0.3, "silence": 0.15}
# Shares of speech windows per family of sources (normalised over the families a split has).
SPEECH_FAMILY_WEIGHTS = {"asterisk": 0.4, "klettres": 0.25, "espeak-ng": 0.1, "flite": 0.15}
# Condition bits stored per window (``cond_<split>``), for per-condition reports.
COND_BITS = {
    "reverb": 1,
    "phone": 2,
    "gsm": 4,
    "mulaw": 8,
    "background": 16,
    "partial": 32,
    "narrow": 64,
}
Audio = NDArray[np.float32]
Clip = Path | Audio | Callable[[np.random.Generator], Audio]


@dataclass
class Pool:
    """One source: a name for reports, its kind and split, and its clips (files, arrays, or a
    generator called with the window's random generator)."""

    name: str
    kind: str  # "speech" | "music" | "events" | "noise"
    split: str
    clips: list[Clip]
    _cache: dict[int, tuple[Audio, NDArray[np.bool_]]] = field(default_factory=dict, repr=False)

    def draw(self, rng: np.random.Generator) -> tuple[Audio, NDArray[np.bool_]]:
        """A clip and its 10 ms activity mask (all-true for non-speech)."""
        i = int(rng.integers(len(self.clips)))
        clip = self.clips[i]
        if callable(clip):
            audio = clip(rng)
            return audio, np.ones(len(audio) // HOP, bool)
        if i not in self._cache:
            audio = read_clip(clip) if isinstance(clip, Path) else clip
            self._cache[i] = trim(audio) if self.kind == "speech" else (audio, np.ones(1, bool))
        return self._cache[i]


def activity(audio: Audio) -> NDArray[np.bool_]:
    frames = len(audio) // HOP
    energy = np.square(audio[: frames * HOP], dtype=np.float64).reshape(frames, HOP).mean(1)
    if frames == 0:
        return np.zeros(0, bool)
    floor = max(float(np.percentile(energy, 95)) * 10 ** (-ACTIVE_DB / 10), 1e-9)
    return np.asarray(energy > floor)


def trim(audio: Audio) -> tuple[Audio, NDArray[np.bool_]]:
    """Cut silence off both ends (keeping 50 ms); the clip and its activity mask."""
    active = activity(audio)
    where = np.flatnonzero(active)
    if where.size == 0:
        return audio[:0], active[:0]
    first, last = max(0, where[0] - 5), min(len(active), where[-1] + 6)
    return audio[first * HOP : last * HOP], active[first:last]


def _rms(x: NDArray[np.float32]) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) + 1e-12


def _db(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(10.0 ** (rng.uniform(lo, hi) / 20.0))


def _cut(rng: np.random.Generator, clip: Audio) -> Audio:
    """A random 1 s cut of ``clip``, or ``clip`` at a random place in 1 s of zeros."""
    if len(clip) >= WINDOW:
        start = int(rng.integers(0, len(clip) - WINDOW + 1))
        return clip[start : start + WINDOW].astype(np.float32, copy=True)
    out = np.zeros(WINDOW, np.float32)
    start = int(rng.integers(0, WINDOW - len(clip) + 1))
    out[start : start + len(clip)] = clip
    return out


def _family(name: str) -> str:
    return name.split(":", 1)[0]


class Mixer:
    """Draws labelled windows from the pools of one split."""

    def __init__(self, pools: list[Pool]) -> None:
        self.speech = [p for p in pools if p.kind == "speech"]
        self.by_kind = {k: [p for p in pools if p.kind == k] for k in ("music", "events", "noise")}
        missing = [k for k, v in self.by_kind.items() if not v]
        if not self.speech or missing:
            raise DatasetError(f"a split has no speech sources or no {missing} sources")
        families = {_family(p.name) for p in self.speech}
        share = {f: SPEECH_FAMILY_WEIGHTS.get(f, 0.1) for f in families}
        counts = {f: sum(_family(p.name) == f for p in self.speech) for f in families}
        w = np.array([share[_family(p.name)] / counts[_family(p.name)] for p in self.speech])
        self.speech_p = w / w.sum()
        self.names = [p.name for p in pools] + ["synth:silence"]

    def _pick(self, rng: np.random.Generator, kind: str) -> Pool:
        pools = self.by_kind[kind]
        return pools[int(rng.integers(len(pools)))]

    def _steady(self, rng: np.random.Generator) -> Audio:
        return _cut(rng, self._pick(rng, "noise").draw(rng)[0])

    def nonspeech(
        self, rng: np.random.Generator, *, silent: bool = True
    ) -> tuple[Audio, str, int, int]:
        """(window at unit RMS (silence: tiny), kind, source index, condition bits)."""
        kinds = [k for k in NONSPEECH_WEIGHTS if silent or k != "silence"]
        p = np.array([NONSPEECH_WEIGHTS[k] for k in kinds])
        kind = str(rng.choice(kinds, p=p / p.sum()))
        if kind == "silence":
            return synth.silence(rng), kind, len(self.names) - 1, 0
        pool = self._pick(rng, kind)
        if kind == "events":
            x = np.zeros(WINDOW, np.float32)
            for _ in range(int(rng.integers(1, 5))):
                clip = _cut(rng, pool.draw(rng)[0])
                x += clip * np.float32(_db(rng, -12, 0) / (float(np.abs(clip).max()) + 1e-12))
            if rng.random() < 0.6:
                floor = self._steady(rng)
                x += floor * np.float32(_db(rng, -40, -10) * _rms(x) / _rms(floor))
        else:
            x = _cut(rng, pool.draw(rng)[0])
        x /= np.float32(_rms(x))
        bits = 0
        if rng.random() < 0.3:
            other = self.nonspeech(rng, silent=False)[0]
            x += other * np.float32(_db(rng, -20, -3))
            bits |= COND_BITS["background"]
        return x, kind, self.names.index(pool.name), bits

    def speech_window(self, rng: np.random.Generator) -> tuple[Audio, int, int]:
        """(window at unit speech RMS, source index, condition bits)."""
        index = int(rng.choice(len(self.speech), p=self.speech_p))
        pool = self.speech[index]
        pieces, masks = [np.zeros(_PAD, np.float32)], [np.zeros(_PAD // HOP, bool)]
        wanted, frames, pad = int(rng.integers(1, 5)), WINDOW // HOP, np.zeros(_PAD // HOP, bool)
        for count in range(1, 13):  # more clips only while no window has enough speech
            audio, mask = pool.draw(rng)
            gap = int(rng.uniform(0.05, 0.5) * SR_FRAMES)
            pieces += [audio[: len(mask) * HOP], np.zeros(gap * HOP, np.float32)]
            masks += [mask, np.zeros(gap, bool)]
            active = np.concatenate([*masks, pad])
            cum = np.concatenate([[0], np.cumsum(active)])
            per_start = cum[frames:] - cum[:-frames]  # active frames of the window at each start
            starts = np.flatnonzero(per_start >= MIN_SPEECH_S * SR_FRAMES)
            if starts.size and (count >= wanted or len(active) > 3 * frames):
                break
        else:
            raise DatasetError(f"{pool.name}: its clips have less than {MIN_SPEECH_S} s of speech")
        stream = np.concatenate([*pieces, np.zeros(_PAD, np.float32)])
        start = int(starts[int(rng.integers(len(starts)))])
        x = stream[start * HOP : start * HOP + WINDOW].copy()
        window_active = active[start : start + frames]
        x /= np.float32(_rms(x[np.repeat(window_active, HOP)]))
        bits = COND_BITS["partial"] if window_active.mean() < 0.5 else 0
        if rng.random() < 0.8:
            bg = self.nonspeech(rng, silent=False)[0]
            x += bg * np.float32(_db(rng, -20, 0))  # SNR uniform in 0-20 dB
            bits |= COND_BITS["background"]
        else:
            floor = self._steady(rng)
            x += floor * np.float32(_db(rng, -60, -40) / _rms(floor))
        return x, self.names.index(pool.name), bits


def finish(rng: np.random.Generator, x: Audio, silent: bool) -> tuple[Audio, tuple[str, ...], int]:
    """Channel effects (reverb, phone band) and level; codecs are left to the caller's batch."""
    if silent:
        return x, (), 0
    effects = channel.draw_channel(rng)
    bits = 0
    if "reverb" in effects:
        x = channel.reverb(x, rng)
    if "narrow" in effects:
        x = channel.narrow(x)
    if "phone" in effects:
        x = channel.phone(x)
    for name in effects:
        bits |= COND_BITS[name]
    x = x * np.float32(_db(rng, -45, 0) / (float(np.abs(x).max()) + 1e-12))
    return x.astype(np.float32), tuple(e for e in effects if e in ("gsm", "mulaw")), bits

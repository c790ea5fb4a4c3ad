"""Speech corpus parts: activity masks, the speech label rule, channel effects, synth sounds."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from export.data import speech_channel as channel
from export.data import speech_synth as synth
from export.data.speech_mix import COND_BITS, HOP, MIN_SPEECH_S, Mixer, Pool, activity, trim

SR = 16_000


def _burst(rng: np.random.Generator, before: float, on: float, after: float) -> np.ndarray:
    """Faint noise, then a loud harmonic burst, then faint noise."""
    t = np.arange(int(on * SR)) / SR
    f0 = rng.uniform(100, 250)
    tone = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))
    parts = [rng.standard_normal(int(s * SR)) * 1e-4 for s in (before, after)]
    return np.concatenate([parts[0], tone, parts[1]]).astype(np.float32)


def test_activity_and_trim() -> None:
    rng = np.random.default_rng()
    clip = _burst(rng, 0.3, 0.5, 0.4)
    active = activity(clip)
    assert 48 <= int(active.sum()) <= 52  # the 0.5 s burst, in 10 ms frames
    trimmed, mask = trim(clip)
    assert len(trimmed) == len(mask) * HOP
    assert 0.5 * SR <= len(trimmed) <= 0.62 * SR  # burst + 50 ms each side
    assert mask.sum() == active.sum()


def _silent_pools(kind: str) -> Pool:
    return Pool(f"zero:{kind}", kind, "train", [np.zeros(SR, np.float32)])


def test_speech_windows_obey_the_label_rule() -> None:
    """Every speech window holds >= 0.2 s of speech, and "partial" marks those under half."""
    rng = np.random.default_rng()
    clips = [_burst(rng, 0.1, rng.uniform(0.1, 0.6), 0.1) for _ in range(6)]
    speech = Pool("test:speech", "speech", "train", list(clips))
    # Silent non-speech pools: the window is then the speech stream alone, so it can be measured.
    mixer = Mixer([speech, *(_silent_pools(k) for k in ("music", "events", "noise"))])
    partial = 0
    for _ in range(60):
        x, source, bits = mixer.speech_window(rng)
        assert mixer.names[source] == "test:speech" and x.shape == (SR,)
        frames = np.square(x.astype(np.float64)).reshape(-1, HOP).mean(axis=1) > 1e-3
        assert frames.sum() >= MIN_SPEECH_S * 100 - 2, frames.sum()
        if abs(frames.mean() - 0.5) > 0.05:  # the measure here and the mixer's differ slightly
            assert bool(bits & COND_BITS["partial"]) == (frames.mean() < 0.5)
        partial += bool(bits & COND_BITS["partial"])
    assert 0 < partial < 60  # both whole and partial windows occur


def test_nonspeech_windows_report_their_source() -> None:
    rng = np.random.default_rng()
    pools = [
        Pool("test:speech", "speech", "train", [_burst(rng, 0.1, 0.5, 0.1)]),
        Pool("synth:knock", "events", "train", [synth.knock]),
        Pool("synth:hum", "noise", "train", [synth.hum]),
        Pool("tone", "music", "train", [np.sin(np.arange(3 * SR) * 0.05).astype(np.float32)]),
    ]
    mixer = Mixer(pools)
    seen = set()
    for _ in range(80):
        x, kind, source, _ = mixer.nonspeech(rng)
        seen.add((kind, mixer.names[source]))
        assert x.shape == (SR,) and np.isfinite(x).all()
        if kind == "silence":
            assert np.abs(x - x.mean()).max() < 1e-3  # dither around a DC offset
        else:
            # Unit RMS, plus maybe a background at most -3 dB below: even in antiphase (a tone
            # over a tone) the sum keeps RMS >= 1 - 10**(-3/20) = 0.29.
            assert np.sqrt(np.mean(x.astype(np.float64) ** 2)) > 0.29
    assert {k for k, _ in seen} == {"music", "events", "noise", "silence"}
    assert ("events", "synth:knock") in seen and ("silence", "synth:silence") in seen


def test_phone_band_and_narrow_band() -> None:
    rng = np.random.default_rng()
    noise = rng.standard_normal(SR).astype(np.float32)
    for effect, lo, hi in ((channel.phone, 300, 3400), (channel.narrow, 0, 4000)):
        out = effect(noise)
        assert out.shape == noise.shape
        spec = np.abs(np.fft.rfft(out)) ** 2
        f = np.fft.rfftfreq(SR, 1 / SR)
        inside = spec[(f > lo + 200) & (f < hi - 300)].mean()
        assert spec[f > hi + 400].mean() < inside * 1e-2
        if lo:
            assert spec[(f > 20) & (f < lo - 200)].mean() < inside * 0.1


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox missing")
@pytest.mark.parametrize("codec", ["gsm", "mulaw"])
def test_codec_round_trip_keeps_speech_band_content(codec: str) -> None:
    rng = np.random.default_rng()
    windows = np.stack([_burst(rng, 0.2, 0.6, 0.2)[:SR] * 0.3 for _ in range(5)])
    out = channel.codec_round_trip(windows, codec)
    assert out.shape == windows.shape and out.dtype == np.float32
    for a, b in zip(windows, out, strict=True):
        assert np.corrcoef(a, b)[0, 1] > 0.8  # a lossy copy of each window, in its own row
    with pytest.raises(ValueError, match="unknown codec"):
        channel.codec_round_trip(windows, "mp3")


def test_reverb_spreads_an_impulse() -> None:
    rng = np.random.default_rng()
    x = np.zeros(SR, np.float32)
    x[100] = 1.0
    wet = channel.reverb(x, rng)
    assert wet.shape == x.shape and wet[100] == pytest.approx(1.0)
    assert np.abs(wet[2000:]).max() > 1e-4  # a tail, long after the impulse
    effects = [channel.draw_channel(rng) for _ in range(400)]
    assert sum(("gsm" in e) and ("mulaw" in e) for e in effects) == 0  # one codec at most
    assert 0.15 < np.mean(["reverb" in e for e in effects]) < 0.35


GENERATORS = {**{k: v for split in synth.EVENTS.values() for k, v in split.items()},
              **synth.NOISES}  # fmt: skip


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_synth_generators(name: str) -> None:
    seed = int(np.random.default_rng().integers(1 << 30))
    audio = GENERATORS[name](np.random.default_rng(seed))
    assert audio.dtype == np.float32 and audio.ndim == 1 and len(audio) >= 400
    assert np.isfinite(audio).all() and np.abs(audio).max() == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_array_equal(audio, GENERATORS[name](np.random.default_rng(seed)))
    events = set().union(*(set(v) for v in synth.EVENTS.values()))
    assert sum(name in v for v in synth.EVENTS.values()) <= 1  # an event kind is in one split
    assert name in events or name in synth.NOISES


def test_silence_is_quiet() -> None:
    x = synth.silence(np.random.default_rng())
    assert len(x) == SR and np.abs(x).max() <= 0.0101 and np.std(x) < 1e-4

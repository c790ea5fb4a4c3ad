"""Non-speech sounds synthesised in NumPy: short events, steady noises and near-silence.

Each generator is a pure function of a NumPy Generator and returns 16 kHz float32 audio at
roughly unit peak. They are the hard negatives a speech detector meets in a room: clicks, knocks,
keyboard typing, beeps, bells, alarms and sirens, whistles (short, transient, often tonal: easy
to mistake for a syllable), and hum, wind, breath, fan and room tone (steady or slowly modulated
noise), plus digital near-silence with a DC offset and dither.

Event generators are split by *kind* between train, val and test (:data:`EVENTS`), so the
held-out splits contain event types the model never heard; steady noises and near-silence are
backgrounds every split needs, so all splits use all of them (with fresh random parameters).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray
from scipy.signal import butter, sosfilt

SR = 16_000
Audio = NDArray[np.float32]


def _t(seconds: float) -> NDArray[np.float64]:
    return np.arange(int(seconds * SR)) / SR


def _band(x: NDArray[np.float64], lo: float, hi: float, order: int = 2) -> NDArray[np.float64]:
    lo, hi = max(lo, 20.0), min(hi, SR / 2 * 0.95)
    sos = butter(order, [lo, max(hi, lo * 1.2)], btype="band", fs=SR, output="sos")
    return np.asarray(sosfilt(sos, x))


def _low(x: NDArray[np.float64], cutoff: float) -> NDArray[np.float64]:
    return np.asarray(sosfilt(butter(2, min(cutoff, SR * 0.45), fs=SR, output="sos"), x))


def _peak1(x: NDArray[np.float64]) -> Audio:
    return np.asarray(x / (np.abs(x).max() + 1e-12), dtype=np.float32)


def _decay(seconds: float, tau: float) -> NDArray[np.float64]:
    return np.exp(-_t(seconds) / tau)


# --- short events ----------------------------------------------------------------------------
def click(rng: np.random.Generator) -> Audio:
    n = int(rng.integers(16, 120))
    burst = rng.standard_normal(n) * _decay(n / SR, n / SR / 4)
    return _peak1(_band(np.pad(burst, (0, 400)), rng.uniform(500, 3000), rng.uniform(4000, 7500)))


def knock(rng: np.random.Generator) -> Audio:
    out = np.zeros(0)
    for _ in range(int(rng.integers(1, 5))):
        f, tau = rng.uniform(90, 450), rng.uniform(0.015, 0.08)
        t = _t(tau * 6)
        hit = np.sin(2 * np.pi * f * t) * np.exp(-t / tau) + 0.3 * rng.standard_normal(len(t)) * (
            np.exp(-t / (tau / 5))
        )
        out = np.concatenate([out, hit, np.zeros(int(rng.uniform(0.08, 0.35) * SR))])
    return _peak1(out)


def keyboard(rng: np.random.Generator) -> Audio:
    seconds = rng.uniform(0.8, 3.0)
    out = np.zeros(int(seconds * SR) + 800)
    at = 0.0
    while at < seconds:
        n = int(rng.integers(60, 250))
        key = rng.standard_normal(n) * _decay(n / SR, n / SR / 3) * rng.uniform(0.3, 1.0)
        key = _band(key, rng.uniform(800, 2500), rng.uniform(3500, 7500))
        i = int(at * SR)
        out[i : i + n] += key
        at += rng.uniform(0.05, 0.3) if rng.random() < 0.85 else rng.uniform(0.4, 0.9)
    return _peak1(out)


def beep(rng: np.random.Generator) -> Audio:
    f, on, off = rng.uniform(300, 3500), rng.uniform(0.04, 0.5), rng.uniform(0.05, 0.5)
    t = _t(on)
    ramp = np.minimum(1.0, np.minimum(t, on - t) / 0.005)
    tone = np.sin(2 * np.pi * f * t) if rng.random() < 0.6 else np.sign(np.sin(2 * np.pi * f * t))
    one = np.concatenate([tone * ramp, np.zeros(int(off * SR))])
    return _peak1(np.tile(one, int(rng.integers(1, 5))))


def bell(rng: np.random.Generator) -> Audio:
    f0, tau = rng.uniform(200, 2000), rng.uniform(0.2, 1.5)
    t = _t(min(3.0, tau * 4))
    ratios = (1.0, 2.76, 5.40, 8.93) if rng.random() < 0.5 else (1.0, 2.0, 3.0, 4.2, 5.4)
    out = sum(
        np.sin(2 * np.pi * f0 * r * t + rng.uniform(0, 6.3)) * np.exp(-t * r / tau) / (1 + i)
        for i, r in enumerate(ratios)
    )
    return _peak1(np.asarray(out))


def whistle(rng: np.random.Generator) -> Audio:
    seconds = rng.uniform(0.2, 1.2)
    t = _t(seconds)
    f = rng.uniform(800, 3000) * 2 ** (rng.uniform(-1, 1) * t / seconds)
    f = f * (1 + 0.02 * np.sin(2 * np.pi * rng.uniform(3, 8) * t))  # vibrato
    phase = 2 * np.pi * np.cumsum(f) / SR
    env = np.sin(np.pi * t / seconds) ** 0.5
    return _peak1(np.sin(phase) * env + 0.05 * rng.standard_normal(len(t)) * env)


def alarm(rng: np.random.Generator) -> Audio:
    seconds = rng.uniform(1.0, 3.0)
    t = _t(seconds)
    f1, f2 = rng.uniform(400, 2500, size=2)
    rate = rng.uniform(1.5, 8)
    f = np.where(np.sin(2 * np.pi * rate * t) > 0, f1, f2)
    square = rng.random() < 0.5
    wave = np.sin(2 * np.pi * np.cumsum(f) / SR)
    return _peak1(np.sign(wave) if square else wave)


def siren(rng: np.random.Generator) -> Audio:
    seconds = rng.uniform(1.0, 3.0)
    t = _t(seconds)
    lo, hi = sorted(rng.uniform(400, 1800, size=2))
    f = lo + (hi - lo) * 0.5 * (1 + np.sin(2 * np.pi * rng.uniform(0.3, 3) * t))
    return _peak1(
        np.sin(2 * np.pi * np.cumsum(f) / SR) + 0.3 * np.sin(6 * np.pi * np.cumsum(f) / SR)
    )


# --- steady noises ---------------------------------------------------------------------------
def _coloured(rng: np.random.Generator, n: int, exponent: float) -> NDArray[np.float64]:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.maximum(np.fft.rfftfreq(n, 1 / SR), 10.0)
    return np.fft.irfft(spec / f ** (exponent / 2), n)


def hum(rng: np.random.Generator, seconds: float = 2.0) -> Audio:
    t = _t(seconds)
    base = float(rng.choice([50.0, 60.0])) * rng.uniform(0.99, 1.01)
    out = sum(
        np.sin(2 * np.pi * base * k * t + rng.uniform(0, 6.3)) * rng.uniform(0, 1) / k
        for k in range(1, 12)
    )
    return _peak1(np.asarray(out) + 0.05 * rng.standard_normal(len(t)))


def wind(rng: np.random.Generator, seconds: float = 2.0) -> Audio:
    n = int(seconds * SR)
    noise = _coloured(rng, n, rng.uniform(1.0, 2.0))
    gust = 1 + rng.uniform(0.3, 0.9) * np.sin(
        2 * np.pi * rng.uniform(0.1, 1.0) * _t(seconds) + rng.uniform(0, 6.3)
    )
    return _peak1(_low(noise, rng.uniform(300, 2000)) * gust)


def breath(rng: np.random.Generator, seconds: float = 2.0) -> Audio:
    n = int(seconds * SR)
    noise = _band(rng.standard_normal(n), rng.uniform(300, 900), rng.uniform(2000, 6000))
    period = rng.uniform(1.5, 4.0)
    phase = (_t(seconds) / period + rng.uniform(0, 1)) % 1.0
    env = (
        np.sin(np.pi * np.clip(phase / 0.4, 0, 1)) ** 2
        + 0.7 * np.sin(np.pi * np.clip((phase - 0.45) / 0.5, 0, 1)) ** 2
    )
    return _peak1(noise * env)


def fan(rng: np.random.Generator, seconds: float = 2.0) -> Audio:
    t = _t(seconds)
    blade = rng.uniform(80, 400)
    noise = _coloured(rng, len(t), rng.uniform(0.5, 1.5))
    tone = 0.3 * np.sin(2 * np.pi * blade * t) + 0.1 * np.sin(4 * np.pi * blade * t)
    return _peak1(noise / (np.abs(noise).max() + 1e-12) + tone * rng.uniform(0, 1))


def room_tone(rng: np.random.Generator, seconds: float = 2.0) -> Audio:
    noise = _coloured(rng, int(seconds * SR), rng.uniform(0.5, 2.0))
    return _peak1(noise + 0.1 * hum(rng, seconds) * rng.uniform(0, 1) * np.abs(noise).max())


def silence(rng: np.random.Generator, seconds: float = 1.0) -> Audio:
    """Digital near-silence: a DC offset and 1-2 LSB of dither, at its real (tiny) level."""
    n = int(seconds * SR)
    lsb = 1 / 32768
    dither = (rng.random(n) - rng.random(n)) * lsb * rng.uniform(0.5, 2.0)  # triangular
    return (dither + rng.uniform(-0.01, 0.01)).astype(np.float32)


Generator = Callable[[np.random.Generator], Audio]
#: Event generators by split: whole kinds held out, so val and test hear events training did not.
EVENTS: dict[str, dict[str, Generator]] = {
    "train": {"click": click, "knock": knock, "keyboard": keyboard, "beep": beep},
    "val": {"bell": bell, "whistle": whistle},
    "test": {"alarm": alarm, "siren": siren},
}
#: Steady noises (every split): backgrounds for events, speech and music.
NOISES: dict[str, Callable[[np.random.Generator], Audio]] = {
    "hum": hum,
    "wind": wind,
    "breath": breath,
    "fan": fan,
    "room_tone": room_tone,
}

"""What the channel does to a window: rooms, telephone lines, codecs. Both classes get the same.

A detector that has only heard clean studio audio calls a phone call or a reverberant room
"no speech", and one that learns "band-limited means speech" (the asterisk prompts are 8 kHz
telephone recordings) is fooled by any band-limited noise. So every effect here is drawn with the
same probabilities for speech and non-speech windows (:func:`draw_channel`), and the label can
never be read off the channel.

* ``reverb``: a synthetic room impulse response (direct sound plus exponentially decaying noise,
  RT60 0.15-0.9 s, a few early reflections), applied with an FFT convolution;
* ``narrow``: a round trip through 8 kHz (nothing above 4 kHz). Half the recorded speech
  (asterisk's prompts) is 8 kHz audio, so without this "nothing above 4 kHz" would mean speech;
* ``phone``: 300-3400 Hz band-pass and a round trip through 8 kHz (the telephone band);
* ``gsm`` / ``mulaw``: the window encoded and decoded by sox (GSM 06.10 full rate at 8 kHz, or
  G.711 mu-law at 8 kHz). Codecs run in batches: windows are concatenated into one file, so
  one sox call serves hundreds of windows (GSM frames are 20 ms: a 1 s window is exactly 50 of
  them, so no frame straddles two windows).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from numpy.typing import NDArray
from scipy.signal import butter, fftconvolve, resample_poly, sosfilt

from export.data.audio_tools import run_tool

SR = 16_000
EFFECTS = ("reverb", "narrow", "phone", "gsm", "mulaw")
#: Probability of each effect per window (independent; a codec implies the 8 kHz band).
PROBABILITY = {"reverb": 0.25, "narrow": 0.3, "phone": 0.15, "gsm": 0.1, "mulaw": 0.1}
_PHONE = butter(4, [300, 3400], btype="band", fs=SR, output="sos")


def draw_channel(rng: np.random.Generator) -> tuple[str, ...]:
    """The effects one window goes through, in the order they apply; at most one codec."""
    chosen = [e for e in ("reverb", "narrow", "phone") if rng.random() < PROBABILITY[e]]
    u = rng.random()
    if u < PROBABILITY["gsm"]:
        chosen.append("gsm")
    elif u < PROBABILITY["gsm"] + PROBABILITY["mulaw"]:
        chosen.append("mulaw")
    return tuple(chosen)


def room_response(rng: np.random.Generator) -> NDArray[np.float32]:
    rt60 = rng.uniform(0.15, 0.9)
    n = int(rt60 * SR)
    t = np.arange(n) / SR
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    tail = sosfilt(butter(1, rng.uniform(2000, 7000), fs=SR, output="sos"), tail)
    ir = tail * rng.uniform(0.1, 0.5) / (np.abs(tail).max() + 1e-12)
    ir[0] = 1.0  # direct sound
    for _ in range(int(rng.integers(2, 6))):  # early reflections
        ir[int(rng.uniform(0.002, 0.03) * SR)] += rng.uniform(0.2, 0.7) * rng.choice([-1, 1])
    return np.asarray(ir, dtype=np.float32)


def reverb(x: NDArray[np.float32], rng: np.random.Generator) -> NDArray[np.float32]:
    wet = fftconvolve(x, room_response(rng))[: len(x)]
    return np.asarray(wet, dtype=np.float32)


def narrow(x: NDArray[np.float32]) -> NDArray[np.float32]:
    return np.asarray(resample_poly(resample_poly(x, 1, 2), 2, 1), dtype=np.float32)[: len(x)]


def phone(x: NDArray[np.float32]) -> NDArray[np.float32]:
    return narrow(np.asarray(sosfilt(_PHONE, x), dtype=np.float32))


def codec_round_trip(windows: NDArray[np.float32], codec: str) -> NDArray[np.float32]:
    """Encode (N, samples) windows with sox (``gsm`` or ``mulaw``) at 8 kHz and decode back."""
    if codec not in ("gsm", "mulaw"):
        raise ValueError(f"unknown codec {codec!r}: use gsm or mulaw")
    n, length = windows.shape
    peak = float(np.abs(windows).max()) + 1e-12
    scale = min(1.0, 0.99 / peak)  # codecs clip at full scale
    narrow = resample_poly(windows.astype(np.float64) * scale, 1, 2, axis=1).reshape(-1)
    sox = "sox"
    with tempfile.TemporaryDirectory(prefix="convserve-codec-") as tmp:
        src, enc, dec = Path(tmp, "in.wav"), Path(tmp, "enc.wav"), Path(tmp, "out.wav")
        sf.write(src, narrow, SR // 2, subtype="PCM_16")
        fmt = ["-e", "gsm-full-rate"] if codec == "gsm" else ["-e", "mu-law"]
        # -D: no dither. sox dithers when it reduces bit depth (mu-law is 8 bits), and its
        # dither is random, which would make the corpus differ from build to build.
        run_tool([sox, "-D", str(src), *fmt, str(enc)])
        run_tool([sox, "-D", str(enc), "-e", "signed-integer", "-b", "16", str(dec)])
        back, _ = sf.read(dec, dtype="float64")
    back = np.resize(back, n * (length // 2)).reshape(n, length // 2)  # GSM may pad the end
    out = resample_poly(back, 2, 1, axis=1)[:, :length] / scale
    return np.asarray(out, dtype=np.float32)

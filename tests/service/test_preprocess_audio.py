"""service.preprocess.audio: decoding every WAV flavour, resampling, windows, streams, segments."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from service.errors import InvalidInputError
from service.preprocess.audio import (
    AudioSpec,
    StreamWindower,
    decode_wav,
    merge_segments,
    prepare_audio,
    resample,
    split_windows,
)

SPEC = AudioSpec()  # 16 kHz, 1 s windows, 0.5 s hop


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def tone(freq: float, rate: int, seconds: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    noise = rng.uniform(-0.02, 0.02, t.shape)
    return (0.6 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


def wav(x: np.ndarray, rate: int, subtype: str = "FLOAT", fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, rate, subtype=subtype, format=fmt)
    return buf.getvalue()


def dominant_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[spectrum.argmax()])


@pytest.mark.parametrize(
    ("fmt", "subtype", "step"),
    [
        ("WAV", "PCM_U8", 2**-7),
        ("WAV", "PCM_16", 2**-15),
        ("WAV", "PCM_24", 2**-23),
        ("WAV", "PCM_32", 2**-31),
        ("WAV", "FLOAT", 0.0),
        ("WAV", "DOUBLE", 0.0),
        ("WAVEX", "PCM_16", 2**-15),  # WAVE_FORMAT_EXTENSIBLE
        ("FLAC", "PCM_16", 2**-15),
    ],
)
def test_every_sample_format_decodes_to_the_same_signal(rng, fmt, subtype, step):
    x = tone(440, 16_000, 0.25, rng)
    samples, rate = decode_wav(wav(x, 16_000, subtype, fmt))
    assert rate == 16_000 and samples.dtype == np.float32 and samples.shape == x.shape
    np.testing.assert_allclose(samples, x, rtol=0, atol=step + 1e-7)


def test_stereo_is_averaged_to_mono(rng):
    left, right = tone(440, 8000, 0.2, rng), tone(1000, 8000, 0.2, rng)
    samples, rate = decode_wav(wav(np.stack([left, right], axis=1), 8000))
    assert rate == 8000
    np.testing.assert_allclose(samples, (left + right) / 2, atol=1e-7)
    six = np.stack([left, right, left, right, left, -left], axis=1)
    samples, _ = decode_wav(wav(six, 8000, "PCM_24"))
    np.testing.assert_allclose(samples, (2 * left + 2 * right) / 6, atol=1e-6)


@pytest.mark.parametrize("rate", [8000, 22_050, 44_100, 48_000, 44_101])
def test_resampling_keeps_the_pitch(rng, rate):
    x = tone(1000, rate, 1.0, rng)
    y = resample(x, rate, 16_000)
    assert y.dtype == np.float32 and y.flags.c_contiguous
    assert abs(len(y) - 16_000) <= 1
    assert dominant_hz(y, 16_000) == pytest.approx(1000, abs=2)
    assert np.sqrt(np.mean(y**2)) == pytest.approx(np.sqrt(np.mean(x**2)), rel=0.02)


def test_prepare_audio_decodes_and_resamples(rng):
    x = tone(440, 48_000, 0.5, rng)
    y = prepare_audio(wav(x, 48_000, "PCM_16"), None, 0, SPEC)
    assert len(y) == 8000 and dominant_hz(y, 16_000) == pytest.approx(440, abs=2)
    z = prepare_audio(None, x, 48_000, SPEC)
    np.testing.assert_allclose(y, z, atol=1e-3)
    same = prepare_audio(None, x[:1000].astype(np.float64), 16_000, SPEC)
    assert same.dtype == np.float32
    np.testing.assert_array_equal(same, x[:1000])


def test_bad_audio_is_invalid_input(rng):
    with pytest.raises(InvalidInputError, match="empty"):
        decode_wav(b"")
    with pytest.raises(InvalidInputError, match="no samples"):
        decode_wav(wav(np.zeros(0, np.float32), 16_000, "PCM_16"))
    with pytest.raises(InvalidInputError, match=r"cannot decode audio.*send WAV"):
        decode_wav(rng.bytes(2000))
    good = wav(tone(440, 16_000, 0.1, rng), 16_000, "PCM_16")
    garbled = good[:8] + b"WAVX" + good[12:]  # RIFF form type broken
    with pytest.raises(InvalidInputError, match="cannot decode audio"):
        decode_wav(garbled)
    with pytest.raises(InvalidInputError, match="cannot decode audio"):
        decode_wav(good[:30])  # header cut short
    x = tone(440, 16_000, 0.1, rng)
    x[100] = np.nan
    with pytest.raises(InvalidInputError, match="NaN or infinite"):
        decode_wav(wav(x, 16_000, "FLOAT"))
    with pytest.raises(InvalidInputError, match="unsupported audio container AU"):
        decode_wav(wav(x[:50], 16_000, "PCM_16", "AU"))
    with pytest.raises(InvalidInputError, match=r"sample rate 500 Hz is outside 1000..384000"):
        decode_wav(wav(x[:50], 500, "PCM_16"))


def test_duration_limit():
    rate = 1000
    x = np.random.default_rng(3).uniform(-1, 1, 700 * rate).astype(np.float32)
    message = r"^audio is 700.0 s, above the limit of 600 s \(raise --max-audio-seconds\)$"
    with pytest.raises(InvalidInputError, match=message):
        prepare_audio(None, x, rate, SPEC)
    with pytest.raises(InvalidInputError, match=message):
        prepare_audio(wav(x, rate, "PCM_16"), None, 0, SPEC)
    short = AudioSpec(max_seconds=1.5)
    flac = wav(x[:2000], rate, "PCM_16", "FLAC")
    with pytest.raises(InvalidInputError, match=r"audio is 2\.0 s, above the limit of 1\.5 s"):
        prepare_audio(flac, None, 0, short)
    assert len(prepare_audio(None, x[:1500], rate, short)) == 1500 * 16


def test_raw_samples_are_checked(rng):
    x = tone(440, 16_000, 0.1, rng)
    with pytest.raises(InvalidInputError, match="exactly one"):
        prepare_audio(None, None, 16_000, SPEC)
    with pytest.raises(InvalidInputError, match="exactly one"):
        prepare_audio(wav(x, 16_000), x, 16_000, SPEC)
    with pytest.raises(InvalidInputError, match="positive sample_rate"):
        prepare_audio(None, x, 0, SPEC)
    with pytest.raises(InvalidInputError, match="outside"):
        prepare_audio(None, x, 400_000, SPEC)
    with pytest.raises(InvalidInputError, match="1-D float"):
        prepare_audio(None, np.stack([x, x]), 16_000, SPEC)
    with pytest.raises(InvalidInputError, match="1-D float"):
        prepare_audio(None, (x * 1000).astype(np.int16), 16_000, SPEC)
    with pytest.raises(InvalidInputError, match="no samples"):
        prepare_audio(None, np.zeros(0, np.float32), 16_000, SPEC)
    y = x.copy()
    y[5] = np.inf
    with pytest.raises(InvalidInputError, match="NaN or infinite"):
        prepare_audio(None, y, 16_000, SPEC)
    loud = x * 3  # out of [-1, 1] is kept, not clipped
    np.testing.assert_array_equal(prepare_audio(None, loud, 16_000, SPEC), loud)


@pytest.mark.parametrize(
    ("n", "starts"),
    [
        (1, [0]),
        (9_999, [0]),
        (16_000, [0]),
        (24_000, [0, 8000]),
        (24_001, [0, 8000, 8001]),  # end-aligned, not a mostly-padding window at 16000
        (40_000, [0, 8000, 16_000, 24_000]),
        (45_000, [0, 8000, 16_000, 24_000, 29_000]),
    ],
)
def test_split_windows(rng, n, starts):
    x = rng.uniform(-1, 1, n).astype(np.float32)
    windows, offsets = split_windows(x, SPEC)
    assert offsets.tolist() == starts
    assert windows.shape == (len(starts), 16_000) and windows.dtype == np.float32
    assert windows.flags.c_contiguous
    for window, start in zip(windows, offsets, strict=True):
        real = x[start : start + 16_000]
        np.testing.assert_array_equal(window[: len(real)], real)
        assert not window[len(real) :].any()


def test_split_windows_hop_and_empty(rng):
    spec = AudioSpec(sample_rate=8000, window_samples=100, hop_samples=30)
    _, offsets = split_windows(rng.uniform(-1, 1, 200).astype(np.float32), spec)
    assert offsets.tolist() == [0, 30, 60, 90, 100]
    with pytest.raises(InvalidInputError, match="no samples"):
        split_windows(np.zeros(0, np.float32), spec)


@pytest.mark.parametrize("n", [1, 57, 100, 130, 131, 1000, 1013])
def test_stream_windower_matches_split_windows(rng, n):
    spec = AudioSpec(sample_rate=8000, window_samples=100, hop_samples=30)
    x = rng.uniform(-1, 1, n).astype(np.float32)
    windower = StreamWindower(spec)
    got = []
    position = 0
    while position < n:
        size = int(rng.choice([0, 1, 7, 29, 30, 64, 250]))
        got += windower.push(x[position : position + size])
        position += size
    grid = len(got)
    got += windower.flush()
    assert windower.total_samples == n
    windows, offsets = split_windows(x, spec)
    assert [w.start for w in got] == offsets.tolist()
    assert all(w.start % 30 == 0 for w in got[:grid])  # pushed windows are on the hop grid
    np.testing.assert_array_equal(np.stack([w.samples for w in got]), windows)
    assert [w.valid for w in got] == [min(n, 100)] * len(got)
    assert windower._buffer.size <= 100 + 250  # bounded memory


def test_stream_windower_edges(rng):
    windower = StreamWindower(SPEC)
    assert windower.flush() == []  # nothing streamed, nothing to score
    with pytest.raises(RuntimeError):
        windower.push(np.ones(3, np.float32))
    windower = StreamWindower(SPEC)
    with pytest.raises(InvalidInputError, match="NaN"):
        windower.push(np.array([0.1, np.nan], np.float32))
    with pytest.raises(InvalidInputError, match="1-D float"):
        windower.push(np.ones((2, 2), np.float32))
    first = windower.push(rng.uniform(-1, 1, 16_000).astype(np.float32))
    assert [w.start for w in first] == [0] and windower.flush() == []


def test_merge_segments():
    windows = [
        (2.0, 3.0, 0.9),
        (0.0, 1.0, 0.8),
        (0.5, 1.5, 0.7),  # overlaps the previous
        (1.5, 2.0, 0.6),  # touches it
        (4.0, 5.0, 0.4),  # below the threshold
        (6.0, 7.0, 0.5),  # exactly at it
        (6.5, 6.8, 0.9),  # inside the previous
    ]
    assert merge_segments(windows, 0.5) == [(0.0, 3.0), (6.0, 7.0)]
    assert merge_segments(windows, 0.85) == [(2.0, 3.0), (6.5, 6.8)]
    assert merge_segments(windows, 0.95) == []
    assert merge_segments([], 0.5) == []


def test_spec_from_parameters():
    spec = AudioSpec.from_parameters({"task": "speech_detection"}, [1, 16_000])
    assert spec == AudioSpec(16_000, 16_000, 8000, 600.0)
    spec = AudioSpec.from_parameters(
        {"sample_rate": "8000", "window_samples": "4000", "hop_samples": "1000"},
        [1, -1],
        max_seconds=30,
    )
    assert spec == AudioSpec(8000, 4000, 1000, 30.0)
    for params, dims, match in [
        ({}, [1, -1], "window_samples"),
        ({"sample_rate": "16k"}, [16_000], "integer"),
        ({"sample_rate": "500"}, [16_000], "outside"),
        ({"hop_samples": "20000"}, [16_000], "hop_samples"),
    ]:
        with pytest.raises(ValueError, match=match):
            AudioSpec.from_parameters(params, dims)

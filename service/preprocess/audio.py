"""Audio bytes or samples -> mono float32 at the model's rate, cut into model-sized windows.

Decoding is libsndfile's (through soundfile), so besides WAV in every common sample format
(8-bit unsigned, 16/24/32-bit PCM, 32/64-bit float, WAVE_FORMAT_EXTENSIBLE, RF64) it also reads
FLAC, OGG (Vorbis, Opus), AIFF and MP3. Channels are averaged to mono; nothing is clipped, but NaN
and infinite samples are refused. The duration limit is checked against the frame count libsndfile
reports before anything is decoded, and no more than that is ever read, so a highly compressed
file cannot expand past it.

Windows: a clip of n samples is cut into windows of W samples every H samples (the hop). A clip
shorter than W becomes one zero-padded window. When the hop grid does not reach the end, one more
window is aligned to the end (starting at n - W) instead of a mostly-padding window past it, so
every window the model sees is full of real audio; that last window overlaps its neighbour by more
than W - H. `StreamWindower` produces exactly the same windows from a stream of chunks.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt
import soundfile as sf

from service.errors import InvalidInputError

Samples = npt.NDArray[np.float32]

MIN_SAMPLE_RATE: Final = 1_000
MAX_SAMPLE_RATE: Final = 384_000
# libsndfile's container names (SoundFile.format) that we accept.
_CONTAINERS: Final = frozenset({"WAV", "WAVEX", "RF64", "W64", "FLAC", "OGG", "AIFF", "MP3"})
_ACCEPTED: Final = "WAV (8-bit, 16/24/32-bit PCM, 32/64-bit float), FLAC, OGG, AIFF or MP3"
_BLOCK_FRAMES: Final = 1 << 16
# resample_poly's filter has ~20 * max(up, down) taps; rates whose ratio only reduces to large
# integers (44101 -> 16000 is 16000/44101) are approximated to a ratio with a denominator of at
# most this, a relative rate error below 1e-5: inaudible, and 30x faster to design.
_MAX_POLY_FACTOR: Final = 1000


@dataclass(frozen=True)
class AudioSpec:
    """What one speech model wants: its sample rate and window; built by `from_parameters`."""

    sample_rate: int = 16_000
    window_samples: int = 16_000
    """Samples per model input (the input's last dimension)."""
    hop_samples: int = 0
    """Distance between window starts; 0 means window_samples // 2."""
    max_seconds: float = 600.0
    """Longest accepted clip (a server setting, --max-audio-seconds), before resampling."""

    def __post_init__(self) -> None:
        if not MIN_SAMPLE_RATE <= self.sample_rate <= MAX_SAMPLE_RATE:
            raise ValueError(f"sample_rate {self.sample_rate} outside {_rate_range()}")
        if self.window_samples < 1:
            raise ValueError(f"window_samples must be positive, got {self.window_samples}")
        if self.hop_samples == 0:
            object.__setattr__(self, "hop_samples", max(self.window_samples // 2, 1))
        if not 1 <= self.hop_samples <= self.window_samples:
            # A hop past the window would leave audio no window ever sees.
            raise ValueError(f"hop_samples must be in 1..{self.window_samples}")
        if not self.max_seconds > 0:
            raise ValueError(f"max_seconds must be positive, got {self.max_seconds}")

    @classmethod
    def from_parameters(
        cls, params: Mapping[str, str], dims: Sequence[int], *, max_seconds: float = 600.0
    ) -> AudioSpec:
        """Read the model config's `parameters` (sample_rate, window_samples, hop_samples).

        `dims` is the input's shape without batch; window_samples defaults to its last entry.
        Raises ValueError on a bad config.
        """

        def int_param(key: str, default: int) -> int:
            try:
                return int(params[key]) if key in params else default
            except ValueError:
                raise ValueError(f"{key} must be an integer, got {params[key]!r}") from None

        window = int_param("window_samples", int(dims[-1]) if len(dims) else -1)
        if window < 1:
            raise ValueError(f"input dims {list(dims)} have no fixed length: set window_samples")
        return cls(
            sample_rate=int_param("sample_rate", 16_000),
            window_samples=window,
            hop_samples=int_param("hop_samples", 0),
            max_seconds=max_seconds,
        )


class Window(NamedTuple):
    """One model input cut from a clip or a stream."""

    start: int
    """Offset of the first sample in the whole clip or stream, in samples."""
    samples: Samples
    """window_samples values; past `valid` they are zero padding."""
    valid: int
    """Number of real samples, window_samples except for a clip shorter than a window."""


def decode_wav(data: bytes, *, max_seconds: float = math.inf) -> tuple[Samples, int]:
    """Decode audio bytes to (mono float32 samples, sample rate); see the module docstring."""
    if not data:
        raise InvalidInputError(f"audio is empty (0 bytes); send {_ACCEPTED}")
    blocks: list[Samples] = []
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            if f.format not in _CONTAINERS:
                raise InvalidInputError(f"unsupported audio container {f.format}; send {_ACCEPTED}")
            rate = int(f.samplerate)
            _check_rate(rate)
            limit = max_seconds * rate
            if f.frames > limit:
                raise _too_long(f.frames / rate, max_seconds)
            # soundfile reads at most f.frames, so the check above bounds what is decoded; blocks
            # bound the memory of many-channel files to one mono copy of the clip.
            block_frames = max(_BLOCK_FRAMES // f.channels, 1024)
            for block in f.blocks(block_frames, dtype="float32", always_2d=True):
                blocks.append(block[:, 0].copy() if block.shape[1] == 1 else block.mean(axis=1))
    except (RuntimeError, ValueError, TypeError) as e:  # sf.LibsndfileError is a RuntimeError
        reason = getattr(e, "error_string", None) or str(e)
        raise InvalidInputError(
            f"cannot decode audio: {reason} (got {len(data)} bytes starting {data[:12]!r}); "
            f"send {_ACCEPTED}"
        ) from None
    samples = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    _check_samples(samples)
    return samples, rate


def resample(x: Samples, sr_in: int, sr_out: int) -> Samples:
    """Polyphase resampling (scipy.signal.resample_poly, Kaiser window) to sr_out, float32."""
    # Imported here: scipy.signal costs ~1 s to import, which every server start would pay.
    from scipy.signal import resample_poly

    _check_rate(sr_in)
    _check_rate(sr_out)
    if sr_in == sr_out:
        return np.ascontiguousarray(x, dtype=np.float32)
    ratio = Fraction(sr_out, sr_in)
    if max(ratio.numerator, ratio.denominator) > _MAX_POLY_FACTOR:
        ratio = ratio.limit_denominator(_MAX_POLY_FACTOR)
    y = resample_poly(np.asarray(x, dtype=np.float32), ratio.numerator, ratio.denominator)
    return np.ascontiguousarray(y, dtype=np.float32)


def prepare_audio(
    data: bytes | None, samples: npt.NDArray[np.generic] | None, sample_rate: int, spec: AudioSpec
) -> Samples:
    """Encoded bytes, or raw mono samples at `sample_rate`, -> mono float32 at spec.sample_rate.

    Exactly one of `data` and `samples` must be given; `sample_rate` is only read with samples.
    """
    if (data is None) == (samples is None):
        raise InvalidInputError("send either encoded audio or raw samples (exactly one)")
    if data is not None:
        x, rate = decode_wav(data, max_seconds=spec.max_seconds)
    else:
        assert samples is not None  # for mypy; checked above
        if sample_rate <= 0:
            raise InvalidInputError("raw samples need a positive sample_rate")
        _check_rate(sample_rate)
        if samples.ndim != 1 or not np.issubdtype(samples.dtype, np.floating):
            raise InvalidInputError(
                f"raw samples must be 1-D float (mono), got {samples.ndim}-D {samples.dtype}"
            )
        if len(samples) > spec.max_seconds * sample_rate:
            raise _too_long(len(samples) / sample_rate, spec.max_seconds)
        x, rate = np.asarray(samples, dtype=np.float32), sample_rate
        _check_samples(x)
    return resample(x, rate, spec.sample_rate)


def split_windows(x: Samples, spec: AudioSpec) -> tuple[Samples, npt.NDArray[np.int64]]:
    """Cut a clip into (windows N×window_samples, start offsets in samples); see module doc."""
    if len(x) == 0:
        raise InvalidInputError("audio has no samples")
    starts = _window_starts(len(x), spec.window_samples, spec.hop_samples)
    if len(x) < spec.window_samples:
        x = np.pad(x, (0, spec.window_samples - len(x)))
    windows = np.lib.stride_tricks.sliding_window_view(x, spec.window_samples)[starts]
    return np.ascontiguousarray(windows, dtype=np.float32), starts


class StreamWindower:
    """Windows over a stream of chunks, emitted as soon as they are complete.

    `push` returns the hop-grid windows each chunk completes; `flush` at the end of the stream
    returns what `split_windows` would add for the tail (a padded window for a stream shorter than
    one window, or an end-aligned one). Holds at most about one window plus one chunk of audio.
    Not thread-safe: one windower per stream.
    """

    def __init__(self, spec: AudioSpec) -> None:
        self._window = spec.window_samples
        self._hop = spec.hop_samples
        self._buffer: Samples = np.zeros(0, np.float32)
        self._buffer_start = 0  # stream offset of self._buffer[0]
        self._next = 0  # stream offset of the next hop-grid window
        self._covered = 0  # end of the last window emitted
        self._total = 0
        self._flushed = False

    @property
    def total_samples(self) -> int:
        """Samples pushed so far."""
        return self._total

    def push(self, chunk: npt.NDArray[np.generic]) -> list[Window]:
        """Add mono samples at spec.sample_rate; returns the windows now complete."""
        if self._flushed:
            raise RuntimeError("push() after flush()")
        if chunk.ndim != 1 or not np.issubdtype(chunk.dtype, np.floating):
            raise InvalidInputError(
                f"audio chunk must be 1-D float, got {chunk.ndim}-D {chunk.dtype}"
            )
        if not np.isfinite(chunk).all():
            raise InvalidInputError("audio chunk contains NaN or infinite samples")
        self._buffer = np.concatenate([self._buffer, chunk.astype(np.float32, copy=False)])
        self._total += len(chunk)
        out = []
        while self._next + self._window <= self._total:
            i = self._next - self._buffer_start
            out.append(Window(self._next, self._buffer[i : i + self._window].copy(), self._window))
            self._covered = self._next + self._window
            self._next += self._hop
        # Keep what the next grid window and a possible end-aligned flush window need.
        keep_from = min(self._next, max(self._total - self._window, 0))
        self._buffer = self._buffer[keep_from - self._buffer_start :]
        self._buffer_start = keep_from
        return out

    def flush(self) -> list[Window]:
        """End of stream: the padded or end-aligned last window, if one is needed."""
        self._flushed = True
        n, w = self._total, self._window
        if n == 0 or self._covered >= n:
            return []
        tail = self._buffer[n - w - self._buffer_start :] if n >= w else self._buffer
        return [Window(max(n - w, 0), np.pad(tail, (0, w - len(tail))), min(n, w))]


def merge_segments(
    windows: Iterable[tuple[float, float, float]], threshold: float
) -> list[tuple[float, float]]:
    """(start_s, end_s, speech probability) per window -> merged (start_s, end_s) speech spans.

    A window is speech when its probability is >= threshold; speech windows that overlap or
    touch are joined into one segment. The input need not be sorted.
    """
    segments: list[tuple[float, float]] = []
    for start, end, _ in sorted(w for w in windows if w[2] >= threshold):
        if segments and start <= segments[-1][1] + 1e-9:
            segments[-1] = (segments[-1][0], max(segments[-1][1], end))
        else:
            segments.append((start, end))
    return segments


def _window_starts(n: int, window: int, hop: int) -> npt.NDArray[np.int64]:
    if n <= window:
        return np.zeros(1, np.int64)
    starts = np.arange(0, n - window + 1, hop, dtype=np.int64)
    if starts[-1] + window < n:
        starts = np.append(starts, np.int64(n - window))
    return starts


def _check_rate(rate: int) -> None:
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise InvalidInputError(f"audio sample rate {rate} Hz is outside {_rate_range()}")


def _check_samples(x: Samples) -> None:
    if len(x) == 0:
        raise InvalidInputError("audio has no samples")
    if not np.isfinite(x).all():
        raise InvalidInputError("audio contains NaN or infinite samples")


def _too_long(seconds: float, limit: float) -> InvalidInputError:
    return InvalidInputError(
        f"audio is {seconds:.1f} s, above the limit of {limit:g} s (raise --max-audio-seconds)"
    )


def _rate_range() -> str:
    return f"{MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz"

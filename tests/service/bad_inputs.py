"""The bad-input matrix as data: tests/service/bad_inputs.toml's cases, and the builders that turn
a case's protocol-neutral `send` table into request fields (bytes, arrays, lists, plain values).

A protocol's module turns the fields into its request: bad_inputs_grpc.py into gRPC messages,
bad_inputs_http.py into HTTP requests.
Every builder draws fresh random data from the generator it is given, so no case is checked on
one fixed input.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import tomllib
from PIL import Image

MATRIX = Path(__file__).with_name("bad_inputs.toml")


@dataclass(frozen=True)
class Case:
    id: str
    rpc: str  # ClassifyImage | DetectSpeech | StreamDetectSpeech | ModelInfer
    note: str  # the input in words, for the docs
    status: str  # gRPC status name
    message: tuple[str, ...] = ()  # the actionable part: each must be in the error message
    send: Mapping[str, Any] | None = None  # request fields, unbuilt
    run: str | None = None  # a scenario (bad_input_scenarios.py) instead of `send`
    masked: bool = True  # compare the message with the doc (numbers and bytes masked)
    http: Mapping[str, Any] | None = None  # how HTTP differs (tests/service/bad_inputs_http.py)


@dataclass(frozen=True)
class Matrix:
    server: Mapping[str, Any]  # Settings for the server the cases run against
    cases: list[Case]


def load(path: Path = MATRIX) -> Matrix:
    data = tomllib.loads(path.read_text())
    cases = [Case(**{**row, "message": tuple(row.get("message", ()))}) for row in data["case"]]
    for case in cases:
        assert (case.send is None) != (case.run is None), f"{case.id}: send or run, not both"
    return Matrix(server=data["server"], cases=cases)


def build(value: Any, rng: np.random.Generator) -> Any:
    """A `send` value with every {make = ...} table replaced by what its builder makes."""
    if isinstance(value, Mapping):
        if "make" not in value:
            return {k: build(v, rng) for k, v in value.items()}
        params = dict(value)
        builder = BUILDERS[params.pop("make")]
        cut, flip = params.pop("cut", None), params.pop("flip", None)
        made = builder(rng, **params)
        if flip is not None:
            made = made[:flip] + bytes([made[flip] ^ 0xFF]) + made[flip + 1 :]
        if cut is not None:
            made = made[: len(made) // 2 if cut == "half" else cut]
        return made
    if isinstance(value, list):
        return [build(v, rng) for v in value]
    return value


# ---- images -------------------------------------------------------------------------------------


def encode(im: Image.Image, fmt: str, **options: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **options)
    return buf.getvalue()


def noise(rng: np.random.Generator, h: int, w: int, channels: int = 0) -> np.ndarray:
    shape = (h, w, channels) if channels else (h, w)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def gradient(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A large image that compresses well (noise this size would not fit a message)."""
    y, x = np.mgrid[0:h, 0:w]
    phase = rng.uniform(0, 6.28)
    return (127.5 + 127.5 * np.sin(x / 97.0 + phase) * np.cos(y / 61.0)).astype(np.uint8)


def image(
    rng: np.random.Generator,
    format: str = "PNG",
    size: tuple[int, int] = (16, 16),  # height, width
    channels: int = 0,
    pixels: str = "noise",
    bits: int = 8,
    mode: str | None = None,
    convert: str | None = None,
    exif_orientation: int | None = None,
    options: Mapping[str, Any] | None = None,
) -> bytes:
    h, w = size
    if bits == 16:
        array = rng.integers(0, 65536, (h, w), dtype=np.uint16)
    else:
        array = gradient(rng, h, w) if pixels == "gradient" else noise(rng, h, w, channels)
    im = Image.fromarray(array, mode) if mode else Image.fromarray(array)
    if convert:
        im = im.convert(convert)
    extra = dict(options or {})
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation  # 6: rotate 90° clockwise to display
        extra["exif"] = exif.tobytes()
    return encode(im, format, **extra)


def animated(rng: np.random.Generator, format: str, frames: int = 3) -> bytes:
    images = [Image.fromarray(noise(rng, 16, 16, 3)) for _ in range(frames)]
    if format == "GIF":
        images = [f.convert("P") for f in images]
    return encode(images[0], format, save_all=True, append_images=images[1:], duration=40, loop=0)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def raw_png(width: int, height: int, idat: bytes) -> bytes:
    """A grayscale 8-bit PNG assembled by hand (for headers Pillow would never write)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )


def png_header(rng: np.random.Generator, width: int, height: int) -> bytes:
    """A PNG whose header claims width×height over a 100-byte image."""
    return raw_png(width, height, zlib.compress(b"\0" * 100))


@functools.cache
def _bomb(side: int) -> bytes:
    rows = b"\0" * ((side + 1) * side)  # filter byte 0 + one byte per pixel, per row
    return raw_png(side, side, zlib.compress(rows, 9))


def png_bomb(rng: np.random.Generator, side: int) -> bytes:
    """side×side black pixels: 64 MB decoded from ~60 KB at 8000 (cached: it takes a moment)."""
    return _bomb(side)


# ---- bytes and numbers --------------------------------------------------------------------------


def random_bytes(rng: np.random.Generator, n: int, prefix: str = "") -> bytes:
    return prefix.encode("latin-1") + rng.bytes(n)


def text(rng: np.random.Generator, text: str, repeat: int = 1) -> bytes:
    return text.encode() * repeat


def normal(rng: np.random.Generator, shape: list[int], dtype: str = "float32") -> np.ndarray:
    return rng.standard_normal(shape).astype(dtype)


def uniform(rng: np.random.Generator, n: int, append: float | None = None) -> list[float]:
    values = rng.random(n).tolist()
    return values if append is None else [*values, append]


def const(rng: np.random.Generator, value: float, n: int) -> list[float]:
    return [value] * n


# ---- audio --------------------------------------------------------------------------------------


def tone(
    rng: np.random.Generator,
    seconds: float,
    rate: int = 16000,
    channels: int = 1,
    append: float | None = None,
) -> np.ndarray:
    """A tone, loud in its middle third (so it counts as speech), over a little noise."""
    n = int(seconds * rate)
    t = np.arange(n) / rate
    loud = np.where((t > seconds / 3) & (t < 2 * seconds / 3), 0.6, 0.01)
    x = loud * np.sin(2 * np.pi * rng.uniform(200, 800) * t)
    x = x + 0.002 * rng.standard_normal(n)
    if channels > 1:
        x = np.stack([x * (1 - 0.2 * c) for c in range(channels)], axis=1)
    return (x if append is None else np.append(x, append)).astype(np.float64)


def wav(
    rng: np.random.Generator,
    seconds: float,
    rate: int = 16000,
    subtype: str = "FLOAT",
    channels: int = 1,
    poison: float | None = None,
    format_code: int | None = None,
) -> bytes:
    """A WAV of `tone`; `poison` replaces one sample, `format_code` the fmt chunk's format."""
    x = tone(rng, seconds, rate, channels)
    if poison is not None:
        x[rng.integers(0, len(x))] = poison
    buf = io.BytesIO()
    sf.write(buf, x, rate, format="WAV", subtype=subtype)
    data = buf.getvalue()
    if format_code is not None:
        data = data[:20] + struct.pack("<H", format_code) + data[22:]
    return data


BUILDERS: dict[str, Callable[..., Any]] = {
    "image": image,
    "animated": animated,
    "png_header": png_header,
    "png_bomb": png_bomb,
    "random": random_bytes,
    "text": text,
    "normal": normal,
    "uniform": uniform,
    "const": const,
    "tone": tone,
    "wav": wav,
}

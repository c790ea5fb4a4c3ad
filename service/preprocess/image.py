"""Encoded image bytes -> normalised float32 C×H×W, the way torchvision's eval transforms do it.

The pipeline, for a model whose config asks for `resize_size` 256 and `image_size` 224:

    bytes ─open (lazy: header only)─▶ pixel limit check ─▶ [JPEG DCT draft, opt-in] ─▶ decode
          ─▶ EXIF orientation ─▶ RGB / L (alpha composited onto white)
          ─▶ shorter side to 256 (Pillow resize) ─▶ center crop 224×224 ─▶ /255, (x - mean) / std

which is `Resize(256)`, `CenterCrop(224)`, `ToTensor()`, `Normalize(mean, std)` applied to
`Image.open(f).convert("RGB")`: the same Pillow resize and the same float32 operations in the same
order, so for an image without EXIF rotation or transparency the tensor equals torchvision's
bit for bit (tests/integration/test_imagenet_reference.py checks the served top-5 on real photos).
Without `resize_size` the image is resized straight to H×W.

Mode conversions (everything ends as 8-bit RGB or L before resizing, as torchvision's input is):
  * alpha (RGBA, LA, PA, palette or RGB/L with a transparent colour) is composited onto white,
    the usual rendering of a transparent image; black would make transparent logos vanish.
  * 16-bit ("I;16*") is scaled to 8 bits by round(v / 257), so 65535 maps to 255; Pillow's own
    convert("L") clips everything above 255 to white. "I" (32-bit int) is treated the same way,
    as Pillow uses it for 16-bit data too: values above 65535 clip (known limitation).
  * "F" (float) is taken to be on the 0..255 scale, as Pillow's convert() assumes.
  * CMYK, YCbCr, 1-bit and palette images use Pillow's conversions; ICC profiles are ignored.

Opt-in per model (config parameter `jpeg_draft: "true"`): large JPEGs are decoded at 1/2, 1/4
or 1/8 scale by libjpeg (Image.draft) when the result is still at least the size the resize step
needs. That is several times faster for photos of many megapixels, but the pixels differ from a
full decode (libjpeg's DCT scaling is a box-like filter, not Pillow's antialiased bilinear), so
it is off by default; docs/preprocessing-jpeg-draft.md has its measured effect on MobileNetV2.

Pillow's process-wide decompression-bomb guard (Image.MAX_IMAGE_PIXELS, by default a warning past
89 M pixels and an error past 179 M) is left as it is, as a backstop; our per-call `max_pixels`
check runs first for every image Pillow lets through. A limit above 89 M pixels therefore needs the
server to raise Image.MAX_IMAGE_PIXELS once at start-up.
"""

from __future__ import annotations

import contextlib
import io
import re
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal, cast, get_args

import numpy as np
import numpy.typing as npt
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from service.errors import InvalidInputError

Interpolation = Literal["bilinear", "bicubic", "nearest"]
_RESAMPLE: Final[Mapping[str, Image.Resampling]] = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}
# Only these parsers see untrusted bytes; Pillow would otherwise try ~40 others (EPS even runs
# Ghostscript). Multi-picture JPEGs from phone cameras open through "JPEG" and report "MPO".
_FORMATS: Final = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
_ACCEPTED: Final = "JPEG, PNG, WebP, BMP, GIF or TIFF"
# What Pillow raises on malformed files. Anything else (KeyError, TypeError...) is more likely our
# bug than the client's, so it is left to become INTERNAL with a logged traceback.
_DECODE_ERRORS: Final = (OSError, SyntaxError, ValueError, EOFError, struct.error)
_SIGNATURES: Final = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
)
_TRANSPOSED: Final = (5, 6, 7, 8)  # EXIF orientations that swap width and height
_PNG: Final = b"\x89PNG\r\n\x1a\n"
_INFLATED_CHUNKS: Final = (b"zTXt", b"iTXt", b"iCCP")  # Pillow decompresses these in open()


@dataclass(frozen=True)
class ImageSpec:
    """What one model wants as input; built from its config by `from_parameters`."""

    height: int
    width: int
    channels: int = 3
    """3: RGB, 1: grayscale (L)."""
    resize_size: int | None = None
    """Shorter side resized to this, then center-cropped to height×width; None: resize straight
    to height×width (aspect ratio not kept)."""
    mean: tuple[float, ...] = (0.0,)
    """Per channel, on the [0, 1] scale; one value applies to every channel."""
    std: tuple[float, ...] = (1.0,)
    interpolation: Interpolation = "bilinear"
    jpeg_draft: bool = False
    """Decode big JPEGs at a reduced DCT scale (faster, pixels not equal to a full decode)."""

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1:
            raise ValueError(f"image size must be positive, got {self.height}×{self.width}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.resize_size is not None and self.resize_size < 1:
            raise ValueError(f"resize_size must be positive, got {self.resize_size}")
        if self.interpolation not in _RESAMPLE:
            raise ValueError(f"interpolation must be one of {list(_RESAMPLE)}")
        for name in ("mean", "std"):
            values = tuple(float(v) for v in getattr(self, name))
            if len(values) == 1:
                values *= self.channels
            if len(values) != self.channels or not all(np.isfinite(values)):
                raise ValueError(f"{name} needs 1 or {self.channels} finite values, got {values}")
            object.__setattr__(self, name, values)
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std}")

    @classmethod
    def from_parameters(cls, params: Mapping[str, str], dims: Sequence[int]) -> ImageSpec:
        """Read the model config's `parameters`; `dims` is the input's C×H×W (no batch).

        Keys: image_size ("224" or "H,W"; default dims), resize_size, color ("rgb" or
        "grayscale"; default from dims), mean and std (comma-separated), interpolation.
        jpeg_draft ("true" / "false", default false) turns on reduced-scale JPEG decoding.
        A -1 (dynamic) dimension needs the matching key. Raises ValueError on a bad config.
        """
        if len(dims) != 3:
            raise ValueError(f"image model input must be C×H×W, got dims {list(dims)}")
        channels, height, width = (int(d) for d in dims)
        if min(height, width) < 1 and "image_size" not in params:
            raise ValueError(f"input dims {list(dims)} have a dynamic size: set image_size")
        if "image_size" in params:
            size = _ints(params, "image_size")
            if len(size) not in (1, 2):
                raise ValueError(f"image_size must be 'N' or 'H,W', got {params['image_size']!r}")
            height, width = size[0], size[-1]
        color = params.get("color", "").strip().lower()
        if color:
            if color not in ("rgb", "grayscale"):
                raise ValueError(f"color must be 'rgb' or 'grayscale', got {color!r}")
            wanted = 3 if color == "rgb" else 1
            if channels not in (-1, wanted):
                raise ValueError(f"color={color!r} contradicts {channels} input channels")
            channels = wanted
        resize = params.get("resize_size", "").strip()
        interpolation = params.get("interpolation", "bilinear").strip().lower()
        if interpolation not in get_args(Interpolation):
            raise ValueError(f"interpolation must be one of {get_args(Interpolation)}")
        return cls(
            height=height,
            width=width,
            channels=channels,
            resize_size=_ints(params, "resize_size")[0] if resize else None,
            mean=_floats(params, "mean") if "mean" in params else (0.0,),
            std=_floats(params, "std") if "std" in params else (1.0,),
            interpolation=cast(Interpolation, interpolation),
            jpeg_draft=_flag(params, "jpeg_draft"),
        )


@dataclass(frozen=True)
class ImageLimits:
    """Per-request guards against oversized and decompression-bomb images."""

    max_pixels: int = 40_000_000
    """width × height, checked from the header before any pixel is decoded."""
    max_bytes: int = 32 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.max_pixels < 1 or self.max_bytes < 1:
            raise ValueError(f"image limits must be positive, got {self}")


def decode_image(
    data: bytes,
    spec: ImageSpec,
    limits: ImageLimits = ImageLimits(),
    *,
    fast_jpeg: bool | None = None,
) -> npt.NDArray[np.float32]:
    """Decode and preprocess one image into a C-contiguous float32 array of shape C×H×W.

    `fast_jpeg` overrides the spec's `jpeg_draft` (None: the spec decides).

    Raises InvalidInputError for empty, oversized, truncated or undecodable bytes.
    """
    return finish_image(open_image(data, limits), spec, fast_jpeg=fast_jpeg)


@dataclass(frozen=True)
class OpenedImage:
    """An image whose header has been read and checked against the limits; no pixel decoded.

    Opening reads the header only, which usually takes tens of microseconds, so a caller can open
    an image first and then choose where the decoding runs (the server decodes small images on its
    event loop and the rest in its preprocessing pool: service.dataplane). `parses_cheaply` says
    when opening itself may take longer.
    """

    image: Image.Image
    data: bytes

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) as stored, before EXIF orientation."""
        return self.image.size

    def work_pixels(self, spec: ImageSpec) -> int:
        """The larger of the decoded and the resized image's pixel counts: what decoding and
        preprocessing for `spec` cost grows with (an orientation swap changes neither)."""
        w, h = self.size
        rw, rh = _resized_size(self.size, spec)
        return max(w * h, rw * rh)


def open_image(data: bytes, limits: ImageLimits = ImageLimits()) -> OpenedImage:
    """Read and check an image's header (bytes, format, pixel count); InvalidInputError if bad."""
    if not data:
        raise InvalidInputError(f"image is empty (0 bytes); send {_ACCEPTED} bytes")
    if len(data) > limits.max_bytes:
        raise InvalidInputError(
            f"image is {len(data)} bytes, above the limit of {limits.max_bytes} "
            "(raise --max-image-bytes)"
        )
    with _decode_errors(data, limits):
        im = Image.open(io.BytesIO(data), formats=_FORMATS)
        try:
            _check_pixels(im.size, limits)
        except InvalidInputError:
            im.close()
            raise
    return OpenedImage(im, data)


def parses_cheaply(data: bytes, max_bytes: int) -> bool:
    """Whether opening `data` costs time bounded by a small size: at most `max_bytes`, and, for
    a PNG, no compressed ancillary chunk before the pixels. Pillow inflates zTXt, iTXt and iCCP
    chunks while it reads the header, up to 64 MB of text in all, so a 16 KiB PNG can take
    tens of milliseconds to open (tests/service/test_preprocess_image.py has one)."""
    if len(data) > max_bytes:
        return False
    if not data.startswith(_PNG):
        return True
    at = len(_PNG)
    while at + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, at)
        if kind in _INFLATED_CHUNKS:
            return False
        if kind == b"IDAT":
            return True
        at += 12 + length
    return True


def finish_image(
    opened: OpenedImage, spec: ImageSpec, *, fast_jpeg: bool | None = None
) -> npt.NDArray[np.float32]:
    """Decode an opened image and preprocess it for `spec` (see decode_image); closes it."""
    with opened.image as im, _decode_errors(opened.data, fmt=f"{im.format} image"):
        draft = spec.jpeg_draft if fast_jpeg is None else fast_jpeg
        if draft and im.format in ("JPEG", "MPO"):
            _draft(im, spec)
        im.load()
        ImageOps.exif_transpose(im, in_place=True)
        converted = _to_model_mode(im, spec.channels)
        resized = converted.resize(
            _resized_size(converted.size, spec), _RESAMPLE[spec.interpolation]
        )
        pixels = np.asarray(resized)
    return _crop_and_normalise(pixels, spec)


@contextlib.contextmanager
def _decode_errors(
    data: bytes, limits: ImageLimits = ImageLimits(), fmt: str = "image"
) -> Iterator[None]:
    """Pillow's exceptions for bad input -> InvalidInputError with a message a client can use."""
    try:
        yield
    except UnidentifiedImageError:
        # Pillow also says "cannot identify" when a parser recognised the file but found it
        # broken (a bad checksum in a PNG header, say); the signature tells the two apart.
        looks = _signature(data)
        what = f"starts like a {looks} but is corrupt" if looks else f"not a {_ACCEPTED}"
        raise InvalidInputError(
            f"cannot decode image: {what} (got {len(data)} bytes starting {data[:12]!r})"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # Pillow's own guard fired inside Image.open, before we could see the size.
        found = re.search(r"\((\d+) pixels\)", str(e))
        pixels_text = found.group(1) if found else "too many"
        if found and int(pixels_text) <= limits.max_pixels:
            raise InvalidInputError(
                f"image is {pixels_text} pixels, above Pillow's process-wide limit "
                f"(PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS})"
            ) from None
        raise InvalidInputError(
            f"image is {pixels_text} pixels, above the limit of {limits.max_pixels} "
            "(raise --max-image-pixels)"
        ) from None
    except _DECODE_ERRORS as e:
        raise InvalidInputError(f"cannot decode {fmt}: {e or type(e).__name__}") from None


def check_raw_tensor(arr: npt.NDArray[np.generic], dims: Sequence[int]) -> npt.NDArray[np.float32]:
    """Validate a raw (already preprocessed) float32 tensor against the model's input dims.

    `dims` excludes the batch dimension; -1 matches any size. Returns a C-contiguous array.
    """
    if arr.dtype != np.float32:
        raise InvalidInputError(f"raw tensor must be float32, got {arr.dtype}")
    expected = tuple(int(d) for d in dims)
    if arr.ndim != len(expected) or any(
        s != d and not (d == -1 and s > 0) for s, d in zip(arr.shape, expected, strict=False)
    ):
        shown = "×".join("?" if d == -1 else str(d) for d in expected)
        raise InvalidInputError(
            f"raw tensor has shape {'×'.join(map(str, arr.shape))}, expected {shown} "
            "(no batch dimension)"
        )
    if not np.isfinite(arr).all():
        raise InvalidInputError("raw tensor contains NaN or infinite values")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _signature(data: bytes) -> str | None:
    """The accepted format whose file signature `data` starts with, if any."""
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "WebP"
    for magic, name in _SIGNATURES:
        if data.startswith(magic):
            return name
    return None


def _check_pixels(size: tuple[int, int], limits: ImageLimits) -> None:
    w, h = size
    if w < 1 or h < 1:
        raise InvalidInputError(f"image has an empty size {w}×{h}")
    if w * h > limits.max_pixels:
        raise InvalidInputError(
            f"image is {w}×{h} = {w * h} pixels, above the limit of {limits.max_pixels} "
            "(raise --max-image-pixels)"
        )


def _draft(im: Image.Image, spec: ImageSpec) -> None:
    """Ask libjpeg to decode at the smallest 1/2^k scale still at least the resize target."""
    w, h = im.size
    transposed = im.getexif().get(ExifTags.Base.Orientation, 1) in _TRANSPOSED
    if transposed:  # the resize target is in displayed (rotated) coordinates
        w, h = h, w
    need_w, need_h = _resized_size((w, h), spec)
    if transposed:
        need_w, need_h = need_h, need_w
    # Grayscale models get libjpeg's luma plane directly, skipping colour conversion.
    im.draft("L" if spec.channels == 1 else None, (need_w, need_h))


def _resized_size(size: tuple[int, int], spec: ImageSpec) -> tuple[int, int]:
    """(width, height) after the resize step; torchvision's _compute_resized_output_size."""
    if spec.resize_size is None:
        return spec.width, spec.height
    w, h = size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = spec.resize_size, int(spec.resize_size * long / short)
    return (new_short, new_long) if w <= h else (new_long, new_short)


def _to_model_mode(im: Image.Image, channels: int) -> Image.Image:
    """Any Pillow mode -> 8-bit "RGB" (channels 3) or "L" (channels 1); see the module doc."""
    if im.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N"):
        wide = np.clip(np.asarray(im), 0, 65535).astype(np.uint32)
        im = Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8))  # round(v/257)
    elif im.mode == "F":
        floats = np.nan_to_num(np.asarray(im), nan=0.0, posinf=255.0, neginf=0.0)
        im = Image.fromarray(np.rint(np.clip(floats, 0, 255)).astype(np.uint8))
    target = "L" if channels == 1 else "RGB"
    try:
        if im.has_transparency_data:
            white = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(white, im.convert("RGBA"))
        return im if im.mode == target else im.convert(target)
    except ValueError as e:  # a conversion Pillow lacks, e.g. from LAB
        raise InvalidInputError(f"unsupported image mode {im.mode!r}: {e}") from None


def _crop_and_normalise(pixels: npt.NDArray[np.uint8], spec: ImageSpec) -> npt.NDArray[np.float32]:
    """torchvision's CenterCrop (zero padding when too small), ToTensor, Normalize."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    th, tw = spec.height, spec.width
    h, w = pixels.shape[:2]
    if th > h or tw > w:
        pad_h, pad_w = max(th - h, 0), max(tw - w, 0)
        pixels = np.pad(
            pixels, ((pad_h // 2, (pad_h + 1) // 2), (pad_w // 2, (pad_w + 1) // 2), (0, 0))
        )
        h, w = pixels.shape[:2]
    # Python round (half to even) on purpose: torchvision uses it.
    top, left = round((h - th) / 2.0), round((w - tw) / 2.0)
    crop = pixels[top : top + th, left : left + tw]
    # Same float32 operations, in the same order, as ToTensor + Normalize.
    out = np.ascontiguousarray(crop.transpose(2, 0, 1), dtype=np.float32)
    out /= np.float32(255)
    out -= np.asarray(spec.mean, dtype=np.float32)[:, None, None]
    out /= np.asarray(spec.std, dtype=np.float32)[:, None, None]
    return out


def _flag(params: Mapping[str, str], key: str) -> bool:
    value = params.get(key, "false").strip().lower()
    if value not in ("true", "false", "1", "0"):
        raise ValueError(f"{key} must be true or false, got {params[key]!r}")
    return value in ("true", "1")


def _ints(params: Mapping[str, str], key: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in params[key].split(","))
    except ValueError:
        raise ValueError(f"{key} must be comma-separated integers, got {params[key]!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"{key} must be positive, got {params[key]!r}")
    return values


def _floats(params: Mapping[str, str], key: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in params[key].split(","))
    except ValueError:
        raise ValueError(f"{key} must be comma-separated numbers, got {params[key]!r}") from None

"""service.preprocess.image: every format and mode, the torchvision-style reference, the guards."""

from __future__ import annotations

import dataclasses
import io
import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import skimage.data
from PIL import ExifTags, Image, JpegImagePlugin, PngImagePlugin

from service.errors import InvalidInputError
from service.preprocess.image import (
    ImageLimits,
    ImageSpec,
    check_raw_tensor,
    decode_image,
    finish_image,
    open_image,
    parses_cheaply,
)
from tests.service.conftest import with_text_chunks

IMAGENET = ImageSpec(
    224, 224, 3, resize_size=256, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
)
RAW = ImageSpec(8, 8)  # mean 0, std 1: outputs are pixel / 255


def encode(im: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def exact(height: int, width: int, channels: int = 3) -> ImageSpec:
    """A spec whose resize is the identity for an image of that size: outputs are pixel / 255."""
    return ImageSpec(height, width, channels)


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    """Real photographs of different shapes: landscape, square, grey."""
    return {
        name: Image.fromarray(getattr(skimage.data, name)())
        for name in ("chelsea", "astronaut", "coffee", "camera")
    }


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240611)


def reference(data: bytes, spec: ImageSpec, mode: str = "RGB") -> np.ndarray:
    """torchvision's Resize -> CenterCrop -> ToTensor -> Normalize, written out with Pillow's crop
    and float64 arithmetic (independently of the code under test)."""
    resample = {
        "bilinear": Image.Resampling.BILINEAR,
        "bicubic": Image.Resampling.BICUBIC,
        "nearest": Image.Resampling.NEAREST,
    }[spec.interpolation]
    im = Image.open(io.BytesIO(data)).convert(mode)
    if spec.resize_size is None:
        im = im.resize((spec.width, spec.height), resample)
    else:
        w, h = im.size
        r = spec.resize_size
        im = im.resize((r, int(r * h / w)) if w <= h else (int(r * w / h), r), resample)
        left = round((im.width - spec.width) / 2.0)
        top = round((im.height - spec.height) / 2.0)
        im = im.crop((left, top, left + spec.width, top + spec.height))
    a = np.asarray(im, dtype=np.float64).reshape(spec.height, spec.width, -1) / 255.0
    return ((a - np.array(spec.mean)) / np.array(spec.std)).transpose(2, 0, 1)


@pytest.mark.parametrize(
    "spec",
    [
        IMAGENET,
        ImageSpec(224, 224, 3, resize_size=None, mean=(0.5,), std=(0.25,)),
        ImageSpec(160, 224, 3, resize_size=240, interpolation="bicubic"),
        ImageSpec(100, 90, 3, resize_size=113, interpolation="nearest", mean=(0.1, 0.2, 0.3)),
    ],
    ids=["imagenet", "direct", "bicubic-nonsquare", "nearest-odd"],
)
@pytest.mark.parametrize("name", ["chelsea", "astronaut", "coffee"])
def test_png_matches_torchvision_style_reference(photos, name, spec):
    data = encode(photos[name], "PNG")
    out = decode_image(data, spec)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    assert out.shape == (3, spec.height, spec.width)
    np.testing.assert_allclose(out, reference(data, spec), rtol=0, atol=1e-6)


def test_grayscale_model_matches_reference(photos):
    spec = ImageSpec(28, 28, 1, resize_size=32, mean=(0.2860,), std=(0.3530,))
    for name in ("camera", "chelsea"):  # an L image and an RGB one
        data = encode(photos[name], "PNG")
        out = decode_image(data, spec)
        assert out.shape == (1, 28, 28)
        np.testing.assert_allclose(out, reference(data, spec, mode="L"), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("fmt", "kwargs", "tolerance"),
    [
        ("PNG", {}, 0.0),
        ("BMP", {}, 0.0),
        ("TIFF", {}, 0.0),
        ("WEBP", {"lossless": True}, 0.0),
        ("JPEG", {"quality": 95}, 0.03),
        ("WEBP", {"quality": 90}, 0.05),
        ("GIF", {}, 0.1),  # 256-colour palette
    ],
)
def test_every_format_decodes_alike(photos, fmt, kwargs, tolerance):
    expected = decode_image(encode(photos["coffee"], "PNG"), IMAGENET)
    out = decode_image(encode(photos["coffee"], fmt, **kwargs), IMAGENET)
    assert out.shape == (3, 224, 224) and out.dtype == np.float32
    assert np.abs(out - expected).mean() <= tolerance


def test_exif_orientation_is_applied(photos):
    cat = photos["chelsea"]  # 451 wide x 300 tall; a wrong rotation changes everything
    spec = ImageSpec(120, 80, 3)  # resized straight to 80 wide x 120 tall: portrait
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # "rotate 90 degrees clockwise to display"
    tagged = decode_image(encode(cat, "JPEG", quality=95, exif=exif), spec)
    upright = cat.transpose(Image.Transpose.ROTATE_270)
    expected = decode_image(encode(upright, "JPEG", quality=95), spec)
    ignored = decode_image(encode(cat, "JPEG", quality=95), spec)  # same pixels, no tag
    assert np.abs(tagged - expected).mean() < 0.02
    assert np.abs(ignored - expected).mean() > 0.1


def test_grey_image_for_rgb_model_repeats_the_channel(photos):
    out = decode_image(encode(photos["camera"], "PNG"), IMAGENET)
    raw = (
        out * np.array(IMAGENET.std, np.float32)[:, None, None]
        + np.array(IMAGENET.mean)[:, None, None]
    )
    np.testing.assert_allclose(raw[0], raw[1], atol=1e-6)
    np.testing.assert_allclose(raw[1], raw[2], atol=1e-6)


def test_alpha_is_composited_onto_white(rng):
    rgb = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    alpha = np.full((8, 8), 255, np.uint8)
    alpha[:, :4] = 0  # left half transparent
    alpha[0, 4] = 128
    rgba = Image.fromarray(np.dstack([rgb, alpha]))
    out = decode_image(encode(rgba, "PNG"), RAW).transpose(1, 2, 0) * 255
    np.testing.assert_allclose(out[:, :4], 255, atol=1e-4)
    np.testing.assert_allclose(out[1:, 4:], rgb[1:, 4:], atol=1e-4)
    half = rgb[0, 4].astype(float) * 128 / 255 + 255 * 127 / 255
    np.testing.assert_allclose(out[0, 4], half, atol=1.0)
    # The same for LA, and for a grayscale model.
    la = rgba.convert("LA")
    grey = decode_image(encode(la, "PNG"), exact(8, 8, channels=1))[0] * 255
    np.testing.assert_allclose(grey[:, :4], 255, atol=1e-4)
    np.testing.assert_allclose(grey[1:, 4:], np.asarray(la)[1:, 4:, 0], atol=1e-4)


def test_palette_with_transparency(rng):
    palette_index = rng.integers(1, 16, (8, 8), dtype=np.uint8)
    palette_index[2:5, 2:5] = 0
    im = Image.fromarray(palette_index, mode="P")
    colours = rng.integers(0, 256, 16 * 3, dtype=np.uint8)
    im.putpalette(colours.tolist())
    for fmt, kwargs in (("PNG", {"transparency": 0}), ("GIF", {"transparency": 0})):
        out = decode_image(encode(im, fmt, **kwargs), RAW).transpose(1, 2, 0) * 255
        np.testing.assert_allclose(out[2:5, 2:5], 255, atol=1e-4)
        expected = colours.reshape(16, 3)[palette_index]
        np.testing.assert_allclose(out[0], expected[0], atol=1e-4)
    # Without transparency the palette is simply looked up.
    out = decode_image(encode(im, "PNG"), RAW).transpose(1, 2, 0) * 255
    np.testing.assert_allclose(out, colours.reshape(16, 3)[palette_index], atol=1e-4)


def test_cmyk(photos):
    rgb = photos["astronaut"].resize((64, 64))
    cmyk = rgb.convert("CMYK")
    spec = exact(64, 64)
    expected = decode_image(encode(rgb, "PNG"), spec)
    np.testing.assert_allclose(decode_image(encode(cmyk, "TIFF"), spec), expected, atol=1e-6)
    lossy = decode_image(encode(cmyk, "JPEG", quality=95), spec)
    assert np.abs(lossy - expected).mean() < 0.03


def test_16_bit_is_scaled_not_clipped():
    values = np.linspace(0, 65535, 256).round().astype(np.uint16)
    values[1], values[2] = 128, 129  # the rounding boundary of v / 257
    im = Image.fromarray(np.tile(values, (4, 1)))
    assert im.mode == "I;16"
    data = encode(im, "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    out = decode_image(data, exact(4, 256, channels=1))
    expected = np.round(values / 257) / 255
    np.testing.assert_allclose(out[0, 0], expected, rtol=0, atol=1e-6)
    assert out[0, 0, 1] == 0 and out[0, 0, 2] == pytest.approx(1 / 255)
    assert out.max() == 1.0 and 0.45 < out.mean() < 0.55  # Pillow's convert("L") would be ~1


def test_bilevel(rng):
    bits = rng.integers(0, 2, (8, 8)).astype(bool)
    bits[0, 0], bits[0, 1] = True, False
    out = decode_image(encode(Image.fromarray(bits), "PNG"), RAW)
    np.testing.assert_array_equal(out[0], bits.astype(np.float32))
    np.testing.assert_array_equal(out[0], out[2])


def test_float_mode_uses_the_0_255_scale(rng):
    values = rng.uniform(-10, 300, (8, 8)).astype(np.float32)
    out = decode_image(encode(Image.fromarray(values), "TIFF"), exact(8, 8, channels=1))
    np.testing.assert_allclose(out[0], np.rint(np.clip(values, 0, 255)) / 255, atol=1e-6)


def test_one_pixel_image_is_resized_up():
    out = decode_image(encode(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG"), IMAGENET)
    assert out.shape == (3, 224, 224)
    raw = (
        out * np.array(IMAGENET.std)[:, None, None] + np.array(IMAGENET.mean)[:, None, None]
    ) * 255
    np.testing.assert_allclose(raw[:, 0, 0], [10, 200, 30], atol=1e-3)
    assert np.ptp(raw, axis=(1, 2)).max() < 1e-3


@pytest.mark.parametrize(
    ("fmt", "kwargs"),
    [("GIF", {}), ("PNG", {}), ("WEBP", {"lossless": True})],
    ids=["gif", "apng", "webp"],
)
def test_animation_gives_its_first_frame(fmt, kwargs):
    colours = [(200, 30, 40), (20, 220, 50), (10, 20, 230)]
    frames = [Image.new("RGB", (16, 16), c) for c in colours]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=50, **kwargs)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
    out = decode_image(data, exact(16, 16)) * 255
    np.testing.assert_allclose(out.mean(axis=(1, 2)), colours[0], atol=2)


def crafted_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height 1-bit pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(bytes((width + 7) // 8 + 1) * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("width", "height", "message"),
    [
        (8000, 6000, "image is 8000×6000 = 48000000 pixels, above the limit of 40000000 "),
        (12_000, 10_000, "image is 120000000 pixels, above the limit of 40000000"),  # Pillow's
        (20_000, 20_000, "image is 400000000 pixels, above the limit of 40000000"),  # guard
    ],
)
def test_decompression_bomb_is_rejected_before_decoding(width, height, message):
    data = crafted_png(width, height)
    assert len(data) < 1000
    started = time.perf_counter()
    with pytest.raises(InvalidInputError, match="--max-image-pixels") as caught:
        decode_image(data, IMAGENET)
    assert time.perf_counter() - started < 0.5
    assert str(caught.value).startswith(message)


def test_pillow_guard_above_our_limit_is_reported_as_such():
    with pytest.raises(InvalidInputError, match=r"400000000 pixels, above Pillow's process-wide"):
        decode_image(crafted_png(20_000, 20_000), IMAGENET, ImageLimits(max_pixels=10**9))


def test_limits_are_per_call(photos):
    data = encode(photos["coffee"], "PNG")  # 600 x 400
    with pytest.raises(InvalidInputError, match=r"600×400 = 240000 pixels.*limit of 239999"):
        decode_image(data, IMAGENET, ImageLimits(max_pixels=239_999))
    assert decode_image(data, IMAGENET, ImageLimits(max_pixels=240_000)).shape == (3, 224, 224)
    with pytest.raises(InvalidInputError, match=r"above the limit of 1000 \(raise --max-image"):
        decode_image(data, IMAGENET, ImageLimits(max_bytes=1000))


def test_bad_bytes_are_invalid_input(photos, rng):
    jpeg = encode(photos["chelsea"], "JPEG")
    with pytest.raises(InvalidInputError, match="truncated"):
        decode_image(jpeg[: len(jpeg) // 2], IMAGENET)
    with pytest.raises(InvalidInputError, match="empty"):
        decode_image(b"", IMAGENET)
    noise = rng.bytes(1000)
    with pytest.raises(
        InvalidInputError, match=r"not a JPEG, PNG, WebP, BMP, GIF or TIFF \(got 1000"
    ):
        decode_image(noise, IMAGENET)
    with pytest.raises(InvalidInputError, match=r"got 13 bytes starting b'not an image'"):
        decode_image(b"not an image!", IMAGENET)
    png = encode(photos["chelsea"], "PNG")
    with pytest.raises(InvalidInputError, match="cannot decode"):
        decode_image(png[:-2000], IMAGENET)
    # Formats Pillow could read but we do not offer are refused without being parsed.
    with pytest.raises(InvalidInputError, match="not a JPEG"):
        decode_image(encode(photos["chelsea"], "PPM"), IMAGENET)


def test_big_jpeg_is_decoded_at_reduced_scale(photos, monkeypatch):
    big = encode(photos["chelsea"].resize((4000, 3000), Image.Resampling.BILINEAR), "JPEG")
    scales: list[int] = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = original(self, mode, size)
        scales.append(self.decoderconfig[0])
        assert min(self.size) >= 256  # never below what Resize(256) needs
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    full = decode_image(big, IMAGENET)
    assert scales == []  # off by default: a full decode, as torchvision does
    fast = decode_image(big, dataclasses.replace(IMAGENET, jpeg_draft=True))
    assert scales == [8]  # 4000 x 3000 decoded as 500 x 375
    assert np.array_equal(decode_image(big, IMAGENET, fast_jpeg=True), fast)
    assert scales == [8, 8]
    assert np.abs(fast - full).mean() < 0.02
    assert np.abs(fast - full).max() < 0.5


def test_only_small_plain_images_count_as_cheap_to_parse(photos):
    small = encode(photos["coffee"].resize((28, 28)), "PNG")
    assert parses_cheaply(small, 16384)
    assert not parses_cheaply(small, len(small) - 1)  # over the byte budget
    assert parses_cheaply(encode(photos["coffee"].resize((28, 28)), "JPEG"), 16384)
    assert parses_cheaply(encode(photos["coffee"].resize((28, 28)), "PNG", pnginfo=_text()), 16384)
    crafted = with_text_chunks(small, 12)
    assert len(crafted) < 16384  # small, yet Pillow would inflate 12 MB while opening it
    assert not parses_cheaply(crafted, 16384)
    np.testing.assert_array_equal(
        decode_image(crafted, ImageSpec(28, 28, 1)), decode_image(small, ImageSpec(28, 28, 1))
    )
    assert parses_cheaply(b"\x89PNG\r\n\x1a\n\0\0", 16384)  # truncated: Pillow's to refuse


def _text() -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "plain tEXt is read, not inflated")
    return info


def test_open_then_finish_is_decode_image(photos):
    """The two halves the server splits decoding into (header on the loop, pixels where the
    size says) give decode_image's array, and finishing closes the image."""
    data = encode(photos["coffee"], "PNG")  # 600 x 400
    opened = open_image(data)
    assert opened.size == (600, 400)
    assert opened.work_pixels(IMAGENET) == 600 * 400  # decoded > resized (384 x 256)
    assert opened.work_pixels(ImageSpec(28, 28, 1)) == 600 * 400
    small = open_image(encode(photos["coffee"].resize((30, 20)), "PNG"))
    assert small.work_pixels(ImageSpec(28, 28, 1)) == 28 * 28  # the resize is the larger
    assert small.work_pixels(IMAGENET) == 384 * 256
    out = finish_image(opened, IMAGENET)
    np.testing.assert_array_equal(out, decode_image(data, IMAGENET))
    assert opened.image.fp is None  # closed: its buffer let go


def test_open_checks_the_header_and_finish_the_pixels(photos):
    with pytest.raises(InvalidInputError, match="--max-image-pixels"):
        open_image(crafted_png(8000, 6000))
    with pytest.raises(InvalidInputError, match="not a JPEG"):
        open_image(b"not an image!")
    png = encode(photos["chelsea"], "PNG")
    opened = open_image(png[:-2000])  # the header is intact: the damage shows when decoding
    with pytest.raises(InvalidInputError, match="cannot decode PNG image"):
        finish_image(opened, IMAGENET)


def test_decoding_is_thread_safe(photos):
    blobs = [encode(photos[n], f) for n in ("chelsea", "coffee") for f in ("JPEG", "PNG", "WEBP")]
    serial = [decode_image(b, IMAGENET) for b in blobs]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda b: decode_image(b, IMAGENET), blobs * 3))
    for i, out in enumerate(parallel):
        np.testing.assert_array_equal(out, serial[i % len(blobs)])


def test_spec_from_parameters():
    spec = ImageSpec.from_parameters(
        {
            "task": "image_classification",
            "image_size": "224",
            "resize_size": "256",
            "mean": "0.485, 0.456, 0.406",
            "std": "0.229,0.224,0.225",
            "interpolation": "bicubic",
        },
        [3, 224, 224],
    )
    assert spec == ImageSpec(
        224, 224, 3, 256, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bicubic"
    )
    spec = ImageSpec.from_parameters({"mean": "0.5", "std": "0.5"}, [1, 28, 28])
    assert spec == ImageSpec(28, 28, 1, None, (0.5,), (0.5,))
    assert spec.mean == (0.5,) and spec.std == (0.5,)  # one value for every channel
    assert ImageSpec.from_parameters({}, [3, 32, 32]).mean == (0.0, 0.0, 0.0)
    spec = ImageSpec.from_parameters({"image_size": "96,128", "color": "grayscale"}, [1, -1, -1])
    assert (spec.height, spec.width, spec.channels) == (96, 128, 1)
    assert not spec.jpeg_draft
    assert ImageSpec.from_parameters({"jpeg_draft": " True"}, [3, 32, 32]).jpeg_draft


@pytest.mark.parametrize(
    ("params", "dims", "match"),
    [
        ({"image_size": "224,x"}, [3, 224, 224], "integers"),
        ({"image_size": "1,2,3"}, [3, 224, 224], "'N' or 'H,W'"),
        ({"color": "cmyk"}, [3, 224, 224], "rgb"),
        ({"color": "rgb"}, [1, 28, 28], "contradicts"),
        ({"mean": "0.1,0.2"}, [3, 224, 224], "1 or 3"),
        ({"std": "0.5,0,0.5"}, [3, 224, 224], "positive"),
        ({"interpolation": "lanczos"}, [3, 224, 224], "interpolation"),
        ({"resize_size": "0"}, [3, 224, 224], "positive"),
        ({"jpeg_draft": "yes"}, [3, 224, 224], "jpeg_draft must be true or false"),
        ({}, [3, -1, -1], "image_size"),
        ({}, [224, 224], "C×H×W"),
        ({}, [2, 8, 8], "channels"),
    ],
)
def test_spec_from_bad_parameters(params, dims, match):
    with pytest.raises(ValueError, match=match):
        ImageSpec.from_parameters(params, dims)


def test_crop_larger_than_resize_pads_like_torchvision():
    # Resize(8) then CenterCrop(12): torchvision pads with zeros (black) around the image.
    out = decode_image(encode(Image.new("L", (8, 8), 255), "PNG"), ImageSpec(12, 12, 1, 8))
    assert out.shape == (1, 12, 12)
    assert out[0, 2:10, 2:10].min() == 1.0 and out[0, :2].max() == 0 and out[0, :, 10:].max() == 0


def test_check_raw_tensor(rng):
    x = rng.standard_normal((3, 224, 224)).astype(np.float32)
    assert check_raw_tensor(x, [3, 224, 224]) is x
    np.testing.assert_array_equal(check_raw_tensor(x[:, ::-1], [3, 224, 224]), x[:, ::-1])
    assert check_raw_tensor(x[:, :100], [3, -1, -1]).flags.c_contiguous
    with pytest.raises(InvalidInputError, match=r"shape 1×3×224×224, expected 3×224×224"):
        check_raw_tensor(x[None], [3, 224, 224])
    with pytest.raises(InvalidInputError, match=r"expected 3×\?×\?"):
        check_raw_tensor(x[:1], [3, -1, -1])
    with pytest.raises(InvalidInputError, match="float32"):
        check_raw_tensor(x.astype(np.float64), [3, 224, 224])
    y = x.copy()
    y[1, 2, 3] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        check_raw_tensor(y, [3, 224, 224])
    y[1, 2, 3] = np.inf
    with pytest.raises(InvalidInputError, match="infinite"):
        check_raw_tensor(y, [3, 224, 224])

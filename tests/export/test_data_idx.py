"""IDX reader/writer, the Fashion-MNIST loader, and ArrayImageDataset."""

from __future__ import annotations

import gzip
import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from export.data.errors import DatasetError
from export.data.idx import (
    DEFAULT_FASHION_MNIST_DIR,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_ENV,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    load_fashion_mnist,
    load_idx_dataset,
    parse_idx,
    read_idx,
    write_idx,
)
from export.data.images import ArrayImageDataset, random_crop_flip
from service.preprocess.image import ImageSpec, decode_image

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]
CODES: dict[type, int] = {
    np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D,
    np.float64: 0x0E,
}  # fmt: skip


def _random(rng: np.random.Generator, dtype: type, shape: tuple[int, ...]) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
    return rng.standard_normal(shape).astype(dtype) * 1e3


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gz", [False, True])
def test_round_trip_every_dtype(tmp_path: Path, dtype: type, gz: bool) -> None:
    rng = np.random.default_rng()
    for shape in [(7,), (3, 5, 4), (2, 3, 1, 2)]:
        arr = _random(rng, dtype, shape)
        path = tmp_path / f"a.idx{'.gz' if gz else ''}"
        write_idx(path, arr)
        assert (path.read_bytes()[:2] == b"\x1f\x8b") is gz
        back = read_idx(path)
        assert back.dtype == np.dtype(dtype) and back.dtype.isnative
        assert back.shape == shape
        np.testing.assert_array_equal(back, arr)


@pytest.mark.parametrize("dtype", DTYPES)
def test_reads_hand_built_big_endian_file(tmp_path: Path, dtype: type) -> None:
    # Built with struct, not write_idx, so the reader is checked against the spec, not itself.
    arr = _random(np.random.default_rng(), dtype, (2, 3))
    raw = bytes([0, 0, CODES[dtype], 2]) + struct.pack(">II", 2, 3)
    raw += arr.astype(np.dtype(dtype).newbyteorder(">")).tobytes()
    path = tmp_path / "hand.idx"
    path.write_bytes(raw)
    np.testing.assert_array_equal(read_idx(path), arr)
    (tmp_path / "hand.idx.gz").write_bytes(gzip.compress(raw))
    np.testing.assert_array_equal(read_idx(tmp_path / "hand.idx.gz"), arr)


GOOD = bytes([0, 0, 0x08, 2]) + struct.pack(">II", 2, 2) + bytes([1, 2, 3, 4])


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"", "shorter than the magic"),
        (b"\x01\x00\x08\x01" + GOOD[4:], "must start 0000"),
        (b"\x00\x00\x07\x02" + GOOD[4:], "unknown IDX dtype code 0x07"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
        (GOOD[:9], "truncated IDX header"),
        (GOOD[:-1], "truncated IDX data"),
        (GOOD + b"\x00", "trailing bytes"),
    ],
)
def test_corrupt_files_raise_dataset_error(tmp_path: Path, raw: bytes, problem: str) -> None:
    assert parse_idx(GOOD).tolist() == [[1, 2], [3, 4]]  # the unbroken file is fine
    path = tmp_path / "broken-idx1-ubyte"
    path.write_bytes(raw)
    with pytest.raises(DatasetError, match=problem) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_truncated_gzip_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(GOOD * 100)[:-12])
    with pytest.raises(DatasetError, match="corrupt or truncated gzip") as info:
        read_idx(path)
    assert str(path) in str(info.value)
    with pytest.raises(DatasetError, match="cannot read"):
        read_idx(tmp_path / "absent")


def _fake_mnist(root: Path, n_train: int, n_test: int, rng: np.random.Generator) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n, dtype=np.uint8))


def test_env_var_overrides_root_and_plain_files_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_mnist(tmp_path / "fm", 12, 5, np.random.default_rng())
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path / "fm"))
    images, labels = load_fashion_mnist("train")
    assert images.shape == (12, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (12,) and labels.dtype == np.int64
    np.testing.assert_array_equal(images, read_idx(tmp_path / "fm/train-images-idx3-ubyte.gz"))
    assert load_fashion_mnist("test")[0].shape == (5, 28, 28)
    with pytest.raises(ValueError, match="split"):
        load_idx_dataset(tmp_path / "fm", "validation")  # type: ignore[arg-type]


def test_missing_dataset_says_how_to_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist") as info:
        load_fashion_mnist("train")
    assert FASHION_MNIST_ENV in str(info.value)
    (tmp_path / "half").mkdir()
    write_idx(tmp_path / "half/train-images-idx3-ubyte", np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DatasetError, match="missing train-labels-idx1-ubyte"):
        load_fashion_mnist("train", tmp_path / "half")


def test_image_label_count_mismatch(tmp_path: Path) -> None:
    _fake_mnist(tmp_path, 4, 3, np.random.default_rng())
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(3, np.uint8))
    with pytest.raises(DatasetError, match="4 images but 3 labels"):
        load_idx_dataset(tmp_path, "train")


@pytest.mark.skipif(not DEFAULT_FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist absent")
def test_real_fashion_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FASHION_MNIST_ENV, raising=False)
    x_train, y_train = load_fashion_mnist("train")
    x_test, y_test = load_fashion_mnist("test")
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.int64
    assert set(np.unique(y_train)) == set(range(10)) == set(np.unique(y_test))
    assert np.bincount(y_train).tolist() == [6000] * 10
    assert len(FASHION_MNIST_CLASSES) == 10 and FASHION_MNIST_CLASSES[9] == "Ankle boot"
    scaled = x_train / 255.0
    assert scaled.mean() == pytest.approx(FASHION_MNIST_MEAN, abs=5e-4)
    assert scaled.std() == pytest.approx(FASHION_MNIST_STD, abs=5e-4)


def test_array_dataset_matches_pillow_bilinear_and_normalises() -> None:
    rng = np.random.default_rng()
    images = rng.integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    ds = ArrayImageDataset(images, np.arange(6), size=32)
    x, label = ds[3]
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32 and label == 3
    # Upsampling is Pillow's BILINEAR on the uint8 image: what the server does to a PNG.
    expected = np.asarray(Image.fromarray(images[3]).resize((32, 32), Image.Resampling.BILINEAR))
    expected = (expected / 255.0 - FASHION_MNIST_MEAN) / FASHION_MNIST_STD
    np.testing.assert_allclose(x[0].numpy(), expected, atol=1e-5)
    # ... and so equals the server's decode of the same image sent as a PNG.
    buffer = io.BytesIO()
    Image.fromarray(images[3]).save(buffer, format="PNG")
    spec = ImageSpec(32, 32, channels=1, mean=(FASHION_MNIST_MEAN,), std=(FASHION_MNIST_STD,))
    np.testing.assert_allclose(x.numpy(), decode_image(buffer.getvalue(), spec), atol=1e-6)
    # Same size: no resize at all, just scale + normalise.
    x28, _ = ArrayImageDataset(images, np.arange(6), size=28)[0]
    np.testing.assert_allclose(
        x28[0].numpy(), (images[0] / 255.0 - FASHION_MNIST_MEAN) / FASHION_MNIST_STD, atol=1e-6
    )
    spec = ds.preprocessing.to_dict()
    assert json.loads(json.dumps(spec)) == spec
    assert spec["size"] == 32 and spec["channels"] == 1 and spec["resize"] == "stretch"
    assert spec["scale"] == pytest.approx(1 / 255) and spec["mean"] == [FASHION_MNIST_MEAN]


def test_array_dataset_rgb_and_loader() -> None:
    rng = np.random.default_rng()
    images = rng.integers(0, 256, size=(10, 20, 24, 3), dtype=np.uint8)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.6, 0.7)
    ds = ArrayImageDataset(images, rng.integers(0, 4, 10), size=16, mean=mean, std=std)
    batch, labels = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch.shape == (4, 3, 16, 16) and labels.dtype == torch.int64
    # A flat colour survives any resize; channel c must read (v/255 - mean[c]) / std[c].
    flat = np.broadcast_to(np.array([10, 128, 250], np.uint8), (1, 9, 9, 3)).copy()
    x, _ = ArrayImageDataset(flat, [0], size=16, mean=mean, std=std)[0]
    for c in range(3):
        want = (flat[0, 0, 0, c] / 255 - mean[c]) / std[c]
        np.testing.assert_allclose(x[c].numpy(), want, atol=1e-5)
    with pytest.raises(ValueError):
        ArrayImageDataset(images.astype(np.float32), np.zeros(10), size=16)  # type: ignore[arg-type]


def test_augmentation_is_a_shifted_or_flipped_copy() -> None:
    x = torch.rand(1, 12, 12)
    seen_flip = seen_plain = False
    for _ in range(40):
        y = random_crop_flip(x, pad=0, hflip=True)
        seen_flip |= torch.equal(y, x.flip(-1))
        seen_plain |= torch.equal(y, x)
        assert torch.equal(y, x) or torch.equal(y, x.flip(-1))
    assert seen_flip and seen_plain
    padded = torch.nn.functional.pad(x, (3, 3, 3, 3))
    for _ in range(20):
        y = random_crop_flip(x, pad=3, hflip=False)
        assert y.shape == x.shape
        assert any(
            torch.equal(y, padded[:, t : t + 12, s : s + 12]) for t in range(7) for s in range(7)
        )
    ds = ArrayImageDataset(
        np.random.default_rng().integers(0, 256, (2, 28, 28), dtype=np.uint8), [0, 1], augment=True
    )
    assert ds[0][0].shape == (1, 32, 32)

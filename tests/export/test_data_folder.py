"""ImageFolderDataset on real image files written by Pillow (PNG, JPEG, GIF, BMP, WebP)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from export.data.errors import DatasetError
from export.data.folder import ImageFolderDataset, scan_image_folder
from export.data.images import IMAGENET_MEAN, IMAGENET_STD


def _noise_image(rng: np.random.Generator, w: int, h: int, mode: str = "RGB") -> Image.Image:
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    rng = np.random.default_rng()
    root = tmp_path / "pets"
    for name in ("dog", "cat", "bird"):
        (root / name).mkdir(parents=True)
    _noise_image(rng, 40, 30).save(root / "dog" / "a.png")
    _noise_image(rng, 30, 50).save(root / "dog" / "b.JPG", quality=90)
    _noise_image(rng, 64, 64, "L").save(root / "cat" / "grey.png")
    rgba = Image.fromarray(rng.integers(0, 256, (20, 33, 4), dtype=np.uint8), "RGBA")
    rgba.save(root / "cat" / "alpha.png")
    palette = _noise_image(rng, 25, 25).convert("P", palette=Image.Palette.ADAPTIVE)
    palette.info["transparency"] = 0
    palette.save(root / "cat" / "anim.gif", transparency=0)
    (root / "bird" / "nested").mkdir()
    _noise_image(rng, 45, 35).save(root / "bird" / "nested" / "c.bmp")
    _noise_image(rng, 35, 45).save(root / "bird" / "d.webp")
    (root / "bird" / "notes.txt").write_text("not an image")
    _noise_image(rng, 8, 8).save(root / "bird" / ".hidden.png")
    (root / ".thumbs").mkdir()
    _noise_image(rng, 8, 8).save(root / ".thumbs" / "x.png")
    return root


def test_classes_sorted_files_found(tree: Path) -> None:
    classes, samples = scan_image_folder(tree)
    assert classes == ["bird", "cat", "dog"]
    names = {(p.name, label) for p, label in samples}
    assert names == {
        ("c.bmp", 0), ("d.webp", 0),
        ("alpha.png", 1), ("anim.gif", 1), ("grey.png", 1),
        ("a.png", 2), ("b.JPG", 2),
    }  # fmt: skip


@pytest.mark.parametrize("channels", [1, 3])
def test_every_format_decodes_to_the_right_shape(tree: Path, channels: int) -> None:
    mean = IMAGENET_MEAN if channels == 3 else (0.5,)
    std = IMAGENET_STD if channels == 3 else (0.5,)
    ds = ImageFolderDataset(tree, size=24, channels=channels, mean=mean, std=std, resize_size=28)
    assert len(ds) == 7 and ds.classes == ["bird", "cat", "dog"]
    for i in range(len(ds)):
        x, label = ds[i]
        assert x.shape == (channels, 24, 24) and x.dtype == torch.float32
        assert torch.isfinite(x).all() and label == ds.samples[i][1]
    batch, labels = next(iter(torch.utils.data.DataLoader(ds, batch_size=7)))
    assert batch.shape == (7, channels, 24, 24) and labels.tolist() == [0, 0, 1, 1, 1, 2, 2]
    spec = ds.preprocessing.to_dict()
    assert spec["resize"] == "shorter_side" and spec["resize_size"] == 28
    assert spec["crop"] == "center" and spec["color_mode"] == ("RGB" if channels == 3 else "L")


def test_shorter_side_resize_then_center_crop(tmp_path: Path) -> None:
    # 160×40: red | green | blue in 40/80/40 px strips. Shorter side 40 -> 20 gives 80×20; the
    # 20×20 center crop is original columns 60..100, deep inside the green strip.
    rgb = np.zeros((40, 160, 3), np.uint8)
    rgb[:, :40, 0] = 255
    rgb[:, 40:120, 1] = 255
    rgb[:, 120:, 2] = 255
    (tmp_path / "c" / "strip").mkdir(parents=True)
    Image.fromarray(rgb).save(tmp_path / "c" / "strip" / "s.png")
    ds = ImageFolderDataset(tmp_path / "c", size=20, mean=0.0, std=1.0)
    raw = ds.load(0)
    assert raw.shape == (3, 20, 20) and raw.dtype == torch.uint8
    assert raw[1].min() >= 250 and raw[0].max() <= 5 and raw[2].max() <= 5
    x, _ = ds[0]
    np.testing.assert_allclose(x[1].numpy(), 1.0, atol=0.02)
    # The strips are really there: random (augmenting) crops of the same 80×20 image reach them.
    aug = ImageFolderDataset(tmp_path / "c", size=20, augment=True)
    crops = [aug.load(0) for _ in range(40)]
    assert any(c[0].max() > 200 for c in crops) and any(c[2].max() > 200 for c in crops)
    # Normalisation uses the given per-channel statistics.
    ds2 = ImageFolderDataset(tmp_path / "c", size=20, mean=(0.1, 0.2, 0.3), std=(0.5, 0.5, 0.5))
    x2, _ = ds2[0]
    torch.testing.assert_close(x2, (x - torch.tensor([0.1, 0.2, 0.3]).view(3, 1, 1)) / 0.5)


def test_augmentation_random_crop_and_flip(tmp_path: Path) -> None:
    rng = np.random.default_rng()
    (tmp_path / "r" / "a").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (40, 80, 3), dtype=np.uint8)).save(
        tmp_path / "r" / "a" / "x.png"
    )
    plain = ImageFolderDataset(tmp_path / "r", size=20, resize_size=20)
    aug = ImageFolderDataset(tmp_path / "r", size=20, resize_size=20, augment=True)
    outs = [aug[0][0] for _ in range(12)]
    assert all(o.shape == (3, 20, 20) for o in outs)
    assert any(not torch.equal(o, plain[0][0]) for o in outs)


def test_empty_and_broken_folders(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        ImageFolderDataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no class directories"):
        ImageFolderDataset(tmp_path / "empty")
    (tmp_path / "noimg" / "cls").mkdir(parents=True)
    (tmp_path / "noimg" / "cls" / "readme.txt").write_text("x")
    with pytest.raises(DatasetError, match="class 'cls' has no images"):
        ImageFolderDataset(tmp_path / "noimg")
    (tmp_path / "bad" / "cls").mkdir(parents=True)
    (tmp_path / "bad" / "cls" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    ds = ImageFolderDataset(tmp_path / "bad", size=8)
    with pytest.raises(DatasetError, match=r"broken\.png: cannot decode image"):
        ds[0]
    with pytest.raises(ValueError, match="smaller than the crop"):
        ImageFolderDataset(tmp_path / "bad", size=8, resize_size=4)

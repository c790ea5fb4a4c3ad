"""export.train: real training on small real Fashion-MNIST subsets, checkpoints, resume, errors.

Every run is tiny (a few hundred images, one or two epochs, LeNet-5) so the file runs in well
under a minute on two shared cores; the full-size runs are build-defaults' and zoo_table's job.
"""

from __future__ import annotations

import gzip
import itertools
import math
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import export.train_data as train_data
from export.checkpoint import build_model, load_checkpoint, save_checkpoint
from export.data.idx import FASHION_MNIST_CLASSES, fashion_mnist_root
from export.errors import ExportError
from export.evaluation import AUX_WEIGHT, balanced_accuracy, evaluate, is_better
from export.evaluation import loss_and_logits as _loss
from export.models import get_model
from export.models.googlenet import GoogLeNetOutputs
from export.onnx_export import export_to_repository, source_from_checkpoint
from export.train import TrainConfig, lr_at, train

torch.set_num_threads(2)

if not fashion_mnist_root().is_dir():
    pytest.skip("Fashion-MNIST is not installed", allow_module_level=True)


def config(tmp_path: Path, **overrides: Any) -> TrainConfig:
    base: dict[str, Any] = {
        "arch": "lenet5", "dataset": "fashion-mnist", "epochs": 1, "limit": 512,
        "eval_limit": 256, "batch_size": 64, "lr": 5e-3, "out": tmp_path / "runs",
        "progress": False, "device": "cpu",
    }  # fmt: skip
    base.update(overrides)
    return TrainConfig(**base)


def quiet(_: str) -> None:
    pass


def test_a_few_steps_on_real_images_reduce_the_loss() -> None:
    """Plain optimisation on 256 real images: the loss must fall well below chance level."""
    from export.data.idx import load_fashion_mnist
    from export.data.images import ArrayImageDataset

    images, labels = load_fashion_mnist("train")
    ds = ArrayImageDataset(images[:256], labels[:256], size=32)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    y = torch.as_tensor(labels[:256])
    torch.manual_seed(0)
    model = get_model("lenet5")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    with torch.no_grad():
        before = F.cross_entropy(model(x), y).item()
    for _ in range(30):
        loss, _ = _loss(model(x), y, 0.0)
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
    with torch.no_grad():
        after = F.cross_entropy(model(x), y).item()
    assert before == pytest.approx(math.log(10), abs=0.15)  # an untrained net is at chance
    assert after < 0.6 * before


def test_train_checkpoints_metrics_and_curves(tmp_path: Path) -> None:
    result = train(config(tmp_path, epochs=2), log=quiet)
    assert result.run_dir == tmp_path / "runs" / "lenet5-fashion-mnist"
    assert [h["epoch"] for h in result.history] == [1.0, 2.0]
    last = result.history[-1]
    assert last["val_loss"] < math.log(10) - 0.5  # clearly learned something on 512 images
    assert last["val_top1"] > 0.4 and last["val_top5"] >= last["val_top1"]
    assert result.best_top1 == max(h["val_top1"] for h in result.history)
    assert result.curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    ckpt = torch.load(result.last, weights_only=True)  # plain data: loads without pickled code
    assert ckpt["arch"] == "lenet5"
    assert ckpt["model_kwargs"] == {"num_classes": 10, "in_channels": 1}
    assert ckpt["dataset"] == "fashion-mnist"
    assert ckpt["classes"] == list(FASHION_MNIST_CLASSES)
    assert ckpt["preprocessing"] == {
        "kind": "image", "size": 32, "channels": 1, "color": "grayscale", "mean": [0.286],
        "std": [0.353], "resize_size": None, "interpolation": "bilinear",
    }  # fmt: skip
    assert ckpt["epoch"] == 2 and ckpt["step"] == 2 * (512 // 64)
    assert ckpt["seed"] == 0 and ckpt["torch_version"] == str(torch.__version__)
    assert "state" in ckpt["optimizer"] and len(ckpt["history"]) == 2
    model = build_model(load_checkpoint(result.best, expected_arch="lenet5"))
    assert not model.training


def test_balanced_accuracy_is_mean_per_class_recall() -> None:
    rng = np.random.default_rng()
    target = torch.as_tensor(rng.integers(0, 4, 300))
    predicted = torch.where(torch.rand(300) < 0.7, target, torch.as_tensor(rng.integers(0, 4, 300)))
    recalls = [
        float((predicted[target == c] == c).float().mean()) for c in range(4) if (target == c).any()
    ]
    assert balanced_accuracy(predicted, target, 5) == pytest.approx(np.mean(recalls))
    # 90 of class 0 all right, 10 of class 1 all wrong: top-1 0.9 but balanced accuracy 0.5.
    target = torch.tensor([0] * 90 + [1] * 10)
    assert balanced_accuracy(torch.zeros(100, dtype=torch.int64), target, 2) == 0.5
    assert is_better("val_balanced_accuracy", 0.6, 0.5) and is_better("val_loss", 0.4, 0.5)
    assert not is_better("val_top1", 0.5, 0.5) and is_better("val_top1", 0.1, None)


def test_evaluate_reports_every_metric() -> None:
    model = get_model("lenet5").eval()
    x, y = torch.randn(40, 1, 32, 32), torch.as_tensor(np.random.default_rng().integers(0, 10, 40))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    metrics = evaluate(model, loader, torch.device("cpu"), 10)
    with torch.no_grad():
        predicted = model(x).argmax(1)
    assert metrics["val_top1"] == pytest.approx(float((predicted == y).float().mean()))
    assert metrics["val_balanced_accuracy"] == pytest.approx(balanced_accuracy(predicted, y, 10))
    assert metrics["val_top5"] >= metrics["val_top1"] and metrics["val_loss"] > 0


def test_the_data_names_the_metric_that_picks_best(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = train_data.load_training_data

    def by_loss(*args: Any, **kwargs: Any) -> train_data.TrainingData:
        data = real(*args, **kwargs)
        data.select_metric = "val_loss"
        return data

    monkeypatch.setattr("export.train.load_training_data", by_loss)
    result = train(config(tmp_path, epochs=3, limit=256), log=quiet)
    losses = [h["val_loss"] for h in result.history]
    assert result.best_metric == "val_loss" and result.best_value == min(losses)
    best = load_checkpoint(result.best)
    assert best["epoch"] == 1 + int(np.argmin(losses)) and best["best_metric"] == "val_loss"


def test_same_seed_same_weights(tmp_path: Path) -> None:
    a = train(config(tmp_path / "a", limit=256), log=quiet)
    b = train(config(tmp_path / "b", limit=256), log=quiet)
    c = train(config(tmp_path / "c", limit=256, seed=1), log=quiet)
    sa, sb, sc = (load_checkpoint(r.last)["state_dict"] for r in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_resume_continues_from_the_checkpoint(tmp_path: Path) -> None:
    first = train(config(tmp_path, epochs=1), log=quiet)
    saved = load_checkpoint(first.last)
    messages: list[str] = []
    second = train(config(tmp_path, epochs=2, resume=first.last), log=messages.append)
    assert any("resuming lenet5" in m and "epoch 1/2" in m for m in messages)
    ckpt = load_checkpoint(second.last)
    assert ckpt["epoch"] == 2 and ckpt["step"] == 2 * saved["step"]
    assert ckpt["history"][0] == saved["history"][0]  # epoch 1 kept, epoch 2 appended
    assert len(ckpt["history"]) == 2
    # AdamW's per-parameter step count went on from the checkpoint's, not from zero.
    steps = {float(s["step"]) for s in ckpt["optimizer"]["state"].values()}
    assert steps == {float(ckpt["step"])}
    changed = [k for k in ckpt["state_dict"] if not torch.equal(ckpt["state_dict"][k],
               saved["state_dict"][k])]  # fmt: skip
    assert changed
    # Resuming a finished run trains nothing.
    again: list[str] = []
    train(config(tmp_path, epochs=2, resume=second.last), log=again.append)
    assert any("nothing to train" in m for m in again)
    assert load_checkpoint(second.last)["epoch"] == 2


def test_resume_with_the_wrong_architecture(tmp_path: Path) -> None:
    first = train(config(tmp_path, limit=128), log=quiet)
    with pytest.raises(ExportError, match="is a lenet5 checkpoint, not resnet_small") as info:
        train(config(tmp_path, arch="resnet_small", resume=first.last), log=quiet)
    assert "\n" not in str(info.value)


def test_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ExportError, match="cannot load checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(ExportError, match="not a convserve checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    first = train(config(tmp_path, limit=128), log=quiet)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(first.last.read_bytes()[:2000])
    with pytest.raises(ExportError, match="cannot load checkpoint"):
        load_checkpoint(truncated)
    ckpt = load_checkpoint(first.last)
    ckpt["model_kwargs"] = {"num_classes": 7, "in_channels": 1}
    save_checkpoint(ckpt, tmp_path / "mismatch.pt")
    with pytest.raises(ExportError, match="weights do not fit lenet5"):
        build_model(load_checkpoint(tmp_path / "mismatch.pt"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"arch": "lenet6"}, "unknown architecture 'lenet6'; known: .*lenet5"),
        ({"arch": "speech_cnn"}, "speech_cnn is a speech model: train it with --dataset speech"),
        ({"dataset": "speech"}, "lenet5 is an image model"),
        ({"dataset": "/no/such/dir"}, "neither fashion-mnist, speech, nor an existing"),
        ({"epochs": 0}, "--epochs must be at least 1"),
        ({"limit": 0}, "--limit must be at least 1"),
    ],
)
def test_bad_settings_are_one_line_errors(
    tmp_path: Path, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ExportError, match=message) as info:
        train(config(tmp_path, **overrides), log=quiet)
    assert "\n" not in str(info.value)


def test_unwritable_output_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match=r"cannot write to output directory .*--out"):
        train(config(tmp_path, out=tmp_path / "file" / "runs", limit=64), log=quiet)


def test_missing_and_corrupt_idx_files(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"Fashion-MNIST not found at .*apt-get install"):
        train(config(tmp_path, data_root=tmp_path / "nowhere"), log=quiet)
    root = tmp_path / "fmnist"
    shutil.copytree(fashion_mnist_root(), root)
    images = root / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(images.read_bytes())
    images.write_bytes(gzip.compress(raw[:-1000], compresslevel=1))  # a truncated download
    with pytest.raises(ExportError, match="truncated IDX data") as info:
        train(config(tmp_path, data_root=root), log=quiet)
    assert "\n" not in str(info.value)
    images.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(ExportError, match="corrupt or truncated gzip"):
        train(config(tmp_path, data_root=root), log=quiet)


def test_googlenet_trains_with_its_auxiliary_heads(tmp_path: Path) -> None:
    logits, aux2, aux1 = (torch.randn(4, 10) for _ in range(3))
    y = torch.tensor([0, 1, 2, 3])
    loss, main = _loss(GoogLeNetOutputs(logits, aux2, aux1), y, 0.0)
    expected = F.cross_entropy(logits, y) + AUX_WEIGHT * (
        F.cross_entropy(aux1, y) + F.cross_entropy(aux2, y)
    )
    assert torch.allclose(loss, expected) and main is logits
    result = train(
        config(tmp_path, arch="googlenet_small", limit=64, eval_limit=32, batch_size=32),
        log=quiet,
    )
    ckpt = load_checkpoint(result.last)
    assert ckpt["model_kwargs"]["aux_logits"] is True
    assert any(k.startswith("aux1.") for k in ckpt["state_dict"])
    exported = export_to_repository(source_from_checkpoint(result.last), tmp_path / "repo", "g")
    assert exported.max_abs_diff < 1e-4


# export.data.folder hands torch a read-only PIL buffer (reported to its owner); harmless here.
@pytest.mark.filterwarnings("ignore:The given NumPy array is not writable")
def test_image_folder_dataset(tmp_path: Path) -> None:
    from PIL import Image

    from export.data.idx import load_fashion_mnist

    images, labels = load_fashion_mnist("test")
    root = tmp_path / "folder"
    for cls, name in ((0, "tshirt"), (1, "trouser")):
        (root / name).mkdir(parents=True)
        for i, idx in enumerate(np.flatnonzero(labels == cls)[:20]):
            Image.fromarray(images[idx]).save(root / name / f"{i}.png")
    result = train(config(tmp_path, dataset=str(root), limit=None, eval_limit=None, batch_size=8))
    ckpt = load_checkpoint(result.last)
    assert ckpt["classes"] == ["trouser", "tshirt"]
    assert ckpt["model_kwargs"] == {"num_classes": 2, "in_channels": 1}
    assert ckpt["preprocessing"]["size"] == 32 and ckpt["dataset"] == str(root)
    assert result.run_dir.name == "lenet5-folder"


def test_speech_training_wiring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The speech path with a synthetic corpus (tones = speech, noise = not), so it stays fast;
    the real corpus is exercised by build-defaults."""
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000

    def fake_corpus(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n) % 2
        x = 0.05 * rng.standard_normal((n, 16000))
        x[y == 1] += 0.3 * np.sin(2 * np.pi * rng.uniform(200, 400, (int(y.sum()), 1)) * t)
        return x.astype(np.float32), y.astype(np.int64)

    def build(cache_dir: Any = None, **kwargs: Any) -> SimpleNamespace:
        (xt, yt), (xv, yv) = fake_corpus(64), fake_corpus(32)
        return SimpleNamespace(x_train=xt, y_train=yt, x_val=xv, y_val=yv)

    import export.data.speech as speech

    monkeypatch.setattr(speech, "build_speech_corpus", build)
    result = train(config(tmp_path, arch="speech_cnn", dataset="speech", limit=None,
                          eval_limit=None, batch_size=16, epochs=2), log=quiet)  # fmt: skip
    ckpt = load_checkpoint(result.last)
    assert ckpt["classes"] == ["no_speech", "speech"]
    assert ckpt["preprocessing"]["kind"] == "audio"
    assert ckpt["preprocessing"]["window_samples"] == 16000
    assert "val_top5" not in ckpt["history"][-1]  # 2 classes: no top-5
    exported = export_to_repository(source_from_checkpoint(result.last), tmp_path / "r", "s")
    assert (
        'key: "task" value: { string_value: "speech_detection" }'
        in (tmp_path / "r" / "s" / "config.pbtxt").read_text()
    )
    assert exported.max_abs_diff < 1e-4


def test_waveform_augmentation_keeps_shape_and_changes_samples() -> None:
    x = np.random.default_rng(1).standard_normal((4, 1000)).astype(np.float32)
    ds = train_data.WaveformDataset(x, np.zeros(4, dtype=np.int64), augment=True)
    torch.manual_seed(0)
    out, label = ds[0]
    assert out.shape == (1000,) and label == 0
    assert not torch.allclose(out, torch.from_numpy(x[0]))
    plain = train_data.WaveformDataset(x, np.zeros(4, dtype=np.int64))
    assert torch.equal(plain[0][0], torch.from_numpy(x[0]))


def test_learning_rate_schedule() -> None:
    total, peak = 1000, 1e-3
    lrs = [lr_at(s, total, peak) for s in range(total)]
    top = int(np.argmax(lrs))
    assert lrs[0] < peak / 10 and max(lrs) == pytest.approx(peak)
    assert all(a <= b for a, b in itertools.pairwise(lrs[: top + 1]))  # warm-up
    assert all(a >= b for a, b in itertools.pairwise(lrs[top:]))  # cosine down
    assert lrs[-1] == pytest.approx(peak * 0.01, rel=0.05)


def test_subset_indices_are_seeded_and_distinct() -> None:
    a = train_data.subset_indices(1000, 100, seed=0)
    assert len(set(a.tolist())) == 100 and a.max() < 1000
    assert np.array_equal(a, train_data.subset_indices(1000, 100, seed=0))
    assert not np.array_equal(a, train_data.subset_indices(1000, 100, seed=1))
    assert len(train_data.subset_indices(10, None, seed=0)) == 10

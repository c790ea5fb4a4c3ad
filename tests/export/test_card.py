"""export.card: a training run becomes weights/<name>/ (safetensors + card), which exports with
parity, refuses damaged weights, and names the command that reproduces it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from export.card import (
    CARD_JSON,
    CARD_MD,
    CURVES_FILENAME,
    WEIGHTS_FILENAME,
    load_shipped,
    read_card,
    retrain_config,
    ship,
    train_command,
)
from export.checkpoint import load_checkpoint
from export.cli import main
from export.data.idx import fashion_mnist_root
from export.errors import ExportError
from export.onnx_export import export_to_repository
from export.train import TrainConfig, train

torch.set_num_threads(2)

if not fashion_mnist_root().is_dir():
    pytest.skip("Fashion-MNIST is not installed", allow_module_level=True)


def quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    cfg = TrainConfig(
        arch="lenet5", epochs=2, limit=256, eval_limit=128, batch_size=64, lr=5e-3,
        label_smoothing=0.05, out=out, progress=False, device="cpu", seed=3,
    )  # fmt: skip
    return train(cfg, log=quiet).last


def test_ship_writes_weights_card_and_curves(run: Path, tmp_path: Path) -> None:
    extra = tmp_path / "extra.json"
    extra.write_text(
        json.dumps(
            {
                "metrics": {"served_test_top1": 0.5, "per_source": {"a": {"recall": 0.9}}},
                "limitations": ["a made-up limitation"],
            }
        )
    )
    folder = ship(run, "tiny", tmp_path / "weights", extra)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [WEIGHTS_FILENAME, CARD_JSON, CARD_MD, CURVES_FILENAME]
    )
    ckpt = load_checkpoint(run)
    tensors = load_file(str(folder / WEIGHTS_FILENAME))
    assert tensors.keys() == ckpt["state_dict"].keys()
    assert all(torch.equal(tensors[k], ckpt["state_dict"][k]) for k in tensors)
    card = read_card(folder)
    assert card["arch"] == "lenet5" and card["epochs"] == 2 and card["seed"] == 3
    assert card["metrics"]["val_top1"] == ckpt["history"][-1]["val_top1"]
    assert card["metrics"]["served_test_top1"] == 0.5
    assert "a made-up limitation" in card["limitations"]
    assert card["data"]["sources"][0]["licence"] == "MIT"
    assert card["command"].startswith("convserve train lenet5 --dataset fashion-mnist --epochs 2")
    assert "--label-smoothing 0.05" in card["command"] and "--seed 3" in card["command"]
    assert card["training"]["torch_threads"] == ckpt["hardware"]["torch_threads"]
    text = (folder / CARD_MD).read_text()
    assert card["command"] in text and card["weights"]["sha256"] in text
    assert "| a | 0.9000 |" in text  # a nested metrics table
    assert (folder / CURVES_FILENAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_shipping_twice_gives_the_same_file(run: Path, tmp_path: Path) -> None:
    a = ship(run, "a", tmp_path / "weights") / WEIGHTS_FILENAME
    b = ship(run, "b", tmp_path / "weights") / WEIGHTS_FILENAME
    assert a.read_bytes() == b.read_bytes()  # safetensors' header order is made canonical
    assert load_file(str(a)).keys() == load_checkpoint(run)["state_dict"].keys()


def test_shipped_weights_export_with_parity(run: Path, tmp_path: Path) -> None:
    folder = ship(run, "tiny", tmp_path / "weights")
    card, source = load_shipped(folder)
    x = torch.randn(3, 1, 32, 32)
    reference = load_checkpoint(run)
    from export.checkpoint import build_model

    with torch.no_grad():
        assert torch.equal(source.model(x), build_model(reference)(x))
    exported = export_to_repository(source, tmp_path / "repo", "tiny")
    assert exported.max_abs_diff <= 1e-4
    labels = (tmp_path / "repo" / "tiny" / "labels.txt").read_text().splitlines()
    assert labels == card["classes"]


def test_damaged_or_foreign_weights_are_refused(run: Path, tmp_path: Path) -> None:
    folder = ship(run, "tiny", tmp_path / "weights")
    weights = folder / WEIGHTS_FILENAME
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ExportError, match="damaged or was replaced") as info:
        load_shipped(folder)
    assert "\n" not in str(info.value)
    weights.unlink()
    with pytest.raises(ExportError, match="is missing"):
        load_shipped(folder)
    (folder / CARD_JSON).write_text("{}")
    with pytest.raises(ExportError, match="not a convserve model card"):
        load_shipped(folder)


def test_retrain_config_reproduces_the_recipe(run: Path, tmp_path: Path) -> None:
    card = read_card(ship(run, "tiny", tmp_path / "weights"))
    cfg = retrain_config(card, tmp_path / "again", progress=False)
    assert (cfg.arch, cfg.epochs, cfg.limit, cfg.seed, cfg.lr) == ("lenet5", 2, 256, 3, 5e-3)
    again = train(cfg, log=quiet)
    a, b = load_checkpoint(run)["state_dict"], load_checkpoint(again.last)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # same recipe, same machine: same weights


def test_train_command_leaves_out_defaults() -> None:
    recipe: dict[str, Any] = {"arch": "resnet20_small", "dataset": "fashion-mnist", "epochs": 10,
                              "lr": 0.1, "optimizer": "sgd", "limit": None, "seed": 0}  # fmt: skip
    assert train_command(recipe, 1) == (
        "convserve train resnet20_small --dataset fashion-mnist --epochs 10 --lr 0.1 "
        "--optimizer sgd --seed 0 --threads 1"
    )


def test_ship_command_line(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["ship", str(run), "--name", "cli", "--weights-dir", str(tmp_path)])
    assert code == 0 and "shipped" in capsys.readouterr().out
    assert np.isclose(read_card(tmp_path / "cli")["metrics"]["val_loss"],
                      load_checkpoint(run)["history"][-1]["val_loss"])  # fmt: skip
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    code = main(["ship", str(run), "--name", "x", "--weights-dir", str(tmp_path),
                 "--metrics", str(bad)])  # fmt: skip
    assert code == 1 and "must hold a JSON object" in capsys.readouterr().err


def test_an_earlier_epoch_ships_as_best(run: Path, tmp_path: Path) -> None:
    from export.checkpoint import save_checkpoint

    ckpt = load_checkpoint(run)
    ckpt.update(epoch=1, history=ckpt["history"][:1], best_metric="val_balanced_accuracy")
    save_checkpoint(ckpt, tmp_path / "best.pt")
    card = read_card(ship(tmp_path / "best.pt", "early", tmp_path / "weights"))
    assert card["shipped_checkpoint"] == "best"
    assert (
        card["shipped_epoch"] == "epoch 1 of 2, the best by val_balanced_accuracy on the test split"
    )
    assert read_card(ship(run, "final", tmp_path / "weights"))["shipped_checkpoint"] == "last"

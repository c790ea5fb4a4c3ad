"""export.cli: the train / export / zoo / build-defaults subcommands, end to end.

Errors must be exactly one line on stderr (``convserve CMD: error: ...``) with a non-zero exit;
a traceback is a bug.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from export.cli import add_subcommands, main
from export.data.idx import FASHION_MNIST_CLASSES, fashion_mnist_root
from export.models import list_models
from export.repository import versions

torch.set_num_threads(2)
ROOT = Path(__file__).resolve().parents[2]
needs_fashion = pytest.mark.skipif(
    not fashion_mnist_root().is_dir(), reason="Fashion-MNIST is not installed"
)


def one_line_error(capsys: pytest.CaptureFixture[str], command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith(f"convserve {command}: error: "), err
    return err


def test_zoo_lists_every_architecture(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["zoo"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["architecture", "family", "task", "parameters"]
    for name in list_models():
        assert any(line.startswith(name + " ") for line in lines), name
    lenet = next(line for line in lines if line.startswith("lenet5 "))
    assert "61,706" in lenet and "1×32×32" in lenet
    assert main(["zoo", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == set(list_models())
    speech = next(r for r in rows if r["name"] == "speech_cnn")
    assert speech["input_shape"] == [16000] and speech["task"] == "speech_detection"


def test_mounts_on_a_foreign_parser(capsys: pytest.CaptureFixture[str]) -> None:
    """The way convserve/cli.py mounts us next to the serving commands."""
    parser = argparse.ArgumentParser(prog="convserve")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve")
    add_subcommands(sub)
    args = parser.parse_args(["zoo"])
    assert args.func(args) == 0
    assert "mobilenet_v2" in capsys.readouterr().out
    for command in ("train", "export", "build-defaults"):
        with pytest.raises(SystemExit) as info:
            parser.parse_args([command, "--help"])
        assert info.value.code == 0
        assert "usage: convserve " + command in capsys.readouterr().out


def test_top_level_convserve_command_has_our_subcommands(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cli = pytest.importorskip("convserve.cli")
    assert cli.main(["zoo"]) == 0
    assert "resnet_small" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "lenet6"], "unknown architecture 'lenet6'; known: alexnet"),
        (["train", "lenet5", "--dataset", "/no/such"], "neither fashion-mnist, speech"),
        (["train", "speech_cnn"], "speech_cnn is a speech model"),
        (["export", "nope"], "unknown architecture 'nope'"),
        (["export", "missing.pt"], "checkpoint missing.pt does not exist"),
        (["export", "resnet18", "--pretrained"], "no pretrained weights for resnet18"),
        (["export", "lenet5", "--name", "bad name"], "invalid model name 'bad name'"),
        (["export", "lenet5", "--max-batch-size", "0"], "--max-batch-size must be at least 1"),
        (["build-defaults", "--only", "nope"], "unknown default model(s) nope"),
    ],
)
def test_errors_are_one_line(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 1
    assert message in one_line_error(capsys, argv[0])
    assert list(tmp_path.iterdir()) == []  # nothing written on failure


def test_unwritable_repository(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("x")
    assert main(["export", "lenet5", "--repository", str(tmp_path / "file" / "repo")]) == 1
    assert "cannot write to model repository" in one_line_error(capsys, "export")


@needs_fashion
def test_corrupt_idx_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "fmnist"
    root.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):  # fmt: skip
        (root / name).write_bytes(b"\x00\x00\x08\x03" + b"\x00\x00\x00\x05" * 3 + b"short")
    argv = ["train", "lenet5", "--data-root", str(root), "--out", str(tmp_path / "runs")]
    assert main(argv) == 1
    assert "truncated IDX data" in one_line_error(capsys, "train")


def test_export_random_weights_twice_adds_a_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    assert main(["export", "resnet_small", "--repository", str(repo), "--threads", "2"]) == 0
    out = capsys.readouterr().out
    assert "random weights (seed 0)" in out and "version 1" in out
    assert "parity batch 1: max abs diff" in out and "parity batch 7: max abs diff" in out
    argv = ["export", "resnet_small", "--repository", str(repo), "--fp16", "--opset", "18"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "version 2, opset 18, fp16" in out
    assert versions(repo / "resnet_small") == [1, 2]


@needs_fashion
def test_train_then_export_the_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs, repo = tmp_path / "runs", tmp_path / "repo"
    argv = ["train", "lenet5", "--limit", "256", "--eval-limit", "256", "--epochs", "1",
            "--batch-size", "64", "--out", str(runs), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "epoch 1/1: train loss" in out and "top-5" in out
    ckpt = runs / "lenet5-fashion-mnist" / "last.pt"
    assert ckpt.is_file() and (runs / "lenet5-fashion-mnist" / "curves.png").is_file()
    assert main(["export", str(ckpt), "--repository", str(repo)]) == 0
    out = capsys.readouterr().out
    assert f"checkpoint {ckpt} (epoch 1, fashion-mnist" in out
    model_dir = repo / "lenet5_fashion"  # default name: architecture + dataset
    assert (model_dir / "1" / "model.onnx").is_file()
    assert (model_dir / "labels.txt").read_text().splitlines() == list(FASHION_MNIST_CLASSES)
    # Resuming into another architecture is refused, in one line.
    argv = ["train", "resnet_small", "--resume", str(ckpt), "--out", str(runs)]
    assert main(argv) == 1
    assert "is a lenet5 checkpoint, not resnet_small" in one_line_error(capsys, "train")
    assert main(["export", str(ckpt), "--pretrained", "--repository", str(repo)]) == 1
    assert "--pretrained applies to an architecture" in one_line_error(capsys, "export")


def test_build_defaults_only_mobilenet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "repo"
    argv = ["build-defaults", "--repository", str(repo), "--cache-dir", str(tmp_path / "c"),
            "--only", "mobilenet_v2", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "mobilenet_v2     built" in out
    assert main(argv) == 0
    assert "mobilenet_v2     skipped" in capsys.readouterr().out
    assert versions(repo / "mobilenet_v2") == [1]


def test_runs_as_a_module(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "export.cli", "train", "nope"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("convserve train: error: unknown architecture 'nope'")
    assert proc.stderr.strip().count("\n") == 0

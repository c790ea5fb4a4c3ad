"""Reproduce docs/zoo.md: every CNN family trained on Fashion-MNIST, scored through ONNX Runtime.

For each architecture: ``convserve train ARCH --dataset fashion-mnist`` (a subprocess, so the
command itself is what is measured), export of the final checkpoint with the parity check, then
top-1 of the exported ``model.onnx`` in ONNX Runtime (CPU) on the full 10,000-image test split,
preprocessed exactly as the serving config says (resize 28 → 32, mean/std). ``speech_cnn`` is
trained on the speech corpus and scored on its validation split (accuracy, speech precision /
recall, accuracy per kind of window).

    .venv/bin/python scripts/zoo_table.py                        # full run (see docs/zoo.md)
    .venv/bin/python scripts/zoo_table.py --epochs 1 --limit 10000 --speech-epochs 1  # smoke run

Checkpoints, the model repository and logs go to ``--work-dir`` (default .cache/convserve/zoo).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from export.checkpoint import load_checkpoint  # noqa: E402
from export.models.zoo import count_parameters  # noqa: E402
from export.onnx_export import (  # noqa: E402
    export_to_repository,
    ort_session,
    source_from_checkpoint,
)

FAMILIES = (
    "lenet5",
    "resnet_small",
    "alexnet_small",
    "vgg_small",
    "googlenet_small",
    "mobilenet_v2_small",
)


def run_train(arch: str, dataset: str, epochs: int, limit: int | None, work: Path) -> float:
    """``convserve train`` in a subprocess; returns its wall time in seconds."""
    cmd = [sys.executable, "-m", "export.cli", "train", arch, "--dataset", dataset,
           "--epochs", str(epochs), "--out", str(work / "runs"), "--no-progress"]  # fmt: skip
    if limit:
        cmd += ["--limit", str(limit)]
    log = work / "logs" / f"{arch}-{dataset}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print("$ " + " ".join(cmd[1:]), flush=True)
    start = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, check=False)
    seconds = time.perf_counter() - start
    print(log.read_text().strip().splitlines()[-4] if proc.returncode == 0 else log.read_text())
    if proc.returncode != 0:
        raise SystemExit(f"training {arch} failed (exit {proc.returncode}); log: {log}")
    return seconds


Array = np.ndarray[Any, Any]


def onnx_predict(model_path: Path, x: Array, input_name: str) -> Array:
    session = ort_session(model_path)
    preds = [
        session.run(None, {input_name: x[i : i + 256]})[0].argmax(axis=1)
        for i in range(0, len(x), 256)
    ]
    return np.concatenate(preds)


def exported_params(arch: str, kwargs: dict[str, Any]) -> int:
    """Parameters of the exported (eval) graph: GoogLeNet's auxiliary heads train, never export."""
    return count_parameters(arch, **{k: v for k, v in kwargs.items() if k != "aux_logits"})


def fashion_test_tensors() -> tuple[Array, Array]:
    from export.data.idx import load_fashion_mnist
    from export.data.images import ArrayImageDataset

    images, labels = load_fashion_mnist("test")
    ds = ArrayImageDataset(images, labels, size=32, augment=False)
    x = torch.stack([ds[i][0] for i in range(len(ds))]).numpy()
    return x, labels


def image_rows(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    x_test, y_test = fashion_test_tensors()
    rows = []
    for arch in args.archs:
        seconds = run_train(arch, "fashion-mnist", args.epochs, args.limit, work)
        last = work / "runs" / f"{arch}-fashion-mnist" / "last.pt"
        source = source_from_checkpoint(last)
        exported = export_to_repository(source, work / "repository", arch)
        acc = float((onnx_predict(exported.model_path, x_test, "input") == y_test).mean())
        history = load_checkpoint(last)["history"]
        rows.append({
            "arch": arch, "params": exported_params(arch, load_checkpoint(last)["model_kwargs"]),
            "epochs": args.epochs, "train_samples": args.limit or 60000, "seconds": seconds,
            "torch_top1": history[-1]["val_top1"], "onnx_top1": acc,
            "parity": exported.max_abs_diff,
        })  # fmt: skip
        print(f"{arch}: ONNX test top-1 {acc:.4f} ({seconds:.0f}s)", flush=True)
    return rows


def speech_figures(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from export.data.speech import KIND_NAMES, build_speech_corpus

    seconds = run_train("speech_cnn", "speech", args.speech_epochs, None, work)
    last = work / "runs" / "speech_cnn-speech" / "last.pt"
    source = source_from_checkpoint(last)
    exported = export_to_repository(source, work / "repository", "speech_cnn")
    corpus = build_speech_corpus(seed=0, progress=False)
    pred = onnx_predict(exported.model_path, corpus.x_val, "audio")
    y = corpus.y_val
    tp = int(((pred == 1) & (y == 1)).sum())
    per_kind = {
        KIND_NAMES[k]: float((pred[corpus.kind_val == k] == y[corpus.kind_val == k]).mean())
        for k in np.unique(corpus.kind_val)
    }
    return {
        "seconds": seconds, "epochs": args.speech_epochs, "n_val": len(y),
        "params": sum(p.numel() for p in source.model.parameters()),
        "accuracy": float((pred == y).mean()), "precision": tp / max(int((pred == 1).sum()), 1),
        "recall": tp / max(int((y == 1).sum()), 1), "per_kind": per_kind,
        "parity": exported.max_abs_diff,
    }  # fmt: skip


def render(rows: list[dict[str, Any]], speech: dict[str, Any] | None, cmd: str) -> str:
    lines = [
        "# The model zoo on Fashion-MNIST",
        "",
        f"Reproduce with `{cmd}` (about the wall times below on this machine: "
        f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}).",
        "",
        "Each architecture is trained with `convserve train ARCH --dataset fashion-mnist` "
        "(AdamW, warm-up + cosine, crop/flip augmentation, 28 px resized to 32), the final "
        "epoch is exported to ONNX (parity against PyTorch checked at batch 1 and 7), and the "
        "exported model is scored in ONNX Runtime (CPU) on the full 10,000-image test split.",
        "",
        "| arch | params | epochs | train samples | train wall time | ONNX test top-1 | "
        "PyTorch test top-1 | parity max abs diff |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['arch']} | {r['params']:,} | {r['epochs']} | {r['train_samples']:,} | "
            f"{r['seconds']:.0f} s | {r['onnx_top1']:.4f} | {r['torch_top1']:.4f} | "
            f"{r['parity']:.1e} |"
        )
    if speech:
        kinds = ", ".join(f"{k} {v:.3f}" for k, v in speech["per_kind"].items())
        lines += [
            "",
            "## speech_cnn on the speech corpus",
            "",
            f"{speech['params']:,} parameters, {speech['epochs']} epoch(s), "
            f"{speech['seconds']:.0f} s; ONNX Runtime on the {speech['n_val']:,} validation "
            "windows (held-out voices, songs and effects):",
            "",
            "| accuracy | speech precision | speech recall | parity max abs diff |",
            "|---:|---:|---:|---:|",
            f"| {speech['accuracy']:.4f} | {speech['precision']:.4f} | {speech['recall']:.4f} | "
            f"{speech['parity']:.1e} |",
            "",
            f"Accuracy per kind of window: {kinds}.",
        ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per image model")
    parser.add_argument("--limit", type=int, help="training subset size (default: all 60,000)")
    parser.add_argument("--speech-epochs", type=int, default=6)
    parser.add_argument("--no-speech", action="store_true", help="skip speech_cnn")
    parser.add_argument("--archs", nargs="+", default=list(FAMILIES))
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "zoo.md")
    parser.add_argument("--work-dir", type=Path, default=ROOT / ".cache" / "convserve" / "zoo")
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    shown, skip = [], False  # the command line without where its output went
    for arg in sys.argv[1:]:
        if not skip and not arg.startswith(("--out", "--work-dir")):
            shown.append(arg)
        skip = arg in ("--out", "--work-dir")
    cmd = "python scripts/zoo_table.py " + " ".join(shown)
    rows = image_rows(args, args.work_dir)
    speech = None if args.no_speech else speech_figures(args, args.work_dir)
    args.out.write_text(render(rows, speech, cmd.strip()))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

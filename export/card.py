"""Shipped weights: a finished training run as a folder anyone can export, audit and reproduce.

    weights/<name>/model.safetensors   the network's tensors (safetensors: no pickle, no code)
    weights/<name>/card.json           the model card, machine-readable (schema below)
    weights/<name>/card.md             the same card for people, rendered from card.json
    weights/<name>/curves.png          loss and top-1 per epoch

One command makes the folder from a ``convserve train`` checkpoint, for any task::

    convserve ship runs/resnet20_small-fashion-mnist/last.pt --name resnet_fashion \\
        [--metrics extra.json] [--weights-dir weights] [--threads N]

``card.json`` holds: ``name``, ``arch``, ``model_kwargs``, ``task``, ``parameters``, ``classes``,
``preprocessing`` (what export writes into the serving config), ``data`` (dataset, split sizes,
sources with licences), ``recipe`` (the ``TrainConfig`` fields that define the run) and
``command`` (the same as a ``convserve train`` command line), ``seed``, ``epochs``,
``shipped_checkpoint`` (``last``, or ``best`` when the checkpoint is an earlier epoch: best.pt,
chosen by the data's selection metric), ``training``
(hardware, torch threads, torch version, wall time), ``metrics`` (the shipped epoch's validation
metrics plus the extra JSON's), ``history`` (per epoch), ``limitations``, ``weights`` (file,
bytes, sha256) and ``curves``.

The optional extra JSON adds what the run itself cannot know: ``{"metrics": {...}}`` (merged into
the card's metrics; values may be numbers, or one level of tables such as per-source results),
``"data_sources": [{"name", "licence", "origin"}, ...]`` (replacing the dataset's default list),
``"limitations": ["...", ...]`` (appended) and ``"notes": "..."``.

Training determinism depends on the number of torch threads (reductions split differently), so the
card records them and ``--retrain`` uses them. The checkpoint records its hardware from this
version on; for an older checkpoint ``ship`` describes the machine it runs on, with ``--threads``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path
from typing import Any

import torch

from export.card_text import DATA_SOURCES, LIMITATIONS, render_card_md
from export.checkpoint import build_model, load_checkpoint
from export.curves import plot_curves
from export.errors import ExportError
from export.models import get_model
from export.onnx_export import ExportSource
from export.repository import input_from_dict
from export.train_config import TrainConfig

WEIGHTS_FILENAME = "model.safetensors"
CARD_JSON = "card.json"
CARD_MD = "card.md"
CURVES_FILENAME = "curves.png"
#: The repository's weights/ folder (an editable install, as bootstrap.sh makes).
DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
CARD_FORMAT = "convserve-model-card"
#: TrainConfig fields that define a run's result (paths, device and progress bars do not).
RECIPE_FIELDS = (
    "arch", "dataset", "epochs", "batch_size", "lr", "optimizer", "weight_decay",
    "label_smoothing", "limit", "eval_limit", "seed", "speech_windows",
)  # fmt: skip
_FLAGS = {"batch_size": "--batch-size", "weight_decay": "--weight-decay",
          "label_smoothing": "--label-smoothing", "eval_limit": "--eval-limit"}  # fmt: skip


def describe_hardware() -> dict[str, Any]:
    """The machine and torch settings a run trains on (recorded in checkpoints and cards)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_version": str(torch.__version__),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def train_command(recipe: dict[str, Any], threads: int | None) -> str:
    """``convserve train ...`` reproducing ``recipe`` (defaults left out)."""
    parts = ["convserve", "train", str(recipe["arch"])]
    for key in RECIPE_FIELDS[1:]:
        value = recipe.get(key)
        if value is None or key == "speech_windows":
            continue
        parts += [
            _FLAGS.get(key, f"--{key}"),
            f"{value:g}" if isinstance(value, float) else str(value),
        ]
    if threads:
        parts += ["--threads", str(threads)]
    return " ".join(parts)


def recipe_of(ckpt: dict[str, Any]) -> dict[str, Any]:
    config = dict(ckpt.get("config", {}))
    recipe = {key: config.get(key) for key in RECIPE_FIELDS}
    if isinstance(recipe["speech_windows"], tuple | list):
        recipe["speech_windows"] = list(recipe["speech_windows"])
    return recipe


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _canonical_header(path: Path) -> None:
    """Rewrite a safetensors header with sorted keys, so equal tensors give an equal file.

    safetensors serialises its JSON header from a hash map, in an order that changes from run to
    run (the tensor data is laid out deterministically): the same weights shipped twice would get
    two sha256s. The format allows any key order and space padding to 8 bytes.
    """
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.dumps(json.loads(raw[8 : 8 + size]), sort_keys=True, separators=(",", ":"))
    encoded = header.encode() + b" " * (-len(header.encode()) % 8)
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + raw[8 + size :])


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def ship(
    checkpoint: Path, name: str, weights_dir: Path = DEFAULT_WEIGHTS_DIR, extra: Path | None = None
) -> Path:
    """Write ``weights_dir/name/`` from a training checkpoint (+ extra metrics); returns it."""
    from safetensors.torch import save_file

    ckpt = load_checkpoint(checkpoint)
    model = build_model(ckpt, str(checkpoint))
    more: dict[str, Any] = {}
    if extra is not None:
        try:
            more = json.loads(extra.read_text())
        except (OSError, ValueError) as exc:
            raise ExportError(f"cannot read extra metrics {extra}: {exc}") from exc
        if not isinstance(more, dict):
            raise ExportError(f"{extra} must hold a JSON object ({{'metrics': {{...}}, ...}})")
    folder = weights_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    tmp = folder / f".{WEIGHTS_FILENAME}.tmp"
    save_file(tensors, str(tmp), metadata={"format": "convserve-weights", "arch": ckpt["arch"]})
    _canonical_header(tmp)
    os.chmod(tmp, 0o644)  # safetensors writes through a private temporary file (mode 0600)
    os.replace(tmp, folder / WEIGHTS_FILENAME)
    history = list(ckpt.get("history", []))
    run = _whole_run(checkpoint, ckpt)
    if history:
        # The curves of the whole run: a best.pt's own history stops at the epoch it saved.
        plot_curves(run, folder / CURVES_FILENAME, f"{ckpt['arch']} on {ckpt['dataset']}")
    card = _card(ckpt, name, model, history, more, folder / WEIGHTS_FILENAME)
    card["training"]["wall_seconds"] = round(sum(float(h.get("seconds", 0.0)) for h in run), 1)
    card["training"]["epochs_run"] = len(run)
    _write_text(folder / CARD_JSON, json.dumps(card, indent=2) + "\n")
    _write_text(folder / CARD_MD, render_card_md(card))
    return folder


def _whole_run(checkpoint: Path, ckpt: dict[str, Any]) -> list[dict[str, Any]]:
    """The history of the run ``checkpoint`` comes from: its own, or, for a best.pt, that of the
    last.pt beside it when that is the same run (same arch, seed and recipe) and went further."""
    history = list(ckpt.get("history", []))
    last_path = checkpoint.with_name("last.pt")
    if checkpoint.name == "last.pt" or not last_path.is_file():
        return history
    try:
        last = load_checkpoint(last_path)
    except ExportError:
        return history
    same = all(last.get(k) == ckpt.get(k) for k in ("arch", "seed", "dataset")) and recipe_of(
        last
    ) == recipe_of(ckpt)
    longer = list(last.get("history", []))
    if same and longer[: len(history)] == history and len(longer) > len(history):
        return longer
    return history


def _card(
    ckpt: dict[str, Any],
    name: str,
    model: torch.nn.Module,
    history: list[dict[str, Any]],
    more: dict[str, Any],
    weights: Path,
) -> dict[str, Any]:
    dataset = str(ckpt.get("dataset"))
    hardware = dict(ckpt.get("hardware") or describe_hardware())
    recipe = recipe_of(ckpt)
    final = {k: v for k, v in (history[-1] if history else {}).items() if k.startswith("val_")}
    epoch = int(ckpt["epoch"])
    last = recipe.get("epochs") is None or epoch >= int(recipe["epochs"])
    metrics: dict[str, Any] = {**final, **more.get("metrics", {})}
    return {
        "format": CARD_FORMAT,
        "format_version": 1,
        "name": name,
        "arch": ckpt["arch"],
        "model_kwargs": ckpt["model_kwargs"],
        "task": ckpt["task"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "classes": list(ckpt["classes"]),
        "preprocessing": ckpt["preprocessing"],
        "data": {
            "dataset": dataset,
            "val_split": ckpt.get("val_split"),
            "sources": more.get("data_sources", DATA_SOURCES.get(dataset, [])),
        },
        "recipe": recipe,
        "command": train_command(recipe, hardware.get("torch_threads")),
        "seed": ckpt.get("seed"),
        "epochs": int(ckpt["epoch"]),
        "shipped_checkpoint": "last" if last else "best",
        "shipped_epoch": (
            f"epoch {epoch} of {recipe['epochs']}, the last"
            if last
            else f"epoch {epoch} of {recipe['epochs']}, the best by {ckpt.get('best_metric')} "
            f"on the {ckpt.get('val_split')} split"
        ),
        "training": {
            **hardware,
            "wall_seconds": round(sum(float(h.get("seconds", 0.0)) for h in history), 1),
        },
        "metrics": metrics,
        "history": history,
        "limitations": [*LIMITATIONS.get(dataset, []), *more.get("limitations", [])],
        "notes": more.get("notes", ""),
        "weights": {
            "file": WEIGHTS_FILENAME,
            "bytes": weights.stat().st_size,
            "sha256": _sha256(weights),
        },
        "curves": CURVES_FILENAME if history else None,
    }


def read_card(folder: Path) -> dict[str, Any]:
    """``folder/card.json``, checked to be a model card."""
    path = folder / CARD_JSON
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot read model card {path}: {exc}") from exc
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise ExportError(f"{path} is not a convserve model card: write one with `convserve ship`")
    return card


def load_shipped(folder: Path) -> tuple[dict[str, Any], ExportSource]:
    """The card and the network of a shipped folder, its sha256 checked against the card."""
    from safetensors.torch import load_file

    card = read_card(folder)
    weights = folder / card["weights"]["file"]
    if not weights.is_file():
        raise ExportError(f"{weights} is missing (git lfs? a partial checkout?): re-ship the model")
    digest = _sha256(weights)
    if digest != card["weights"]["sha256"]:
        raise ExportError(
            f"{weights} has sha256 {digest[:12]}..., its card says "
            f"{card['weights']['sha256'][:12]}...: the file is damaged or was replaced"
        )
    model = get_model(card["arch"], **card["model_kwargs"])
    try:
        model.load_state_dict(load_file(str(weights)), strict=True)
    except RuntimeError as exc:
        raise ExportError(f"{weights} does not fit {card['arch']}: {exc}") from exc
    source = ExportSource(
        model.eval(),
        card["arch"],
        [str(c) for c in card["classes"]],
        input_from_dict(card["preprocessing"]),
        origin=f"shipped weights {weights} (sha256 {digest[:12]}...)",
        metadata={"dataset": card["data"]["dataset"], "epoch": card["epochs"]},
    )
    return card, source


def retrain_config(card: dict[str, Any], out: Path, progress: bool = True) -> TrainConfig:
    """The TrainConfig that reproduces a card's run (``out`` is where its checkpoints go)."""
    recipe = dict(card["recipe"])
    windows = recipe.pop("speech_windows", None)
    return TrainConfig(
        **recipe,
        speech_windows=tuple(windows) if windows else None,
        out=out,
        progress=progress,
        device="cpu",
    )

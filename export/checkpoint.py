"""Training checkpoints: one ``torch.save`` dict holding everything needed to rebuild the model.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (so it loads with
``torch.load(weights_only=True)``: no pickled classes, no code runs on load)::

    format          "convserve-checkpoint"        format_version  1
    arch            registered architecture name  model_kwargs    {num_classes, in_channels, ...}
    task            image_classification | speech_detection
    dataset         "fashion-mnist" | "speech" | an image-folder path
    classes         class names, index = output index
    preprocessing   what the server must do to an input (see export.train_data.Preprocessing)
    epoch           epochs completed        step   optimizer steps completed
    state_dict      model weights           optimizer  optimizer state (for --resume)
    history         per-epoch metrics       best_top1  best validation top-1 so far
    seed, config    the training run's seed and settings    torch_version

:func:`load_checkpoint` checks the format and, when asked, the architecture, and
:func:`build_model` rebuilds the network with ``strict=True``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from export.errors import ExportError, as_export_error
from export.models import get_model

FORMAT = "convserve-checkpoint"
FORMAT_VERSION = 1
_REQUIRED = ("arch", "model_kwargs", "task", "classes", "preprocessing", "state_dict", "epoch")


def save_checkpoint(checkpoint: dict[str, Any], path: Path) -> None:
    """Write ``checkpoint`` to ``path`` atomically (temp file in the same directory, rename)."""
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **checkpoint}
    payload.setdefault("torch_version", str(torch.__version__))  # TorchVersion is not loadable
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ExportError(f"cannot write checkpoint {path}: {exc.strerror or exc}") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def looks_like_checkpoint(value: str | Path) -> bool:
    """True when ``value`` names an existing file (the CLI's ARCH|CHECKPOINT disambiguation)."""
    path = Path(value)
    return path.suffix in (".pt", ".pth") or path.is_file()


def load_checkpoint(path: Path | str, expected_arch: str | None = None) -> dict[str, Any]:
    """Load and validate a checkpoint written by ``convserve train``.

    Raises:
        ExportError: missing/unreadable/foreign file, or (with ``expected_arch``) a checkpoint of
            another architecture.
    """
    path = Path(path)
    if not path.is_file():
        raise ExportError(
            f"checkpoint {path} does not exist: pass a file written by `convserve train`"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
        reason = str(exc).strip().split(". ")[0][:160]
        raise ExportError(
            f"cannot load checkpoint {path}: {type(exc).__name__}: {reason} "
            "(is it a complete file written by `convserve train`?)"
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ExportError(f"{path} is not a convserve checkpoint: write one with `convserve train`")
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise ExportError(
            f"{path} has checkpoint format {ckpt['format_version']}, newer than this convserve "
            f"reads ({FORMAT_VERSION}): upgrade convserve"
        )
    missing = [key for key in _REQUIRED if key not in ckpt]
    if missing:
        raise ExportError(
            f"{path} is missing {', '.join(missing)}: re-create it with `convserve train`"
        )
    if expected_arch is not None and ckpt["arch"] != expected_arch:
        raise ExportError(
            f"{path} is a {ckpt['arch']} checkpoint, not {expected_arch}: pass a {expected_arch} "
            f"checkpoint or train with `convserve train {ckpt['arch']}`"
        )
    return ckpt


def build_model(ckpt: dict[str, Any], source: str = "checkpoint") -> nn.Module:
    """The checkpoint's network with its weights loaded (``strict=True``), in eval mode."""
    try:
        model = get_model(ckpt["arch"], **ckpt["model_kwargs"])
    except KeyError as exc:
        raise as_export_error(exc, f"{source}") from exc
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0] if first else ""
        raise ExportError(
            f"{source}: weights do not fit {ckpt['arch']}({ckpt['model_kwargs']}): {detail}"
        ) from exc
    return model.eval()

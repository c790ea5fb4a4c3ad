"""The model repository's on-disk layout: the rules both halves of convserve follow.

    <repository>/<model>/config.pbtxt           Triton's ModelConfig, protobuf text
    <repository>/<model>/labels.txt             one class name per line (an output's label_filename)
    <repository>/<model>/<version>/model.onnx   versions are canonical integers: 1, 2, 10 (not 01)

The server reads this layout (service.repository) and the exporter writes it
(export/repository.py). This module is the one piece of service/ that export/ imports, so it
depends on the standard library only (a test checks that), and it holds every rule both need:
file names, what a version folder is, what a model name may be, how labels are stored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

CONFIG_FILENAME = "config.pbtxt"
DEFAULT_MODEL_FILENAME = "model.onnx"
LABELS_FILENAME = "labels.txt"

# What the exporter accepts as a new model's name: portable across file systems, URLs (the HTTP
# routes put it in the path), Kubernetes labels and Triton. The server serves any plain
# directory name (`name_problem`), since a hand-made repository may hold others.
PORTABLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def version_number(folder: str) -> int | None:
    """The version a folder name stands for, or None: canonical non-negative integers only.

    "01" is not a version: it would not round-trip through the version strings clients send
    ("1"), so a client could never address it.
    """
    if folder.isascii() and folder.isdigit() and folder == str(int(folder)):
        return int(folder)
    return None


def versions(model_dir: Path) -> list[int]:
    """The version folders of a model directory, ascending; [] when it does not exist.

    OSError when the directory exists but cannot be listed.
    """
    if not model_dir.is_dir():
        return []
    found = (version_number(p.name) for p in model_dir.iterdir() if p.is_dir())
    return sorted(v for v in found if v is not None)


def has_servable_version(model_dir: Path, model_filename: str = DEFAULT_MODEL_FILENAME) -> bool:
    """config.pbtxt plus at least one version folder holding the model file."""
    return (model_dir / CONFIG_FILENAME).is_file() and any(
        (model_dir / str(v) / model_filename).is_file() for v in versions(model_dir)
    )


def name_problem(name: str) -> str | None:
    """Why `name` cannot be a model (a plain folder name of the repository), or None if it can.

    Hidden names, separators and NUL are refused: a model name comes from clients and must not
    reach outside the repository folder.
    """
    if not name:
        return "the name is empty"
    if name in (".", "..") or name.startswith("."):
        return "it starts with '.'"
    if any(c in name for c in "/\\\0"):
        return "it contains a path separator or NUL"
    return None


def inside(repository: Path, name: str) -> bool:
    """Whether `<repository>/<name>` resolves to a direct child of the repository (no symlink
    out of it)."""
    root = repository.resolve()
    return (root / name).resolve().parent == root


def read_labels(path: Path) -> tuple[str, ...]:
    """Class names, one per line, surrounding blanks stripped, trailing empty lines dropped.

    OSError / UnicodeDecodeError propagate: the caller names the model in its message.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return tuple(line.strip() for line in lines)


def labels_text(labels: Iterable[str]) -> str:
    """The labels file's content; ValueError for a label that one line cannot hold."""
    out = []
    for label in labels:
        if "\n" in label or "\r" in label:
            raise ValueError(
                f"class name {label!r} contains a line break; a labels file cannot hold it"
            )
        out.append(f"{label}\n")
    return "".join(out)

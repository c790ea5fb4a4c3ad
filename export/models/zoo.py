"""The model zoo as a table: one row per registered architecture (for ``convserve zoo``).

Models are built on the ``meta`` device -- shapes without storage or initialisation -- so listing
even VGG-19 (144M parameters) costs milliseconds and no memory.
"""

from __future__ import annotations

from typing import Any

import torch

from export.models._registry import get_model, get_model_info, list_models


def count_parameters(name: str, **kwargs: Any) -> int:
    """Number of parameters of ``get_model(name, **kwargs)``, without allocating its weights."""
    with torch.device("meta"):
        model = get_model(name, **kwargs)
    return sum(p.numel() for p in model.parameters())


def zoo_table() -> list[dict[str, Any]]:
    """One dict per registered architecture, sorted by name.

    Keys: ``name``, ``family``, ``params`` (int, at the default ``num_classes``), ``input_shape``
    (tuple, one sample without the batch axis), ``num_classes``, ``task``, ``description``.
    """
    rows: list[dict[str, Any]] = []
    for name in list_models():
        info = get_model_info(name)
        rows.append(
            {
                "name": name,
                "family": info.family,
                "params": count_parameters(name),
                "input_shape": info.input_shape,
                "num_classes": info.num_classes,
                "task": info.task,
                "description": info.description,
            }
        )
    return rows

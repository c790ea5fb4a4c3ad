"""The classic CNN zoo, one family per module, every architecture registered by name.

Importing this package imports each of its modules (``pkgutil``), which runs their
``@register_model`` decorators: adding an architecture means adding one file here.

    >>> from export.models import get_model, list_models
    >>> model = get_model("resnet18", num_classes=10)
"""

from __future__ import annotations

import importlib
import pkgutil

from export.models._registry import (
    ModelInfo,
    Task,
    UnknownArchitectureError,
    get_model,
    get_model_info,
    list_models,
    register_model,
)

__all__ = [
    "ModelInfo",
    "Task",
    "UnknownArchitectureError",
    "get_model",
    "get_model_info",
    "list_models",
    "register_model",
]

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

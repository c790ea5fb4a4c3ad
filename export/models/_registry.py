"""Name -> architecture registry (after torchvision's ``models/_api.py``).

Every architecture module decorates its public factories with :func:`register_model`; importing
:mod:`export.models` imports every module in the package, so a new architecture is one new file
and nothing else. Everything downstream (training, export, ``convserve zoo``, tests) looks models
up by name through :func:`get_model` / :func:`get_model_info` and iterates :func:`list_models`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from torch import nn

Task = Literal["image_classification", "speech_detection"]

_Factory = TypeVar("_Factory", bound=Callable[..., nn.Module])


@dataclass(frozen=True)
class ModelInfo:
    """What a caller needs to know about an architecture before building it."""

    name: str
    """Registered name, e.g. ``"resnet18"``."""
    family: str
    """Architecture family, e.g. ``"resnet"``; one module of :mod:`export.models` per family."""
    input_shape: tuple[int, ...]
    """Default input shape of one sample, without the batch axis: ``(C, H, W)`` for images,
    ``(samples,)`` for audio."""
    num_classes: int
    """Default number of outputs (logits) of the factory."""
    task: Task
    """``"image_classification"`` or ``"speech_detection"``."""
    description: str
    """One line for humans (first line of the factory's docstring unless given)."""


class UnknownArchitectureError(KeyError):
    """No architecture is registered under the requested name."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        super().__init__(name)

    def __str__(self) -> str:
        # KeyError's own __str__ would print only repr(name); say what exists instead.
        return f"unknown architecture {self.name!r}; known: {', '.join(self.known)}"


_FACTORIES: dict[str, Callable[..., nn.Module]] = {}
_INFOS: dict[str, ModelInfo] = {}


def register_model(
    name: str,
    *,
    family: str | None = None,
    input_shape: tuple[int, ...] = (3, 224, 224),
    num_classes: int = 1000,
    task: Task = "image_classification",
    description: str | None = None,
) -> Callable[[_Factory], _Factory]:
    """Register a factory under ``name``; the defaults describe an ImageNet classifier.

    ``family`` defaults to the defining module's name (``export.models.resnet`` -> ``"resnet"``),
    ``description`` to the first line of the factory's docstring. The metadata must agree with the
    factory's own defaults; the registry-wide test builds every model and checks that it does.
    """

    def wrap(factory: _Factory) -> _Factory:
        if name in _FACTORIES:
            raise ValueError(f"architecture {name!r} is already registered")
        doc = (factory.__doc__ or "").strip()
        _FACTORIES[name] = factory
        _INFOS[name] = ModelInfo(
            name=name,
            family=family or factory.__module__.rsplit(".", 1)[-1],
            input_shape=tuple(input_shape),
            num_classes=num_classes,
            task=task,
            description=description or (doc.splitlines()[0] if doc else name),
        )
        return factory

    return wrap


def list_models() -> list[str]:
    """All registered architecture names, sorted."""
    return sorted(_FACTORIES)


def get_model_info(name: str) -> ModelInfo:
    """Metadata of the architecture registered as ``name``.

    Raises:
        UnknownArchitectureError: ``name`` is not registered.
    """
    try:
        return _INFOS[name]
    except KeyError:
        raise UnknownArchitectureError(name, list_models()) from None


def get_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a freshly initialised ``name``; ``kwargs`` go to its factory (``num_classes``, ...).

    Raises:
        UnknownArchitectureError: ``name`` is not registered.
    """
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise UnknownArchitectureError(name, list_models()) from None
    return factory(**kwargs)

"""One served version of one model: its state, its ONNX Runtime sessions and its batcher.

States are Triton's (the strings RepositoryIndex reports): LOADING → READY → UNLOADING →
UNAVAILABLE, or LOADING → UNAVAILABLE with the reason it failed. The repository moves a version
through them (service.repository) and is told of every change through `notify`.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from pathlib import Path

import numpy as np

from service.batcher import DynamicBatcher, ModelStats
from service.errors import ModelNotReadyError, ServerShuttingDownError
from service.runtime import OrtRuntime
from service.spec import ModelSpec


class ModelState(str, Enum):
    """Triton's model states (RepositoryIndex strings)."""

    LOADING = "LOADING"
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"
    UNLOADING = "UNLOADING"


class ServedModel:
    """One version of one model: its spec, state, sessions and batcher."""

    def __init__(
        self,
        name: str,
        version: str,
        spec: ModelSpec,
        path: Path,
        notify: Callable[[ServedModel], None],
    ) -> None:
        self.name = name
        self.version = version
        self.spec = spec
        self.path = path  # the version directory, <repo>/<model>/<version>
        self.state = ModelState.LOADING
        self.reason = ""
        self.runtimes: list[OrtRuntime] = []
        self.batcher: DynamicBatcher | None = None
        self._notify = notify
        self._shutting_down = False

    def __repr__(self) -> str:
        return f"ServedModel({self.name!r}, {self.version!r}, {self.state.value})"

    @property
    def ready(self) -> bool:
        return self.state is ModelState.READY

    @property
    def provider(self) -> str:
        """The execution provider ONNX Runtime actually uses ("" before the sessions exist)."""
        return self.runtimes[0].provider if self.runtimes else ""

    @property
    def requested_device(self) -> str:
        return self.runtimes[0].requested_device if self.runtimes else ""

    @property
    def gpu_ids(self) -> list[int]:
        """CUDA devices the instances run on (for the GPU metrics)."""
        return [r.device_id for r in self.runtimes if r.on_gpu]

    @property
    def stats(self) -> ModelStats:
        return self.batcher.stats if self.batcher is not None else ModelStats()

    @property
    def queue_depth(self) -> int:
        return self.batcher.queue_depth if self.batcher is not None else 0

    def set_state(self, state: ModelState, reason: str = "") -> None:
        self.state = state
        self.reason = reason
        self._notify(self)

    def start_shutdown(self) -> None:
        """The server is stopping: refuse new requests with ServerShuttingDownError."""
        self._shutting_down = True

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    async def infer(
        self, inputs: dict[str, np.ndarray], *, deadline: float | None = None
    ) -> dict[str, np.ndarray]:
        """Queue one request's validated arrays and return its rows of every output.

        The arrays must already match the spec (service.dataplane.validation checks them).
        """
        if self._shutting_down:
            raise ServerShuttingDownError("server is shutting down")
        if self.state is not ModelState.READY or self.batcher is None:
            raise ModelNotReadyError(self.unavailable_message())
        return await self.batcher.submit(inputs, deadline=deadline)

    def unavailable_message(self) -> str:
        reason = f": {self.reason}" if self.reason else ""
        return f"model '{self.name}' version {self.version} is {self.state.value}{reason}"

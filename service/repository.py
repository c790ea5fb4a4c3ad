"""The model repository: which models and versions exist, their state, and loading/unloading.

Each served version owns its ONNX Runtime sessions (one per instance) and its DynamicBatcher.
A model that fails to load is UNAVAILABLE with its reason while the others serve. A model whose
config.pbtxt itself is unusable has no versions: `list_models` shows it with an empty version list
and `index` with version "" and the reason.

Reloading builds and warms the new versions before they replace the old ones, and the old ones
drain after the swap, so a reload never refuses a request for lack of a ready version. If any new
version fails, the old versions keep serving and the reload raises ModelLoadError (as Triton).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from enum import Enum
from pathlib import Path

import numpy as np

from service.batcher import DynamicBatcher, ModelStats
from service.config import (
    CONFIG_FILENAME,
    DEFAULT_MODEL_FILENAME,
    ModelConfig,
    ModelSpec,
    autocomplete_config,
    datatype_name,
    load_spec,
    parse_config,
)
from service.errors import (
    ConvserveError,
    InvalidInputError,
    ModelLoadError,
    ModelNotFoundError,
    ModelNotReadyError,
    RepositoryError,
    ServerShuttingDownError,
)
from service.metrics import Metrics
from service.runtime import OrtRuntime
from service.settings import Settings

logger = logging.getLogger(__name__)

TASK_IMAGE = "image_classification"
TASK_SPEECH = "speech_detection"


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
        self.provider = ""
        self.requested_device = ""
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
    def stats(self) -> ModelStats:
        return self.batcher.stats if self.batcher is not None else ModelStats()

    @property
    def queue_depth(self) -> int:
        return self.batcher.queue_depth if self.batcher is not None else 0

    def set_state(self, state: ModelState, reason: str = "") -> None:
        self.state = state
        self.reason = reason
        self._notify(self)

    async def infer(
        self, inputs: dict[str, np.ndarray], *, deadline: float | None = None
    ) -> dict[str, np.ndarray]:
        """Validate one request's inputs, queue them, and return its rows of every output."""
        if self._shutting_down:
            raise ServerShuttingDownError("server is shutting down")
        if self.state is not ModelState.READY or self.batcher is None:
            raise ModelNotReadyError(self.unavailable_message())
        self.validate(inputs)
        return await self.batcher.submit(inputs, deadline=deadline)

    def validate(self, inputs: dict[str, np.ndarray]) -> None:
        """Names, datatypes and shapes against the config; InvalidInputError says what is wrong."""
        spec = self.spec
        who = f"model '{self.name}'"
        expected = [t.name for t in spec.inputs]
        unknown = sorted(set(inputs) - set(expected))
        if unknown:
            raise InvalidInputError(
                f"{who} has no input {', '.join(map(repr, unknown))}; inputs: {', '.join(expected)}"
            )
        rows: set[int] = set()
        for tensor in spec.inputs:
            if tensor.name not in inputs:
                raise InvalidInputError(f"{who}: missing input '{tensor.name}'")
            array = inputs[tensor.name]
            if not isinstance(array, np.ndarray):
                raise InvalidInputError(f"{who}: input '{tensor.name}' is not an array")
            if array.dtype != tensor.np_dtype:
                raise InvalidInputError(
                    f"{who}: input '{tensor.name}' must be {tensor.datatype}, "
                    f"got {datatype_name(array.dtype)}"
                )
            shape = tuple(array.shape)
            dims = list(tensor.dims)
            if spec.batching:
                if len(shape) != len(dims) + 1 or not tensor.matches(shape[1:]):
                    raise InvalidInputError(
                        f"{who}: input '{tensor.name}' must have shape {[-1, *dims]} "
                        f"(batch first), got {list(shape)}"
                    )
                rows.add(shape[0])
            elif not tensor.matches(shape):
                raise InvalidInputError(
                    f"{who}: input '{tensor.name}' must have shape {dims}, got {list(shape)}"
                )
        if len(rows) > 1:
            raise InvalidInputError(f"{who}: inputs disagree on the batch size: {sorted(rows)}")
        if rows and not 1 <= (n := rows.pop()) <= spec.max_batch_size:
            raise InvalidInputError(
                f"{who}: batch size must be 1 to {spec.max_batch_size}, got {n}"
            )

    def unavailable_message(self) -> str:
        reason = f": {self.reason}" if self.reason else ""
        return f"model '{self.name}' version {self.version} is {self.state.value}{reason}"


class ModelRepository:
    """All models of `settings.repository`; `start()` loads them, `close()` unloads them."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.root = settings.repository
        # Called after every state change of any version (the server's health/metrics hooks).
        self.on_state_change: list[Callable[[ServedModel], None]] = []
        self._models: dict[str, dict[str, ServedModel]] = {}
        self._errors: dict[str, str] = {}  # models whose config/versions could not be read
        self._required: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._skipped: set[str] = set()  # symlinks out of the repository, warned about once
        self._started = False
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Load every model (or settings.load_models); failures leave that model UNAVAILABLE."""
        hint = "(run `convserve build-defaults`)"
        if not self.root.is_dir():
            raise RepositoryError(f"model repository {self.root} does not exist {hint}")
        on_disk = self._scan()
        if not on_disk:
            raise RepositoryError(f"model repository {self.root} contains no models {hint}")
        names = list(self.settings.load_models) or on_disk
        missing = [n for n in names if n not in on_disk]
        if missing:
            raise RepositoryError(
                f"models {', '.join(missing)} are not in the model repository {self.root} "
                f"(it has {', '.join(on_disk)})"
            )
        self._required = set(names)
        self._started = True
        await asyncio.gather(*(self._load(name, raise_errors=False) for name in names))
        for name in names:
            states = [f"{m.version}:{m.state.value}" for m in self._models.get(name, {}).values()]
            logger.info("model %s: %s", name, " ".join(states) or self._errors.get(name, "?"))

    async def close(self, *, drain: bool = True) -> None:
        """Unload everything: queued requests finish (drain) or fail with UNAVAILABLE."""
        self._closed = True
        models = [m for versions in self._models.values() for m in versions.values()]
        for model in models:
            model._shutting_down = True
        await asyncio.gather(*(self._retire(m, drain=drain) for m in models))
        self._models.clear()

    # -- lookup --------------------------------------------------------------------------------

    def get(self, name: str, version: str = "") -> ServedModel:
        """The READY version asked for ("" = the latest READY one).

        Unknown name or version → ModelNotFoundError; known but not ready → ModelNotReadyError.
        """
        if self._closed:
            raise ServerShuttingDownError("server is shutting down")
        versions = self._models.get(name)
        if versions is None:
            if name in self._errors:
                raise ModelNotReadyError(f"model '{name}' is UNAVAILABLE: {self._errors[name]}")
            if self._on_disk(name):
                raise ModelNotReadyError(f"model '{name}' is not loaded")
            available = ", ".join(sorted(self._models)) or "none"
            raise ModelNotFoundError(f"model '{name}' not found; available: {available}")
        if not version:
            ready = [m for m in versions.values() if m.ready]
            if ready:
                return max(ready, key=lambda m: int(m.version))
            latest = max(versions.values(), key=lambda m: int(m.version))
            raise ModelNotReadyError(latest.unavailable_message())
        model = versions.get(version)
        if model is None:
            raise ModelNotFoundError(
                f"model '{name}' has no version {version!r}; versions: {', '.join(versions)}"
            )
        if not model.ready:
            raise ModelNotReadyError(model.unavailable_message())
        return model

    def find(self, name: str, version: str = "") -> ServedModel | None:
        """Like get(), but None instead of an error (for readiness checks)."""
        try:
            return self.get(name, version)
        except ConvserveError:
            return None

    def list_models(self) -> list[tuple[str, list[ServedModel]]]:
        """Every known model, failed ones included, with its versions in ascending order."""
        names = sorted(set(self._models) | set(self._errors))
        return [
            (name, sorted(self._models.get(name, {}).values(), key=lambda m: int(m.version)))
            for name in names
        ]

    def index(self) -> list[tuple[str, str, str, str]]:
        """(name, version, state, reason) for every model on disk or loaded."""
        rows: list[tuple[str, str, str, str]] = []
        for name in sorted(set(self._scan()) | set(self._models) | set(self._errors)):
            if name in self._models:
                for model in sorted(self._models[name].values(), key=lambda m: int(m.version)):
                    rows.append((name, model.version, model.state.value, model.reason))
            elif name in self._errors:
                rows.append((name, "", ModelState.UNAVAILABLE.value, self._errors[name]))
            else:
                rows.append((name, "", ModelState.UNAVAILABLE.value, "unloaded"))
        return rows

    def is_ready(self) -> bool:
        """Every requested model has a READY version (and the repository is open)."""
        if not self._started or self._closed:
            return False
        return all(any(m.ready for m in self._models.get(n, {}).values()) for n in self._required)

    def default_model(self, task: str) -> str:
        if task == TASK_IMAGE:
            return self.settings.default_image_model
        if task == TASK_SPEECH:
            return self.settings.default_speech_model
        raise InvalidInputError(f"no default model for task {task!r}")

    # -- runtime load/unload -------------------------------------------------------------------

    async def load(self, name: str) -> None:
        """(Re)load a model from disk; ModelLoadError when it (or any version) fails."""
        self._check_name(name)
        if not self._on_disk(name):
            raise ModelNotFoundError(f"model '{name}' not found in repository {self.root}")
        if self._closed:
            raise ServerShuttingDownError("server is shutting down")
        await self._load(name, raise_errors=True)
        self._required.add(name)

    async def unload(self, name: str) -> None:
        """Unload a model: requests already queued finish, new ones get UNAVAILABLE."""
        self._check_name(name)
        async with self._lock(name):
            self._required.discard(name)
            versions = self._models.get(name)
            if versions is None:
                if not self._clear_error(name) and not self._on_disk(name):
                    raise ModelNotFoundError(f"model '{name}' not found")
                return  # not loaded: nothing to do (as Triton)
            await asyncio.gather(*(self._retire(m, drain=True) for m in versions.values()))
            self._models.pop(name, None)
            logger.info("model %s unloaded", name)

    # -- internals -----------------------------------------------------------------------------

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def _scan(self) -> list[str]:
        """Model directories: visible subdirectories of the repository.

        A symlink that resolves outside the repository is skipped (with one warning): a model
        served from there could not be reloaded or unloaded by name (`_check_name` refuses it),
        and the repository directory is the one place models come from.
        """
        try:
            entries = sorted(self.root.iterdir())
        except OSError:
            return []
        names = []
        for p in entries:
            if not p.is_dir() or p.name.startswith(".") or p.name == "__pycache__":
                continue
            try:
                self._check_name(p.name)
            except InvalidInputError:
                if p.name not in self._skipped:
                    self._skipped.add(p.name)
                    logger.warning(
                        "skipping %s: it resolves to %s, outside the repository", p, p.resolve()
                    )
                continue
            names.append(p.name)
        return names

    def _on_disk(self, name: str) -> bool:
        try:
            self._check_name(name)
        except InvalidInputError:
            return False
        return (self.root / name).is_dir()

    def _check_name(self, name: str) -> None:
        """A model name is a plain directory name that resolves to inside the repository."""
        plain = (
            bool(name)
            and name not in (".", "..")
            and not name.startswith(".")
            and not any(c in name for c in "/\\\0")
        )
        if plain:
            root = self.root.resolve()
            plain = (root / name).resolve().parent == root
        if not plain:
            raise InvalidInputError(
                f"invalid model name {name!r}: must be a directory name inside the repository"
            )

    async def _load(self, name: str, *, raise_errors: bool) -> None:
        async with self._lock(name):
            old = self._models.get(name)
            # A reload that fails leaves a serving model alone; a model with nothing READY is
            # simply replaced, so its reason shows the latest failure.
            keep_old = old is not None and any(m.ready for m in old.values())
            try:
                spec, versions = await asyncio.to_thread(self._read_model, name)
            except ModelLoadError as exc:
                logger.error("model %s: %s", name, exc)
                if not keep_old:
                    if old is not None:
                        del self._models[name]
                        await asyncio.gather(*(self._retire(m, drain=False) for m in old.values()))
                    self._errors[name] = str(exc)
                    # No version could be read: publish the model as not ready (version "") so
                    # dashboards and the not-ready alert see it, not only the log.
                    self.metrics.model_ready.labels(name, "").set(0)
                if raise_errors:
                    raise
                return
            new = {
                v: ServedModel(name, v, spec, self.root / name / v, self._state_changed)
                for v in versions
            }
            if old is None:  # first load: show LOADING; a reload keeps the old ones visible
                self._models[name] = new
                self._clear_error(name)
            for model in new.values():
                model.set_state(ModelState.LOADING)
            await asyncio.gather(*(self._start_version(m) for m in new.values()))
            if self._closed:  # close() ran while we were loading: do not leave these running
                await asyncio.gather(*(self._retire(m, drain=False) for m in new.values()))
                raise ServerShuttingDownError("server is shutting down")
            failed = [m for m in new.values() if not m.ready]
            if keep_old and failed:
                await asyncio.gather(*(self._retire(m, drain=False) for m in new.values()))
                raise ModelLoadError(_failures(name, failed) + " (previous versions still serve)")
            if old is not None:
                self._models[name] = new
                self._clear_error(name)
                await asyncio.gather(*(self._retire(m, drain=True) for m in old.values()))
            if failed and raise_errors:
                raise ModelLoadError(_failures(name, failed))

    def _read_model(self, name: str) -> tuple[ModelSpec, list[str]]:
        """Worker thread: parse the config (or derive it) and pick the versions to serve."""
        model_dir = self.root / name
        try:
            # Version directories are canonical integers ("1", "12"): "01" would not round-trip
            # through the version strings clients send.
            on_disk = sorted(
                int(p.name)
                for p in model_dir.iterdir()
                if p.is_dir()
                and p.name.isascii()
                and p.name.isdigit()
                and p.name == str(int(p.name))
            )
        except OSError as exc:
            raise ModelLoadError(f"{model_dir}: cannot list it: {exc}") from None
        config_path = model_dir / CONFIG_FILENAME
        default_size = self.settings.max_queue_size
        config: ModelConfig
        if config_path.is_file():
            config = parse_config(config_path, default_max_queue_size=default_size)
        elif on_disk:
            config = autocomplete_config(
                model_dir / str(on_disk[-1]) / DEFAULT_MODEL_FILENAME, name
            )
        else:
            raise ModelLoadError(f"{model_dir}: no {CONFIG_FILENAME} and no version directories")
        spec = load_spec(model_dir, config, default_max_queue_size=default_size)
        if not on_disk:
            expected = model_dir / "1" / spec.model_filename
            raise ModelLoadError(f"{model_dir}: no version directories (expected {expected})")
        return spec, [str(v) for v in _select_versions(config, on_disk)]

    async def _start_version(self, model: ServedModel) -> None:
        """Create, check and warm every instance's session, then start the batcher."""
        spec = model.spec
        runtimes: list[OrtRuntime] = []
        try:
            model_file = model.path / spec.model_filename
            if not model_file.is_file():
                raise ModelLoadError(f"{model_file} does not exist")
            threads = self.settings.intra_op_threads
            if threads == 0 and spec.instances > 1:
                # Several sessions each defaulting to every core would oversubscribe the CPU.
                threads = max(1, (os.cpu_count() or 1) // spec.instances)
            for instance_device in spec.instance_devices:
                device = self._device_for(instance_device)
                runtime = await asyncio.to_thread(
                    OrtRuntime, model_file, spec, device, intra_op_threads=threads
                )
                runtimes.append(runtime)
                await asyncio.to_thread(runtime.warmup, spec.buckets)
            batcher = DynamicBatcher(spec, runtimes, self.metrics, model.version)
            await batcher.start()
        except Exception as exc:
            for runtime in runtimes:
                runtime.close()
            if isinstance(exc, ModelLoadError):
                reason = str(exc)
            else:  # a bug, not a bad model: keep the traceback
                logger.exception("loading %s version %s failed", model.name, model.version)
                reason = f"unexpected error: {exc}"
            model.set_state(ModelState.UNAVAILABLE, reason)
            return
        model.runtimes = runtimes
        model.batcher = batcher
        model.provider = runtimes[0].provider
        model.requested_device = runtimes[0].requested_device
        for runtime in runtimes:
            if runtime.on_gpu:
                self.metrics.track_gpu(runtime.device_id)
        labels = (model.name, model.version)
        self.metrics.execution_provider.labels(*labels, model.provider).set(1)
        self.metrics.requested_device_info.labels(*labels, model.requested_device).set(1)
        model.set_state(ModelState.READY)

    def _device_for(self, instance_device: str) -> str:
        """--device cpu wins over the config; otherwise KIND_CPU / gpus: [N] win over --device."""
        if self.settings.device == "cpu" or instance_device == "cpu":
            return "cpu"
        if instance_device.startswith("cuda"):
            return instance_device
        return self.settings.device

    async def _retire(self, model: ServedModel, *, drain: bool) -> None:
        """Stop serving one version: drain or fail its queue, close its sessions."""
        if model.state is ModelState.READY:
            model.set_state(ModelState.UNLOADING)
        if model.batcher is not None:
            error = (
                ServerShuttingDownError("server is shutting down") if model._shutting_down else None
            )
            await model.batcher.stop(drain=drain, error=error)
        for runtime in model.runtimes:
            runtime.close()
        if model.provider:
            labels = (model.name, model.version)
            with contextlib.suppress(KeyError):
                self.metrics.execution_provider.remove(*labels, model.provider)
            with contextlib.suppress(KeyError):
                self.metrics.requested_device_info.remove(*labels, model.requested_device)
        model.set_state(ModelState.UNAVAILABLE, model.reason or "unloaded")

    def _clear_error(self, name: str) -> bool:
        """Forget a config failure and its version-less not-ready series; True if there was one."""
        if self._errors.pop(name, None) is None:
            return False
        with contextlib.suppress(KeyError):
            self.metrics.model_ready.remove(name, "")
        return True

    def _state_changed(self, model: ServedModel) -> None:
        self.metrics.model_ready.labels(model.name, model.version).set(1 if model.ready else 0)
        for callback in list(self.on_state_change):
            try:
                callback(model)
            except Exception:  # a hook's bug must not break loading
                logger.exception("on_state_change hook failed for %r", model)


def _select_versions(config: ModelConfig, on_disk: list[int]) -> list[int]:
    """Triton's version_policy: latest N (default 1), all, or specific versions."""
    policy = config.version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return on_disk
    if choice == "specific":
        wanted = sorted(set(policy.specific.versions))
        absent = [v for v in wanted if v not in on_disk]
        if absent:
            raise ModelLoadError(
                f"{config.name}: version_policy asks for versions {absent} that are not on disk"
            )
        return wanted
    count = policy.latest.num_versions if choice == "latest" else 1
    return on_disk[-max(count, 1) :]


def _failures(name: str, failed: list[ServedModel]) -> str:
    return f"model '{name}' failed to load: " + "; ".join(
        f"version {m.version}: {m.reason}" for m in failed
    )

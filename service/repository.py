"""The model repository: which models and versions exist, their state, loading and unloading.

Each served version (service.model.ServedModel) owns its sessions and batcher; service.loader
brings it up and down. A model that fails to load is UNAVAILABLE with its reason while the others
serve. A model whose config.pbtxt itself is unusable has no versions: `versions(name)` is empty
and `error(name)` holds the reason.

Reloading builds and warms the new versions before they replace the old ones, and the old ones
drain after the swap, so a reload never refuses a request for lack of a ready version. If any new
version fails, the old versions keep serving and the reload raises ModelLoadError (as Triton).

Listeners in `on_change` are called with a model's name after any change to it (a version's
state, a load error recorded or cleared): the server's health service and the model metrics
follow the repository that way. Which version answers a request is the data plane's decision
(service.dataplane.resolve); the repository only reports what is loaded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from service import layout, loader
from service._proto.inference.model_config_pb2 import ModelConfig
from service.errors import (
    InvalidInputError,
    ModelLoadError,
    ModelNotFoundError,
    RepositoryError,
    ServerShuttingDownError,
)
from service.metrics import Metrics
from service.model import ModelState, ServedModel
from service.settings import Settings

logger = logging.getLogger(__name__)


class ModelRepository:
    """All models of `settings.repository`; `start()` loads them, `close()` unloads them."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics  # for the batchers' series
        self.root = settings.repository
        self.on_change: list[Callable[[str], None]] = []
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
            states = [f"{m.version}:{m.state.value}" for m in self.versions(name)]
            logger.info("model %s: %s", name, " ".join(states) or self._errors.get(name, "?"))

    async def close(self, *, drain: bool = True) -> None:
        """Unload everything: queued requests finish (drain) or fail with UNAVAILABLE."""
        self._closed = True
        models = [m for versions in self._models.values() for m in versions.values()]
        for model in models:
            model.start_shutdown()
        await asyncio.gather(*(loader.retire(m, drain=drain) for m in models))
        self._models.clear()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- what is loaded ------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Every known model, failed ones included, sorted."""
        return sorted(set(self._models) | set(self._errors))

    def versions(self, name: str) -> list[ServedModel]:
        """A model's versions in ascending order ([] when unknown or when its config failed)."""
        return sorted(self._models.get(name, {}).values(), key=lambda m: int(m.version))

    def error(self, name: str) -> str | None:
        """Why a model has no versions at all (its config or version folders failed), or None."""
        return self._errors.get(name)

    def on_disk(self, name: str) -> bool:
        """A loadable model folder of that name exists (whether or not it is loaded)."""
        return (
            layout.name_problem(name) is None and self._inside(name) and (self.root / name).is_dir()
        )

    def index(self) -> list[tuple[str, str, str, str]]:
        """(name, version, state, reason) for every model on disk or loaded."""
        rows: list[tuple[str, str, str, str]] = []
        for name in sorted(set(self._scan()) | set(self._models) | set(self._errors)):
            if name in self._models:
                for model in self.versions(name):
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
        return all(any(m.ready for m in self.versions(n)) for n in self._required)

    # -- runtime load/unload -------------------------------------------------------------------

    async def load(self, name: str, config: ModelConfig | None = None) -> None:
        """(Re)load a model from disk, with `config` instead of its config.pbtxt when given;
        ModelLoadError when it (or any version) fails."""
        self.check_name(name)
        if not self.on_disk(name):
            raise ModelNotFoundError(f"model '{name}' not found in repository {self.root}")
        if self._closed:
            raise ServerShuttingDownError("server is shutting down")
        await self._load(name, raise_errors=True, config=config)
        self._required.add(name)

    async def unload(self, name: str) -> None:
        """Unload a model: requests already queued finish, new ones get UNAVAILABLE."""
        self.check_name(name)
        async with self._lock(name):
            self._required.discard(name)
            versions = self._models.get(name)
            if versions is None:
                if not self._clear_error(name) and not self.on_disk(name):
                    raise ModelNotFoundError(f"model '{name}' not found")
                return  # not loaded: nothing to do (as Triton)
            await asyncio.gather(*(loader.retire(m, drain=True) for m in versions.values()))
            self._models.pop(name, None)
            self._changed(name)
            logger.info("model %s unloaded", name)

    def check_name(self, name: str) -> None:
        """A model name is a plain directory name that resolves to inside the repository."""
        problem = layout.name_problem(name)
        if problem is None and not self._inside(name):
            problem = "it resolves to outside the repository"
        if problem is not None:
            raise InvalidInputError(
                f"invalid model name {name!r}: must be a directory name inside the repository"
            )

    # -- internals -----------------------------------------------------------------------------

    def _inside(self, name: str) -> bool:
        return layout.inside(self.root, name)

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def _scan(self) -> list[str]:
        """Model directories: visible subdirectories of the repository.

        A symlink that resolves outside the repository is skipped (with one warning): a model
        served from there could not be reloaded or unloaded by name (`check_name` refuses it),
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
            if layout.name_problem(p.name) is not None or not self._inside(p.name):
                if p.name not in self._skipped:
                    self._skipped.add(p.name)
                    logger.warning(
                        "skipping %s: it resolves to %s, outside the repository", p, p.resolve()
                    )
                continue
            names.append(p.name)
        return names

    async def _load(
        self, name: str, *, raise_errors: bool, config: ModelConfig | None = None
    ) -> None:
        async with self._lock(name):
            old = self._models.get(name)
            # A reload that fails leaves a serving model alone; a model with nothing READY is
            # simply replaced, so its reason shows the latest failure.
            keep_old = old is not None and any(m.ready for m in old.values())
            try:
                spec, versions = await asyncio.to_thread(
                    loader.read_model, self.root, name, self.settings, config
                )
            except ModelLoadError as exc:
                logger.error("model %s: %s", name, exc)
                if not keep_old:
                    if old is not None:
                        del self._models[name]
                        await asyncio.gather(*(loader.retire(m, drain=False) for m in old.values()))
                    self._errors[name] = str(exc)
                    self._changed(name)
                if raise_errors:
                    raise
                return
            new = {
                v: ServedModel(name, v, spec, self.root / name / v, self._version_changed)
                for v in versions
            }
            if old is None:  # first load: show LOADING; a reload keeps the old ones visible
                self._models[name] = new
                self._clear_error(name)
            for model in new.values():
                model.set_state(ModelState.LOADING)
            await asyncio.gather(
                *(loader.start_version(m, self.settings, self.metrics) for m in new.values())
            )
            if self._closed:  # close() ran while we were loading: do not leave these running
                await asyncio.gather(*(loader.retire(m, drain=False) for m in new.values()))
                raise ServerShuttingDownError("server is shutting down")
            failed = [m for m in new.values() if not m.ready]
            if keep_old and failed:
                await asyncio.gather(*(loader.retire(m, drain=False) for m in new.values()))
                raise ModelLoadError(
                    loader.failures(name, failed) + " (previous versions still serve)"
                )
            if old is not None:
                self._models[name] = new
                self._clear_error(name)
                await asyncio.gather(*(loader.retire(m, drain=True) for m in old.values()))
                self._changed(name)
            if failed and raise_errors:
                raise ModelLoadError(loader.failures(name, failed))

    def _clear_error(self, name: str) -> bool:
        """Forget a config failure; True if there was one."""
        if self._errors.pop(name, None) is None:
            return False
        self._changed(name)
        return True

    def _version_changed(self, model: ServedModel) -> None:
        self._changed(model.name)

    def _changed(self, name: str) -> None:
        for callback in list(self.on_change):
            try:
                callback(name)
            except Exception:  # a listener's bug must not break loading
                logger.exception("on_change listener failed for model %s", name)

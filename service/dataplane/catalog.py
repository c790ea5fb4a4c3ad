"""Which version answers a request, and what the models look like from outside.

`Catalog.resolve` is the version policy for inference: the version asked for if it is READY,
else (no version given) the latest READY one; NOT_FOUND for an unknown model or version,
UNAVAILABLE for a known one that is not ready (with its reason). Descriptions (metadata, config,
statistics) fall back to the latest version with a config when none is ready, so a failed model
can still be inspected. Both record the resolved model as the call's metrics label.
"""

from __future__ import annotations

from collections.abc import Sequence

from service import calls
from service._proto.inference import model_config_pb2
from service.batcher import ModelStats
from service.dataplane.records import (
    ModelInfo,
    ModelMetadata,
    RepositoryEntry,
    TensorMetadata,
    VersionInfo,
)
from service.errors import (
    InvalidInputError,
    ModelNotFoundError,
    ModelNotReadyError,
    ServerShuttingDownError,
)
from service.model import ModelState, ServedModel
from service.repository import ModelRepository
from service.settings import Settings
from service.spec import ModelSpec, Task, TensorSpec

PLATFORM = "onnxruntime_onnx"


class Catalog:
    """The models of one repository, as the protocols see them."""

    def __init__(self, repository: ModelRepository, settings: Settings) -> None:
        self.repository = repository
        self._defaults = {
            Task.IMAGE: settings.default_image_model,
            Task.SPEECH: settings.default_speech_model,
        }

    # -- resolution ------------------------------------------------------------------------

    def default_model(self, task: Task) -> str:
        try:
            return self._defaults[task]
        except KeyError:
            raise InvalidInputError(f"no default model for task {task.value!r}") from None

    def resolve(self, name: str, version: str = "", task: Task | None = None) -> ServedModel:
        """The READY version that answers (see the module docstring); `task` also checks that
        the model does that task ("" name: the task's default model)."""
        if task is not None and not name:
            name = self.default_model(task)
        served = self._ready(name, version)
        calls.set_model(served.name)
        if task is not None and served.spec.task is not task:
            raise InvalidInputError(
                f"model {served.name!r} is a {served.spec.task.value} model; this RPC needs a "
                f"{task.value} model"
            )
        return served

    def find(self, name: str, version: str = "") -> ServedModel | None:
        """Like resolve(), but None instead of an error (readiness checks)."""
        try:
            return self._ready(name, version)
        except (ModelNotFoundError, ModelNotReadyError, ServerShuttingDownError):
            return None

    def describe(self, name: str, version: str = "") -> ServedModel:
        """A version to describe: the READY one resolve() would pick, else the latest version
        with a parsed config, ready or not."""
        if not name:
            raise InvalidInputError("model name is required")
        try:
            served = self._ready(name, version)
        except ModelNotReadyError:
            candidates = [
                v for v in self.repository.versions(name) if not version or v.version == version
            ]
            if not candidates:
                raise
            served = candidates[-1]
        calls.set_model(served.name)
        return served

    def _ready(self, name: str, version: str) -> ServedModel:
        repo = self.repository
        if repo.closed:
            raise ServerShuttingDownError("server is shutting down")
        versions = repo.versions(name)
        if not versions:
            error = repo.error(name)
            if error is not None:
                raise ModelNotReadyError(f"model '{name}' is UNAVAILABLE: {error}")
            if repo.on_disk(name):
                raise ModelNotReadyError(f"model '{name}' is not loaded")
            loaded = [n for n in repo.names() if repo.versions(n)]
            raise ModelNotFoundError(
                f"model '{name}' not found; available: {', '.join(loaded) or 'none'}"
            )
        if not version:
            ready = [m for m in versions if m.ready]
            if ready:
                return ready[-1]
            raise ModelNotReadyError(versions[-1].unavailable_message())
        model = next((m for m in versions if m.version == version), None)
        if model is None:
            raise ModelNotFoundError(
                f"model '{name}' has no version {version!r}; versions: "
                f"{', '.join(m.version for m in versions)}"
            )
        if not model.ready:
            raise ModelNotReadyError(model.unavailable_message())
        return model

    # -- descriptions ----------------------------------------------------------------------

    def ready_versions(self, name: str) -> list[ServedModel]:
        if name not in self.repository.names():
            raise ModelNotFoundError(f"unknown model {name!r}")
        return [v for v in self.repository.versions(name) if v.ready]

    def metadata(self, name: str, version: str = "") -> ModelMetadata:
        served = self.describe(name, version)
        spec = served.spec
        ready = [v.version for v in self.ready_versions(name)]
        return ModelMetadata(
            name=served.name,
            versions=[served.version] if version else ready or [served.version],
            platform=spec.config.platform or PLATFORM,
            inputs=tensors(spec, spec.inputs),
            outputs=tensors(spec, spec.outputs),
        )

    def config(self, name: str, version: str = "") -> model_config_pb2.ModelConfig:
        return self.describe(name, version).spec.config

    def statistics(self, name: str = "", version: str = "") -> list[tuple[str, str, ModelStats]]:
        """(model, version, counters): one version, a model's READY ones, or every READY one."""
        if name:
            served = self.describe(name, version)
            chosen = [served] if version else self.ready_versions(name) or [served]
        else:
            repo = self.repository
            chosen = [v for n in repo.names() for v in repo.versions(n) if v.ready]
        return [(v.name, v.version, v.stats) for v in chosen]

    def model_info(self, name: str, version: str = "") -> ModelInfo:
        """GetModel: one model with its versions (one, when `version` is given)."""
        repo = self.repository
        if name not in repo.names():
            raise ModelNotFoundError(f"unknown model {name!r}")
        versions = repo.versions(name)
        if version:
            versions = [v for v in versions if v.version == version]
            if not versions:
                raise ModelNotFoundError(f"model {name!r} has no version {version!r}")
        calls.set_model(name)
        return self._info(name, versions)

    def models(self) -> list[ModelInfo]:
        """ListModels: every known model, failed ones included."""
        return [self._info(n, self.repository.versions(n)) for n in self.repository.names()]

    def _info(self, name: str, versions: Sequence[ServedModel]) -> ModelInfo:
        infos = [_version_info(v) for v in versions]
        error = self.repository.error(name)
        if not versions and error is not None:
            # No versions: its config could not be read. Show why, as a version-less entry.
            infos = [VersionInfo(version="", state=ModelState.UNAVAILABLE.value, reason=error)]
        if not versions:
            return ModelInfo(name=name, versions=infos)
        spec = versions[-1].spec
        return ModelInfo(
            name=name,
            versions=infos,
            task=spec.task.value,
            is_default=self._defaults.get(spec.task) == name,
            num_labels=spec.num_labels,
        )

    def index(self, *, ready_only: bool = False) -> list[RepositoryEntry]:
        rows = sorted(self.repository.index())
        return [
            RepositoryEntry(name, version, state, reason or "")
            for name, version, state, reason in rows
            if not ready_only or state == ModelState.READY.value
        ]


def tensors(spec: ModelSpec, specs: Sequence[TensorSpec]) -> list[TensorMetadata]:
    return [TensorMetadata(t.name, t.datatype, spec.wire_shape(t)) for t in specs]


def _version_info(v: ServedModel) -> VersionInfo:
    spec = v.spec
    return VersionInfo(
        version=v.version,
        state=v.state.value,
        reason=v.reason or "",
        provider=v.provider,
        requested_device=v.requested_device,
        max_batch_size=spec.max_batch_size,
        batch_buckets=spec.buckets,
        instances=spec.instances,
        inputs=tensors(spec, spec.inputs),
        outputs=tensors(spec, spec.outputs),
    )

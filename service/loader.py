"""Bringing one model from disk to READY and back: read its config and versions, build and warm
its sessions, start and stop its batcher.

`read_model` runs in a worker thread (file system, protobuf parsing); `start_version` and
`retire` run on the event loop and push ONNX Runtime work (session creation, warm-up) to threads.
Every problem with the model's files is a ModelLoadError, which leaves that version UNAVAILABLE
with the message as its reason; anything else is a bug and is logged with its traceback.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from service import layout
from service.autocomplete import autocomplete_config
from service.batcher import DynamicBatcher
from service.config import ModelConfig, load_spec, parse_config
from service.errors import ModelLoadError, ServerShuttingDownError
from service.metrics import Metrics
from service.model import ModelState, ServedModel
from service.runtime import OrtRuntime
from service.settings import Settings
from service.spec import ModelSpec

logger = logging.getLogger(__name__)


def read_model(
    root: Path, name: str, settings: Settings, override: ModelConfig | None = None
) -> tuple[ModelSpec, list[str]]:
    """Worker thread: parse the config (or take `override`, or derive one from the graph) and
    pick the versions to serve."""
    model_dir = root / name
    try:
        on_disk = layout.versions(model_dir)
    except OSError as exc:
        raise ModelLoadError(f"{model_dir}: cannot list it: {exc}") from None
    config_path = model_dir / layout.CONFIG_FILENAME
    queue = settings.max_queue_size
    config: ModelConfig
    if override is not None:
        config = ModelConfig()
        config.CopyFrom(override)
        if config.HasField("dynamic_batching"):
            policy = config.dynamic_batching.default_queue_policy
            policy.max_queue_size = policy.max_queue_size or queue
    elif config_path.is_file():
        config = parse_config(config_path, default_max_queue_size=queue)
    elif on_disk:
        latest = model_dir / str(on_disk[-1]) / layout.DEFAULT_MODEL_FILENAME
        config = autocomplete_config(latest, name)
    else:
        raise ModelLoadError(f"{model_dir}: no {layout.CONFIG_FILENAME} and no version directories")
    spec = load_spec(
        model_dir,
        config,
        default_max_queue_size=queue,
        max_audio_seconds=settings.max_audio_seconds,
    )
    if not on_disk:
        expected = model_dir / "1" / spec.model_filename
        raise ModelLoadError(f"{model_dir}: no version directories (expected {expected})")
    return spec, [str(v) for v in select_versions(config, on_disk)]


def select_versions(config: ModelConfig, on_disk: list[int]) -> list[int]:
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


async def start_version(model: ServedModel, settings: Settings, metrics: Metrics) -> None:
    """Create, check and warm every instance's session, start the batcher: READY, or
    UNAVAILABLE with the reason."""
    spec = model.spec
    runtimes: list[OrtRuntime] = []
    try:
        model_file = model.path / spec.model_filename
        if not model_file.is_file():
            raise ModelLoadError(f"{model_file} does not exist")
        threads = spec.intra_op_threads or settings.intra_op_threads
        if threads == 0 and spec.instances > 1:
            # Several sessions each defaulting to every core would oversubscribe the CPU.
            threads = max(1, (os.cpu_count() or 1) // spec.instances)
        for instance_device in spec.instance_devices:
            device = device_for(settings.device, instance_device)
            runtime = await asyncio.to_thread(
                OrtRuntime, model_file, spec, device, intra_op_threads=threads
            )
            runtimes.append(runtime)
            await asyncio.to_thread(runtime.warmup, spec.buckets)
        batcher = DynamicBatcher(spec, runtimes, metrics, model.version)
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
    model.set_state(ModelState.READY)


def device_for(server_device: str, instance_device: str) -> str:
    """--device cpu wins over the config; otherwise KIND_CPU / gpus: [N] win over --device."""
    if server_device == "cpu" or instance_device == "cpu":
        return "cpu"
    if instance_device.startswith("cuda"):
        return instance_device
    return server_device


async def retire(model: ServedModel, *, drain: bool) -> None:
    """Stop serving one version: drain or fail its queue, close its sessions."""
    if model.state is ModelState.READY:
        model.set_state(ModelState.UNLOADING)
    if model.batcher is not None:
        error = ServerShuttingDownError("server is shutting down") if model.shutting_down else None
        await model.batcher.stop(drain=drain, error=error)
    for runtime in model.runtimes:
        runtime.close()
    model.set_state(ModelState.UNAVAILABLE, model.reason or "unloaded")


def failures(name: str, failed: list[ServedModel]) -> str:
    return f"model '{name}' failed to load: " + "; ".join(
        f"version {m.version}: {m.reason}" for m in failed
    )

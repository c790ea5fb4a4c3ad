"""service.repository with the data plane's catalog beside it (which version answers is the
catalog's rule): start-up, failures beside good models, versions, runtime load/unload, reload
without gaps, name validation, change listeners and the model metrics they feed."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pytest

from service.dataplane import Catalog
from service.errors import (
    InvalidInputError,
    ModelLoadError,
    ModelNotFoundError,
    ModelNotReadyError,
    RepositoryError,
    ServerShuttingDownError,
)
from service.metrics import Metrics, ModelSeries
from service.model import ModelState, ServedModel
from service.repository import ModelRepository
from service.settings import Settings
from service.spec import Task
from tests.service import onnx_builders

pytestmark = pytest.mark.timeout(60)


class Repo(ModelRepository):
    """The repository plus the catalog's lookups that these tests drive it through."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, Metrics())
        self.catalog = Catalog(self, settings)

    def get(self, name: str, version: str = "") -> ServedModel:
        return self.catalog.resolve(name, version)

    def find(self, name: str, version: str = "") -> ServedModel | None:
        return self.catalog.find(name, version)

    def list_models(self) -> list[tuple[str, list[ServedModel]]]:
        return [(n, self.versions(n)) for n in self.names()]


def make_repo(root: Path, **changes: object) -> Repo:
    settings = Settings(repository=root, device="cpu", **changes)  # type: ignore[arg-type]
    return Repo(settings)


def image(n: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    x = np.random.default_rng(seed).standard_normal((n, 1, 4, 4)).astype(np.float32)
    return {"input": x}


def corrupt(model_dir: Path, version: int = 1) -> None:
    (model_dir / str(version) / "model.onnx").write_bytes(np.random.default_rng(9).bytes(512))


async def test_missing_repository(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match=r"does not exist.*build-defaults"):
        await make_repo(tmp_path / "nope").start()


async def test_empty_repository(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()  # hidden directories are not models
    with pytest.raises(RepositoryError, match=r"contains no models.*build-defaults"):
        await make_repo(tmp_path).start()


async def test_requested_model_must_exist(tmp_path: Path) -> None:
    onnx_builders.write_model(tmp_path, "good")
    with pytest.raises(RepositoryError, match="ghost"):
        await make_repo(tmp_path, load_models=("good", "ghost")).start()


async def test_corrupt_model_is_unavailable_while_the_good_one_serves(tmp_path: Path) -> None:
    onnx_builders.write_model(tmp_path, "good")
    corrupt(onnx_builders.write_model(tmp_path, "bad"))
    repo = make_repo(tmp_path)
    await repo.start()
    try:
        good = repo.get("good")
        assert good.state is ModelState.READY and good.provider == "CPUExecutionProvider"
        assert good.requested_device == "cpu"
        out = await good.infer(image(2))
        assert out["logits"].shape == (2, 3)
        with pytest.raises(ModelNotReadyError, match="cannot load it") as info:
            repo.get("bad")
        assert "bad" in str(info.value)
        assert repo.index()[0][:3] == ("bad", "1", "UNAVAILABLE")
        assert "ONNX Runtime cannot load it" in repo.index()[0][3]
        assert [n for n, _ in repo.list_models()] == ["bad", "good"]
        assert not repo.is_ready()  # every model was requested, one failed
    finally:
        await repo.close()


async def test_ready_when_every_requested_model_is(tmp_path: Path) -> None:
    onnx_builders.write_model(tmp_path, "good")
    corrupt(onnx_builders.write_model(tmp_path, "bad"))
    repo = make_repo(tmp_path, load_models=("good",))
    assert not repo.is_ready()  # not started
    await repo.start()
    assert repo.is_ready()
    assert ("bad", "", "UNAVAILABLE", "unloaded") in repo.index()
    await repo.close()
    assert not repo.is_ready()


async def test_broken_config_has_no_versions(tmp_path: Path) -> None:
    onnx_builders.write_model(tmp_path, "good")
    broken = onnx_builders.write_model(tmp_path, "broken")
    (broken / "config.pbtxt").write_text("max_batch_size: {{{")
    repo = make_repo(tmp_path)
    await repo.start()
    assert dict(repo.list_models())["broken"] == []
    name, version, state, reason = repo.index()[0]
    assert (name, version, state) == ("broken", "", "UNAVAILABLE") and "config.pbtxt" in reason
    with pytest.raises(ModelNotReadyError, match="not a valid ModelConfig"):
        repo.get("broken")
    with pytest.raises(ModelLoadError):
        await repo.load("broken")
    await repo.unload("broken")  # forgets the failure
    assert ("broken", "", "UNAVAILABLE", "unloaded") in repo.index()
    await repo.close()


@pytest.mark.parametrize(
    ("policy", "loaded"),
    [("", ["2"]), ("version_policy: { all { } }", ["1", "2"]),
     ("version_policy: { specific { versions: [ 1 ] } }", ["1"]),
     ("version_policy: { latest { num_versions: 5 } }", ["1", "2"])],
)  # fmt: skip
async def test_version_policy(tmp_path: Path, policy: str, loaded: list[str]) -> None:
    onnx_builders.write_model(tmp_path, "m", versions=(1, 2), extra_config=policy)
    (tmp_path / "m" / "notes").mkdir()  # not a version
    repo = make_repo(tmp_path)
    await repo.start()
    try:
        assert [m.version for m in dict(repo.list_models())["m"]] == loaded
        assert repo.get("m").version == loaded[-1]  # "" = latest ready
        assert repo.get("m", loaded[0]).version == loaded[0]
        absent = "2" if loaded == ["1"] else "3"
        with pytest.raises(ModelNotFoundError, match=f"no version '{absent}'"):
            repo.get("m", absent)
    finally:
        await repo.close()


async def test_specific_version_missing_on_disk(tmp_path: Path) -> None:
    onnx_builders.write_model(
        tmp_path, "m", extra_config="version_policy: { specific { versions: [ 1, 4 ] } }"
    )
    repo = make_repo(tmp_path)
    await repo.start()
    with pytest.raises(ModelNotReadyError, match=r"versions \[4\]"):
        repo.get("m")
    await repo.close()


async def test_latest_ready_version_is_served_when_newest_fails(tmp_path: Path) -> None:
    model_dir = onnx_builders.write_model(
        tmp_path, "m", versions=(1, 2), extra_config="version_policy: { all { } }"
    )
    corrupt(model_dir, version=2)
    repo = make_repo(tmp_path)
    await repo.start()
    assert repo.get("m").version == "1"
    with pytest.raises(ModelNotReadyError, match="version 2 is UNAVAILABLE"):
        repo.get("m", "2")
    await repo.close()


async def test_unknown_model(tmp_path: Path) -> None:
    onnx_builders.write_model(tmp_path, "a")
    repo = make_repo(tmp_path)
    await repo.start()
    with pytest.raises(ModelNotFoundError, match="model 'zzz' not found; available: a"):
        repo.get("zzz")
    assert repo.find("zzz") is None and repo.find("a") is not None
    with pytest.raises(ModelNotFoundError):
        await repo.load("zzz")
    with pytest.raises(ModelNotFoundError):
        await repo.unload("zzz")
    await repo.close()


async def test_load_and_unload_at_runtime(tmp_path: Path) -> None:
    onnx_builders.write_model(tmp_path, "a")
    onnx_builders.write_model(tmp_path, "b")
    repo = make_repo(tmp_path, load_models=("a",))
    await repo.start()
    try:
        assert ("b", "", "UNAVAILABLE", "unloaded") in repo.index()
        with pytest.raises(ModelNotReadyError, match="not loaded"):
            repo.get("b")
        await repo.load("b")
        b = repo.get("b")
        assert (await b.infer(image()))["logits"].shape == (1, 3)
        assert repo.is_ready()
        # Unload with requests in flight: each finishes or fails cleanly, none hangs.
        pending = [asyncio.create_task(b.infer(image(1, seed))) for seed in range(6)]
        await asyncio.sleep(0)
        await asyncio.wait_for(repo.unload("b"), 10)
        outcomes = await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), 10)
        for outcome in outcomes:
            assert isinstance(outcome, (dict, ModelNotReadyError)), outcome
        assert b.state is ModelState.UNAVAILABLE and b.reason == "unloaded"
        with pytest.raises(ModelNotReadyError, match="not loaded"):
            repo.get("b")
        with pytest.raises(ModelNotReadyError):
            await b.infer(image())
        assert ("b", "", "UNAVAILABLE", "unloaded") in repo.index()
        assert repo.is_ready()  # an explicit unload leaves the required set
        await repo.unload("b")  # unloading an unloaded model is a no-op
    finally:
        await repo.close()


async def test_reload_swaps_without_a_gap(tmp_path: Path) -> None:
    onnx_builders.write_model(tmp_path, "a", delay_us=500)
    repo = make_repo(tmp_path)
    await repo.start()
    old = repo.get("a")
    failures: list[BaseException] = []
    stop = asyncio.Event()

    async def traffic() -> int:
        count = 0
        while not stop.is_set():
            try:
                await repo.get("a").infer(image())
                count += 1
            except Exception as exc:  # any error is a gap
                failures.append(exc)
            await asyncio.sleep(0)
        return count

    clients = [asyncio.create_task(traffic()) for _ in range(3)]
    await asyncio.sleep(0.05)
    await asyncio.wait_for(repo.load("a"), 20)
    await asyncio.sleep(0.05)
    stop.set()
    served = await asyncio.wait_for(asyncio.gather(*clients), 10)
    assert not failures and sum(served) > 0
    new = repo.get("a")
    assert new is not old and new.ready
    assert old.state is ModelState.UNAVAILABLE
    await repo.close()


async def test_failed_reload_keeps_the_old_version(tmp_path: Path) -> None:
    model_dir = onnx_builders.write_model(tmp_path, "a")
    repo = make_repo(tmp_path)
    await repo.start()
    old = repo.get("a")
    corrupt(model_dir)
    with pytest.raises(ModelLoadError, match="previous versions still serve"):
        await repo.load("a")
    assert repo.get("a") is old and old.ready
    (model_dir / "config.pbtxt").write_text("nonsense {")
    with pytest.raises(ModelLoadError, match=r"config\.pbtxt"):
        await repo.load("a")
    assert repo.get("a") is old
    assert (await old.infer(image()))["logits"].shape == (1, 3)
    await repo.close()


async def test_failed_fresh_load_is_recorded(tmp_path: Path) -> None:
    onnx_builders.write_model(tmp_path, "a")
    corrupt(onnx_builders.write_model(tmp_path, "b"))
    repo = make_repo(tmp_path, load_models=("a",))
    await repo.start()
    with pytest.raises(ModelLoadError, match=r"model 'b' failed to load: version 1: .*cannot load"):
        await repo.load("b")
    assert repo.index()[-1][:3] == ("b", "1", "UNAVAILABLE")
    assert repo.is_ready()
    await repo.close()


@pytest.mark.parametrize("name", ["../x", "a/b", "", ".", "..", ".hidden", "a\\b", "/etc", "a\0"])
async def test_path_traversal_names_are_rejected(tmp_path: Path, name: str) -> None:
    root = tmp_path / "repo"
    onnx_builders.write_model(root, "a")
    onnx_builders.write_model(tmp_path, "x")  # a model directory outside the repository
    repo = make_repo(root, load_models=("a",))
    await repo.start()
    with pytest.raises(InvalidInputError, match="invalid model name"):
        await repo.load(name)
    with pytest.raises(InvalidInputError, match="invalid model name"):
        await repo.unload(name)
    with pytest.raises((ModelNotFoundError, ModelNotReadyError)):
        repo.get(name)
    await repo.close()


async def test_symlink_out_of_the_repository_is_rejected(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    onnx_builders.write_model(root, "a")
    onnx_builders.write_model(tmp_path, "outside")
    os.symlink(tmp_path / "outside", root / "outside")
    repo = make_repo(root, load_models=("a",))
    await repo.start()
    with pytest.raises(InvalidInputError):
        await repo.load("outside")
    await repo.close()


async def test_state_hooks_and_metrics(tmp_path: Path) -> None:
    onnx_builders.write_model(tmp_path, "a", instances=2, instance_kind="KIND_AUTO")
    repo = make_repo(tmp_path)
    seen: list[tuple[str, str]] = []
    series = ModelSeries(repo.metrics)

    def hook(name: str) -> None:
        versions = repo.versions(name)
        seen.append((versions[0].version, versions[0].state.value) if versions else ("-", "gone"))

    def publish(name: str) -> None:
        series.update(name, repo.versions(name), repo.error(name))

    def broken_hook(name: str) -> None:
        raise RuntimeError("hook bug")

    repo.on_change += [broken_hook, hook, publish]
    await repo.start()
    assert seen == [("1", "LOADING"), ("1", "READY")]
    model = repo.get("a")
    assert len(model.runtimes) == 2 and model.requested_device == "cpu"
    get = repo.metrics.registry.get_sample_value
    labels = {"model": "a", "version": "1"}
    assert get("convserve_model_ready", labels) == 1
    assert get("convserve_execution_provider", {**labels, "provider": "CPUExecutionProvider"}) == 1
    assert get("convserve_requested_device_info", {**labels, "device": "cpu"}) == 1
    await model.infer(image())
    assert model.stats.inference_count == 1 and model.queue_depth == 0
    await repo.unload("a")
    assert seen[-3:] == [("1", "UNLOADING"), ("1", "UNAVAILABLE"), ("-", "gone")]
    assert get("convserve_model_ready", labels) == 0
    assert (
        get("convserve_execution_provider", {**labels, "provider": "CPUExecutionProvider"}) is None
    )
    await repo.close()


async def test_auto_device_reports_what_runs(tmp_path: Path) -> None:
    onnx_builders.write_model(tmp_path, "a", instance_kind="KIND_AUTO")
    repo = Repo(Settings(repository=tmp_path, device="auto"))
    await repo.start()
    model = repo.get("a")
    assert model.requested_device == "auto"
    assert model.provider in ("CPUExecutionProvider", "CUDAExecutionProvider")
    await repo.close()


async def test_close_without_drain(tmp_path: Path) -> None:
    onnx_builders.write_model(tmp_path, "a", delay_us=200_000, max_batch_size=8)
    repo = make_repo(tmp_path)
    await repo.start()
    model = repo.get("a")
    pending = [asyncio.create_task(model.infer(image())) for _ in range(3)]
    await asyncio.sleep(0.01)  # queued, waiting out the 200 ms batch delay
    await asyncio.wait_for(repo.close(drain=False), 10)
    outcomes = await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), 5)
    assert all(isinstance(o, ServerShuttingDownError) for o in outcomes), outcomes
    with pytest.raises(ServerShuttingDownError):
        repo.get("a")
    with pytest.raises(ServerShuttingDownError):
        await model.infer(image())
    with pytest.raises(ServerShuttingDownError):
        await repo.load("a")


async def test_close_with_drain_answers_queued_requests(tmp_path: Path) -> None:
    onnx_builders.write_model(tmp_path, "a", delay_us=200_000)
    repo = make_repo(tmp_path)
    await repo.start()
    model = repo.get("a")
    pending = [asyncio.create_task(model.infer(image(1, s))) for s in range(3)]
    await asyncio.sleep(0.01)
    await asyncio.wait_for(repo.close(drain=True), 10)
    outcomes = await asyncio.wait_for(asyncio.gather(*pending), 5)
    assert all(o["logits"].shape == (1, 3) for o in outcomes)


async def test_config_is_derived_when_missing(tmp_path: Path) -> None:
    model_dir = onnx_builders.write_model(tmp_path, "auto")
    (model_dir / "config.pbtxt").unlink()
    repo = make_repo(tmp_path)
    await repo.start()
    model = repo.get("auto")
    assert model.spec.max_batch_size == 32 and model.spec.labels is None
    assert (await model.infer(image(3)))["logits"].shape == (3, 3)
    await repo.close()


async def test_default_models(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, default_image_model="img", default_speech_model="sp")
    assert repo.catalog.default_model(Task.IMAGE) == "img"
    assert repo.catalog.default_model(Task.SPEECH) == "sp"
    with pytest.raises(InvalidInputError):
        repo.catalog.default_model(Task.GENERIC)


async def test_reload_replaces_a_model_that_never_served(tmp_path: Path) -> None:
    model_dir = onnx_builders.write_model(tmp_path, "a")
    good = (model_dir / "1" / "model.onnx").read_bytes()
    corrupt(model_dir)
    repo = make_repo(tmp_path)
    await repo.start()
    with pytest.raises(ModelNotReadyError):
        repo.get("a")
    (model_dir / "config.pbtxt").write_text("nonsense {")
    with pytest.raises(ModelLoadError, match=r"config\.pbtxt"):
        await repo.load("a")
    assert repo.index()[0][:3] == ("a", "", "UNAVAILABLE")  # the latest failure, not the old one
    onnx_builders.write_model(tmp_path, "a")
    (model_dir / "1" / "model.onnx").write_bytes(good)
    await repo.load("a")  # fixed on disk: loads
    assert repo.get("a").ready and repo.is_ready()
    await repo.close()

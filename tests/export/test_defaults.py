"""export.defaults: ``build-defaults --quick`` builds the four default models (shipped weights
exported, real ImageNet weights, and real training on small subsets for a model that ships no
weights), the server's config loader accepts every one, and a second run skips everything.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from export.defaults import DEFAULT_MODELS, BuildResult, build_defaults
from export.errors import ExportError
from export.onnx_export import ort_session
from export.repository import has_servable_version, versions

torch.set_num_threads(2)
NAMES = ["mobilenet_v2", "lenet5_fashion", "speech_cnn", "resnet_fashion"]
EXPECTED = {  # name: (input name, input dims, number of labels, task)
    "mobilenet_v2": ("input", [3, 224, 224], 1000, "image_classification"),
    "lenet5_fashion": ("input", [1, 32, 32], 10, "image_classification"),
    "resnet_fashion": ("input", [1, 32, 32], 10, "image_classification"),
    "speech_cnn": ("audio", [16000], 2, "speech_detection"),
}


def quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[BuildResult]]:
    root = tmp_path_factory.mktemp("defaults")
    repo, cache = root / "model_repository", root / "cache"
    results = build_defaults(repo, quick=True, cache_dir=cache, progress=False, log=quiet)
    return repo, cache, results


@pytest.mark.slow
def test_quick_build_produces_the_four_models(built: tuple[Path, Path, list[BuildResult]]) -> None:
    repo, cache, results = built
    assert [m.name for m in DEFAULT_MODELS] == NAMES
    assert sorted(p.name for p in repo.iterdir()) == sorted(NAMES)
    for name, (input_name, dims, n_labels, task) in EXPECTED.items():
        model_dir = repo / name
        assert has_servable_version(model_dir) and versions(model_dir) == [1]
        assert sorted(p.name for p in model_dir.iterdir()) == ["1", "config.pbtxt", "labels.txt"]
        labels = (model_dir / "labels.txt").read_text().splitlines()
        assert len(labels) == n_labels
        text = (model_dir / "config.pbtxt").read_text()
        assert f'name: "{input_name}"' in text and f"dims: [ {', '.join(map(str, dims))} ]" in text
        assert f'string_value: "{task}"' in text
        x = np.random.default_rng().standard_normal((2, *dims)).astype(np.float32)
        out = ort_session(model_dir / "1" / "model.onnx").run(None, {input_name: x})[0]
        assert out.shape == (2, n_labels) and np.isfinite(out).all()
    assert (repo / "speech_cnn" / "labels.txt").read_text() == "no_speech\nspeech\n"
    # A trained speech model gets its decision threshold chosen on its val split (as the shipped
    # one did), not the 0.5 default.
    threshold = re.search(
        r'key: "threshold" value: \{ string_value: "([0-9.]+)"',
        (repo / "speech_cnn" / "config.pbtxt").read_text(),
    )
    assert threshold is not None and 0 < float(threshold.group(1)) < 1
    assert threshold.group(1) != "0.5"
    assert (
        'key: "resize_size" value: { string_value: "256" }'
        in (repo / "mobilenet_v2" / "config.pbtxt").read_text()
    )
    by_name = {r.name: r for r in results}
    assert all(r.status == "built" for r in by_name.values())
    # Real training, even if short: clearly better than chance (10 % / 50 %).
    assert (by_name["lenet5_fashion"].top1 or 0) > 0.4
    assert (by_name["resnet_fashion"].top1 or 0) > 0.25
    assert (by_name["speech_cnn"].top1 or 0) > 0.6
    assert all((r.max_abs_diff or 1) < 1e-4 for r in by_name.values())
    (report,) = (cache / "reports").glob("build-defaults-*.json")
    data = json.loads(report.read_text())
    assert data["quick"] is True and [m["name"] for m in data["models"]] == NAMES


@pytest.mark.slow
def test_the_server_loads_every_default(built: tuple[Path, Path, list[BuildResult]]) -> None:
    config = pytest.importorskip("service.config")
    repo, _, _ = built
    for name, (input_name, dims, n_labels, task) in EXPECTED.items():
        parsed = config.parse_config(repo / name / "config.pbtxt", default_max_queue_size=8)
        spec = config.load_spec(repo / name, parsed, default_max_queue_size=8)
        assert spec.task == task and spec.inputs[0].name == input_name
        assert list(spec.inputs[0].dims) == dims and len(spec.labels) == n_labels


@pytest.mark.slow
def test_second_run_skips_everything(built: tuple[Path, Path, list[BuildResult]]) -> None:
    repo, cache, _ = built
    start = time.perf_counter()
    results = build_defaults(repo, quick=True, cache_dir=cache, progress=False, log=quiet)
    assert time.perf_counter() - start < 5
    assert [r.status for r in results] == ["skipped"] * 4
    assert all(versions(repo / name) == [1] for name in NAMES)


@pytest.mark.slow
def test_without_shipped_weights_it_trains_and_reuses_the_run(tmp_path: Path) -> None:
    repo, cache, empty = tmp_path / "repo", tmp_path / "cache", tmp_path / "no-weights"
    messages: list[str] = []
    (result,) = build_defaults(repo, quick=True, weights_dir=empty, cache_dir=cache,
                               only=("lenet5_fashion",), progress=False,
                               log=messages.append)  # fmt: skip
    assert any("no shipped weights" in m for m in messages)
    assert result.train_seconds > 0 and (result.top1 or 0) > 0.4
    shutil.rmtree(repo / "lenet5_fashion")
    messages.clear()
    start = time.perf_counter()
    (again,) = build_defaults(repo, quick=True, weights_dir=empty, cache_dir=cache,
                              only=("lenet5_fashion",), progress=False,
                              log=messages.append)  # fmt: skip
    assert time.perf_counter() - start < 20  # no re-training
    assert again.status == "built" and again.train_seconds == 0
    assert any("reusing the finished training run" in m for m in messages)
    assert has_servable_version(repo / "lenet5_fashion")


def test_unknown_default_name(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"unknown default model.*lenet5_fashion"):
        build_defaults(tmp_path, only=("nope",), cache_dir=tmp_path, log=quiet)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_repository(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="cannot write to model repository"):
        build_defaults(tmp_path / "file" / "repo", only=("mobilenet_v2",),
                       cache_dir=tmp_path / "cache", log=quiet)  # fmt: skip

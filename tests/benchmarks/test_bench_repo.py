"""benchmarks/bench_repo.py: configuration views that the server reads as intended (the delay
view for convserve-delay, the jpeg_draft view of the before/after run)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from benchmarks import bench_repo
from service.config import read_spec
from service.spec import BatchPolicy
from tests.service.onnx_builders import write_model


def test_set_parameter_replaces_or_adds() -> None:
    value = f"v{random.getrandbits(32)}"
    text = 'name: "m"\nparameters { key: "batch_policy" value: { string_value: "eager" } }\n'
    out = bench_repo.set_parameter(text, "batch_policy", value)
    assert out.count("batch_policy") == 1 and f'string_value: "{value}"' in out
    added = bench_repo.set_parameter(out, "jpeg_draft", "true")
    assert added.startswith(out) and added.count("jpeg_draft") == 1


def test_views_share_the_models_and_change_the_configs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = ("a_model", "b_model")
    monkeypatch.setattr(bench_repo, "MODEL_ORDER", names)
    repo = tmp_path / "repo"
    for name in names:
        write_model(repo, name, "linear")  # names Triton's rule: delay
    view = bench_repo.policy_view(repo, "eager")
    assert view == tmp_path / "repo-eager"
    for name in names:
        assert read_spec(repo / name).batch_policy == BatchPolicy.DELAY
        assert read_spec(view / name).batch_policy == BatchPolicy.EAGER
        assert (view / name / "1").resolve() == (repo / name / "1").resolve()
        assert (view / name / "labels.txt").read_text() == (repo / name / "labels.txt").read_text()
    again = bench_repo.policy_view(repo, "eager")  # rebuilt in place, not nested
    assert sorted(p.name for p in again.iterdir()) == sorted(names)

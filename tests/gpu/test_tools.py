"""The GPU run's CPU-side tools: the requirement-closure check, writing the conv search winner
into a config, and the report's targets."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from benchmarks.gpu import conv_search, envcheck, report
from service.config import read_spec

CONFIG = """name: "m"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ { name: "input" data_type: TYPE_FP32 dims: [ 3, 4, 4 ] } ]
output [ { name: "logits" data_type: TYPE_FP32 dims: [ 5 ] } ]
parameters { key: "task" value: { string_value: "image_classification" } }
"""


def test_closure_names_what_is_missing_or_too_old() -> None:
    found, problems = envcheck.closure(
        [("grpcio>=1.0", "convserve"), ("surely-not-a-real-dist-3141>=1", "convserve"),
         ("numpy<1", "the tests"), ("pytest; extra == 'never'", "convserve")]
    )  # fmt: skip
    assert "grpcio" in found and "typing-extensions" in found  # grpcio's own needs, walked
    assert "pytest" not in found  # marker false: not required
    missing = "surely-not-a-real-dist-3141: missing (wanted by convserve"
    assert any(p.startswith(missing) for p in problems)
    assert any(re.match(r"numpy [\d.]+ does not satisfy <1 \(the tests\)", p) for p in problems)
    assert len(problems) == 2


@pytest.mark.parametrize("earlier", [None, "HEURISTIC", "DEFAULT"])
def test_conv_search_winner_is_written_and_read_back(tmp_path: Path, earlier: str | None) -> None:
    model = tmp_path / "m"
    model.mkdir()
    text = CONFIG
    if earlier:
        value = f'value: {{ string_value: "{earlier}" }}'
        text += f'parameters {{ key: "cudnn_conv_algo_search" {value} }}\n'
    (model / "config.pbtxt").write_text(text)
    conv_search.write_winner(model, "EXHAUSTIVE")
    written = (model / "config.pbtxt").read_text()
    assert written.count("cudnn_conv_algo_search") == 1
    spec = read_spec(model)
    assert spec.parameters["cudnn_conv_algo_search"] == "EXHAUSTIVE"
    assert spec.parameters["task"] == "image_classification"  # the rest untouched
    with pytest.raises(ValueError, match="is not one of"):
        conv_search.write_winner(model, "FASTEST")


def test_targets_hold_the_server_against_its_ceiling() -> None:
    rng = np.random.default_rng()
    ceiling = float(rng.uniform(1000, 9000))
    results = {
        "server_resnet50_fp16": {"best": {"rows_per_s": 0.95 * ceiling}},
        "ceiling_resnet50_fp16": {"ceiling_rows_per_s": ceiling},
        "server_mobilenet_v2_jpeg": {"best": {"rows_per_s": 0.5 * ceiling}},
        "ceiling_mobilenet_v2_jpeg": {"ceiling_rows_per_s": ceiling},
    }
    r50, jpeg = report.targets(results)
    assert r50["value"] == pytest.approx(0.95) and r50["met"] is True
    assert jpeg["value"] == pytest.approx(0.5) and jpeg["met"] is False
    unmeasured = report.targets({"ceiling_resnet50_fp16": {"ceiling_rows_per_s": ceiling}})
    assert [t["met"] for t in unmeasured] == [None, None]


def test_markdown_shows_triton_beside_resnet50() -> None:
    results = {
        "server_resnet50_fp16": {
            "client": "perf_analyzer", "provider": "CUDAExecutionProvider",
            "sweep": [{"concurrency": 64, "rows_per_s": 4321.0, "p50_ms": 14.0, "p99_ms": 20.5},
                      {"concurrency": 256, "skipped": "deadline"}],
            "best": {"concurrency": 64, "rows_per_s": 4321.0, "p50_ms": 14.0, "p99_ms": 20.5},
        },
        "skipped": ["cuda_graphs: 5 s left, needs about 30 s"],
        "errors": {},
    }  # fmt: skip
    results["targets"] = report.targets(results)
    page = report.markdown(results)
    assert "| 64 | 4,321 | 14.0 | 20.5 |" in page
    assert "| 256 | — | — | deadline |" in page
    triton = "| Triton, A100, ONNX Runtime with TensorRT FP16 (published) | 6,127 | — | 46.5 |"
    assert triton in page
    assert "- skipped cuda_graphs: 5 s left" in page

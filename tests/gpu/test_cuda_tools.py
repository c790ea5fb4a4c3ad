"""The GPU measurements' own correctness on a real GPU (their timings are the benchmark's, never
asserted): the conv algo search reaches ONNX Runtime through the config, and a replayed CUDA
graph computes what a plain run computes, on new inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from benchmarks.gpu import conv_search, cuda, cuda_graphs
from service.config import read_spec
from service.runtime import CUDA, choose_providers
from tests.gpu.conftest import private_copy, requires_gpu

pytestmark = requires_gpu


def test_conv_search_winner_reaches_the_cuda_provider(mobilenet: Path, tmp_path: Path) -> None:
    model_dir = private_copy(mobilenet, tmp_path)
    result = conv_search.measure(model_dir, buckets=(1, 4), seconds=0.05)
    assert result["winner"] in conv_search.MODES
    for mode in conv_search.MODES:
        times = result["modes"][mode]["batch_ms_p50"]
        assert set(times) == {1, 4} and all(t > 0 for t in times.values())
    conv_search.write_winner(model_dir, result["winner"])
    spec = read_spec(model_dir)
    providers = choose_providers(spec, "cuda")
    options = next(p[1] for p in providers if isinstance(p, tuple) and p[0] == CUDA)
    assert options["cudnn_conv_algo_search"] == result["winner"]
    session = ort.InferenceSession(str(model_dir / "1" / "model.onnx"), providers=providers)
    assert session.get_providers()[0] == CUDA
    assert session.get_provider_options()[CUDA]["cudnn_conv_algo_search"] == result["winner"]


@pytest.mark.parametrize("buckets", [(1, 4)])
def test_cuda_graph_replays_compute_the_plain_result(
    mobilenet: Path, buckets: tuple[int, ...]
) -> None:
    result = cuda_graphs.measure(mobilenet, buckets=buckets, seconds=0.05)
    for row in result["buckets"]:
        assert "error" not in row, row
        assert row["plain_ms"] > 0 and row["graph_ms"] > 0
        # Same kernels on the same inputs: only a different algorithm choice could differ.
        assert row["rel_error"] <= 1e-3, row
    assert [r["batch"] for r in result["buckets"]] == list(buckets)


def test_resident_buffers_take_new_inputs(mobilenet: Path) -> None:
    """The premise of the graph comparison: updating bound GPU inputs in place changes the
    outputs (a stale binding would make graph and plain agree trivially)."""
    model = cuda.load(mobilenet)
    resident = cuda.Resident(cuda.bare_session(model), model, 2)
    resident.run()
    first = resident.results()["logits"]
    resident.set_inputs(cuda.feed(model, 2, np.random.default_rng()))
    resident.run()
    assert cuda.rel_error(resident.results()["logits"], first) > 1e-2

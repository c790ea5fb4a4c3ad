"""service.session_options: the one source of ONNX Runtime session options, for the server, the
exporter's parity check and the benchmark peers."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import onnxruntime as ort
import pytest

from service import session_options
from service.runtime import OrtRuntime
from tests.service import onnx_builders

ROOT = Path(__file__).resolve().parents[2]


def _peer_module() -> Any:
    """benchmarks/peers/ort_session.py as the peers import it: by path, from their own folder."""
    path = ROOT / "benchmarks" / "peers" / "ort_session.py"
    spec = importlib.util.spec_from_file_location("peer_ort_session", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("threads", [0, 1, 3])
def test_benchmark_peers_get_the_servers_options(threads: int) -> None:
    peer = _peer_module()
    expected = session_options.describe(session_options.session_options(threads))
    assert peer.session_options.describe(peer.session_options.session_options(threads)) == expected
    assert expected["inter_op_num_threads"] == 1 and expected["allow_spinning"] == "0"
    assert expected["intra_op_num_threads"] == threads


def test_the_server_builds_its_sessions_from_them(tmp_path: Path) -> None:
    model_dir = onnx_builders.write_model(tmp_path, "linear")
    runtime = OrtRuntime(model_dir / "1" / "model.onnx", onnx_builders.spec_of(model_dir), "cpu")
    seen: list[ort.SessionOptions] = []
    original = session_options.session_options

    def recording(threads: int = 0) -> ort.SessionOptions:
        seen.append(original(threads))
        return seen[-1]

    import service.runtime as runtime_module

    saved = runtime_module.session_options
    runtime_module.session_options = recording  # type: ignore[assignment]
    try:
        runtime._create(2)
    finally:
        runtime_module.session_options = saved
    assert [session_options.describe(o) for o in seen] == [session_options.describe(original(2))]


def test_cuda_options() -> None:
    options = session_options.cuda_options(1, "EXHAUSTIVE")
    assert options["device_id"] == "1" and options["cudnn_conv_algo_search"] == "EXHAUSTIVE"
    assert options["arena_extend_strategy"] == "kSameAsRequested"

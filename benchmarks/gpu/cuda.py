"""What the GPU measurements share: models, random feeds, sessions on CUDA, timing.

Sessions are built the way the server builds them — `service.runtime.OrtRuntime` for the server's
path (numpy in, IO binding copies to the GPU, outputs back to numpy), `service.session_options`
for the few measurements that need a bare session (inputs and outputs resident on the GPU, CUDA
graphs) — so a measurement cannot drift from what convserve runs.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from service.config import read_spec
from service.runtime import OrtRuntime
from service.session_options import CPU, CUDA, cuda_options, session_options
from service.spec import ModelSpec

DEVICE_TYPE, DEVICE_ID = "cuda", 0  # where Resident keeps its buffers


@dataclasses.dataclass(frozen=True)
class Model:
    name: str
    path: Path  # the newest version's model file
    spec: ModelSpec


def load(model_dir: Path) -> Model:
    spec = read_spec(model_dir)
    version = max((p for p in model_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    return Model(model_dir.name, version / spec.model_filename, spec)


def feed(model: Model, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Fresh standard-normal inputs of one batch (never zeros)."""
    return {
        t.name: rng.standard_normal((batch, *t.dims)).astype(t.np_dtype) for t in model.spec.inputs
    }


def runtime(model: Model, conv_algo_search: str | None = None, device: str = "cuda") -> OrtRuntime:
    """The server's session; `conv_algo_search` overrides the config's parameter. Raises when
    ONNX Runtime does not really run it on CUDA."""
    spec = model.spec
    if conv_algo_search is not None:
        params = {**spec.parameters, "cudnn_conv_algo_search": conv_algo_search}
        spec = dataclasses.replace(spec, parameters=params)
    rt = OrtRuntime(model.path, spec, device)
    if device != "cpu" and rt.provider != CUDA:
        raise RuntimeError(f"{model.name}: ONNX Runtime runs it on {rt.provider}, not CUDA")
    return rt


def bare_session(
    model: Model, conv_algo_search: str = "HEURISTIC", *, cuda_graph: bool = False
) -> ort.InferenceSession:
    options: dict[str, Any] = cuda_options(DEVICE_ID, conv_algo_search)
    if cuda_graph:
        options["enable_cuda_graph"] = "1"
    session = ort.InferenceSession(
        str(model.path), sess_options=session_options(), providers=[(CUDA, options), CPU]
    )
    if session.get_providers()[0] != CUDA:
        raise RuntimeError(f"{model.name}: session on {session.get_providers()[0]}, not CUDA")
    return session


class Resident:
    """One batch size's inputs and outputs held on the GPU, bound once: a run moves no data
    between host and device (what CUDA graphs need: fixed addresses)."""

    def __init__(
        self, session: ort.InferenceSession, model: Model, batch: int, graph_id: int | None = None
    ) -> None:
        self.session = session
        rng = np.random.default_rng()
        self.inputs = {
            name: ort.OrtValue.ortvalue_from_numpy(array, DEVICE_TYPE, DEVICE_ID)
            for name, array in feed(model, batch, rng).items()
        }
        self.outputs = {
            t.name: ort.OrtValue.ortvalue_from_shape_and_type(
                [batch, *t.dims], t.np_dtype, DEVICE_TYPE, DEVICE_ID
            )
            for t in model.spec.outputs
        }
        self.binding = session.io_binding()
        for name, value in self.inputs.items():
            self.binding.bind_ortvalue_input(name, value)
        for name, value in self.outputs.items():
            self.binding.bind_ortvalue_output(name, value)
        self.run_options: ort.RunOptions | None = None
        if graph_id is not None:
            # One session, one captured graph per batch size (ONNX Runtime's annotation id; -1:
            # no capture). Seen with ONNX Runtime 1.31 on the CPU: a run given a RunOptions with
            # a config entry is ~25% faster than one given an empty RunOptions, so a comparison
            # must give both sides an entry.
            self.run_options = ort.RunOptions()
            self.run_options.add_run_config_entry("gpu_graph_id", str(graph_id))

    def run(self) -> None:
        self.session.run_with_iobinding(self.binding, self.run_options)

    def set_inputs(self, arrays: dict[str, np.ndarray]) -> None:
        for name, array in arrays.items():
            self.inputs[name].update_inplace(array)

    def results(self) -> dict[str, np.ndarray]:
        return {name: value.numpy() for name, value in self.outputs.items()}


def timed(
    fn: Callable[[], object], seconds: float, min_runs: int = 5, max_runs: int = 10_000
) -> list[float]:
    """Run `fn` for about `seconds` (at least min_runs, at most max_runs): each run's time."""
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_runs and (
        len(times) < min_runs or time.perf_counter() - start < seconds
    ):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def interleaved(
    fns: dict[str, Callable[[], object]], seconds: float, block: int = 5, min_runs: int = 10
) -> dict[str, list[float]]:
    """Time several variants in alternating blocks of `block` runs for about `seconds` each, so
    that clock, temperature or neighbour drift lands on all of them alike; each run's time."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    start = time.perf_counter()
    while (
        time.perf_counter() - start < seconds * len(fns)
        or min(len(t) for t in times.values()) < min_runs
    ):
        for name, fn in fns.items():
            for _ in range(block):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return times


def summary(batch: int, times: list[float]) -> dict[str, Any]:
    return {
        "batch": batch,
        "runs": len(times),
        "batch_ms_p50": statistics.median(times) * 1e3,
        "rows_per_s": batch * len(times) / sum(times),
    }


def rel_error(got: np.ndarray, ref: np.ndarray) -> float:
    """‖got − ref‖ / ‖ref‖ in float64 (inf when got has a NaN)."""
    got64, ref64 = got.astype(np.float64), ref.astype(np.float64)
    if not np.isfinite(got64).all():
        return float("inf")
    return float(np.linalg.norm(got64 - ref64) / max(np.linalg.norm(ref64), 1e-30))

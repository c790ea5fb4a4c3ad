"""One ONNX Runtime session per model instance: provider choice, checks, warm-up, blocking run.

The provider actually in use is what `session.get_providers()` reports, not what was asked for:
ONNX Runtime silently falls back to CPU when the CUDA libraries or a GPU are missing, so we read
it back, log a warning when CUDA was wanted, and export it as a metric.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from service import datatypes, devices
from service.errors import ModelLoadError, ModelNotReadyError, brief
from service.session_options import CPU, CUDA, TENSORRT, cuda_options, session_options
from service.spec import ModelSpec, TensorSpec

logger = logging.getLogger(__name__)

GPU_PROVIDERS = (CUDA, TENSORRT)
# Automatic intra-op threads: a CPU model whose smallest batch runs faster than this gets one
# thread (OrtRuntime._fit_threads).
SMALL_RUN_S = 200e-6
CONV_ALGO_SEARCHES = ("HEURISTIC", "EXHAUSTIVE", "DEFAULT")


def parse_device(device: str) -> tuple[str, int]:
    """ "cuda:1" → ("cuda", 1); "auto"/"cpu"/"cuda" → (kind, 0)."""
    kind, _, index = device.partition(":")
    return kind, int(index) if index else 0


def _tensorrt_options(device_id: int, params: dict[str, str], model: str) -> dict[str, Any]:
    """Triton's `gpu_execution_accelerator { name: "tensorrt" }` parameters → TRT EP options."""
    options: dict[str, Any] = {
        "device_id": device_id,
        "trt_fp16_enable": params.get("precision_mode", "").upper() == "FP16",
        # Building an engine takes minutes for a big network; cache it across restarts.
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": params.get(
            "trt_engine_cache_path", str(Path(tempfile.gettempdir()) / "convserve-trt" / model)
        ),
    }
    if "max_workspace_size_bytes" in params:
        options["trt_max_workspace_size"] = int(params["max_workspace_size_bytes"])
    return options


def choose_providers(spec: ModelSpec, device: str) -> list[str | tuple[str, dict[str, Any]]]:
    """Providers to ask ONNX Runtime for, best first; CPU is always the last resort."""
    kind, device_id = parse_device(device)
    if kind == "cpu":
        return [CPU]
    if kind == "auto":
        reason = devices.cuda_unavailable_reason()
        if reason is not None:
            devices.announce_cpu_fallback(reason)
            return [CPU]
    available = ort.get_available_providers()
    providers: list[str | tuple[str, dict[str, Any]]] = []
    accelerators = spec.config.optimization.execution_accelerators.gpu_execution_accelerator
    for accelerator in accelerators:
        if accelerator.name.lower() != "tensorrt":
            logger.warning("%s: unknown gpu_execution_accelerator %r", spec.name, accelerator.name)
        elif TENSORRT not in available:
            logger.warning("%s: TensorRT requested but this ONNX Runtime lacks it", spec.name)
        else:
            params = dict(accelerator.parameters)
            providers.append((TENSORRT, _tensorrt_options(device_id, params, spec.name)))
    search = spec.parameters.get("cudnn_conv_algo_search", "HEURISTIC").strip().upper()
    if search not in CONV_ALGO_SEARCHES:
        logger.warning("%s: unknown cudnn_conv_algo_search %r, using HEURISTIC", spec.name, search)
        search = "HEURISTIC"
    providers += [(CUDA, cuda_options(device_id, search)), CPU]
    return providers


class OrtRuntime:
    """An ONNX Runtime session for one instance of one model version.

    `run` is blocking and meant for a worker thread; the batcher gives each instance one batch at
    a time, which is what the preallocated batch buffers rely on.
    """

    def __init__(
        self, model_path: Path, spec: ModelSpec, device: str, *, intra_op_threads: int = 0
    ) -> None:
        self.model_path = model_path
        self.spec = spec
        self.requested_device = device
        self.device_id = parse_device(device)[1]
        providers = choose_providers(spec, device)

        self._providers = providers
        self.intra_op_threads = intra_op_threads
        """0: ONNX Runtime's choice (one per core), until warmup() finds the model too small."""
        self._session: ort.InferenceSession | None = self._create(intra_op_threads)

        self.provider: str = self._session.get_providers()[0]
        wanted_gpu = any(p == CUDA or (isinstance(p, tuple) and p[0] == CUDA) for p in providers)
        if wanted_gpu and self.provider not in GPU_PROVIDERS:
            logger.warning(
                "%s: device %r asked for CUDA but ONNX Runtime runs it on %s "
                "(CUDA/cuDNN libraries or GPU missing; see ONNX Runtime's log above)",
                model_path,
                device,
                self.provider,
            )
        # IO binding lets ORT copy inputs host→device once, on its own stream; on CPU it buys
        # nothing over run().
        self.use_io_binding = self.provider in GPU_PROVIDERS
        self._check_io(self._session)
        self._output_names = [t.name for t in spec.outputs]
        logger.info("%s: session on %s (requested %s)", model_path, self.provider, device)

    @property
    def on_gpu(self) -> bool:
        return self.provider in GPU_PROVIDERS

    def _create(self, intra_op_threads: int) -> ort.InferenceSession:
        try:
            return ort.InferenceSession(
                str(self.model_path),
                sess_options=session_options(intra_op_threads),
                providers=self._providers,
            )
        except Exception as exc:  # ORT raises Fail/InvalidGraph/RuntimeException/...; all mean this
            raise ModelLoadError(
                f"{self.model_path}: ONNX Runtime cannot load it: {brief(exc)}"
            ) from None

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch; blocking. Arrays must already have the model's dtypes and shapes."""
        session = self._session
        if session is None:
            raise ModelNotReadyError(f"{self.model_path}: session is closed")
        if self.use_io_binding:
            binding = session.io_binding()
            for name, array in inputs.items():
                binding.bind_cpu_input(name, np.ascontiguousarray(array))
            for name in self._output_names:
                binding.bind_output(name)  # on the host: replies are built from numpy
            session.run_with_iobinding(binding)
            results = binding.copy_outputs_to_cpu()
        else:
            results = session.run(self._output_names, inputs)
        return dict(zip(self._output_names, results, strict=True))

    def warmup(self, buckets: Iterable[int]) -> None:
        """Run every batch size once with random data, so no request pays for a first shape.

        Known limitation: inputs with a variable (-1) non-batch dimension are not warmed, since
        any size we made up might not be one the model accepts.
        """
        if any(-1 in t.dims or t.datatype == "BYTES" for t in self.spec.inputs):
            logger.info("%s: variable-size or BYTES input, skipping warm-up", self.model_path)
            return
        sizes: list[int | None] = list(buckets) if self.spec.batching else [None]
        if not sizes:
            sizes = [1]  # batching without buckets: at least build the kernels once
        rng = np.random.default_rng(0)
        for size in sizes:
            batch = {t.name: _random(rng, t, size) for t in self.spec.inputs}
            try:
                self.run(batch)
            except Exception as exc:
                raise ModelLoadError(
                    f"{self.model_path}: warm-up with batch size {size} failed: {brief(exc)}"
                ) from None
        if self.intra_op_threads == 0 and not self.on_gpu:
            self._fit_threads({t.name: _random(rng, t, sizes[0]) for t in self.spec.inputs}, sizes)

    def _fit_threads(self, probe: dict[str, np.ndarray], sizes: list[int | None]) -> None:
        """Automatic intra-op threads on CPU: one thread for a model whose smallest batch runs
        in under SMALL_RUN_S with ONNX Runtime's default pool.

        Such a model (LeNet-5: ~40 µs) is all overhead: handing each run to the pool's threads and
        waking them costs more than it saves, and takes a core from the event loop and the
        decoders. Measured on LeNet-5 (2 cores): batch 1 runs 1.8x faster on one thread, and the
        server spends ~15% less CPU per request. Bigger models keep the default pool.
        """
        # The session directly, not run(): tuning is not part of the warm-up's contract.
        session = self._session
        assert session is not None
        times = []
        for _ in range(15):
            start = time.perf_counter()
            session.run(self._output_names, probe)
            times.append(time.perf_counter() - start)
            if times[-1] >= 10 * SMALL_RUN_S:  # clearly big: no need to time it again
                break
        if statistics.median(times) >= SMALL_RUN_S:
            return
        single = self._create(1)
        rng = np.random.default_rng(1)
        for size in sizes:  # warm the new session before it takes traffic
            single.run(
                self._output_names, {t.name: _random(rng, t, size) for t in self.spec.inputs}
            )
        self._session = single
        self.intra_op_threads = 1
        logger.info(
            "%s: %.0f µs per smallest batch: one intra-op thread", self.model_path,
            statistics.median(times) * 1e6,
        )  # fmt: skip

    def close(self) -> None:
        """Drop the session (and with it its GPU memory); later runs raise ModelNotReadyError."""
        self._session = None

    def _check_io(self, session: ort.InferenceSession) -> None:
        """Refuse a config.pbtxt that disagrees with the graph, before the first request does."""
        batching = self.spec.batching
        graph_inputs = {a.name: a for a in session.get_inputs()}
        graph_outputs = {a.name: a for a in session.get_outputs()}
        problems: list[str] = []
        for kind, specs, graph in (
            ("input", self.spec.inputs, graph_inputs),
            ("output", self.spec.outputs, graph_outputs),
        ):
            for spec in specs:
                arg = graph.get(spec.name)
                if arg is None:
                    problems.append(
                        f"{kind} {spec.name!r} is not in the model (it has {', '.join(graph)})"
                    )
                    continue
                problems += _compare(kind, spec, arg.type, list(arg.shape), batching)
        missing = sorted(set(graph_inputs) - {t.name for t in self.spec.inputs})
        if missing:
            problems.append(f"model inputs missing from config.pbtxt: {', '.join(missing)}")
        if problems:
            raise ModelLoadError(f"{self.model_path}: " + "; ".join(problems))


def _compare(
    kind: str, spec: TensorSpec, ort_type: str, shape: list[Any], batching: bool
) -> list[str]:
    problems = []
    known = datatypes.by_onnx_type(ort_type)
    datatype = known.name if known is not None else ort_type
    if datatype != spec.datatype:
        problems.append(
            f"{kind} {spec.name!r} is {datatype} in the model, {spec.datatype} in config"
        )
    if batching:
        if shape and isinstance(shape[0], int) and shape[0] > 0:
            problems.append(
                f"{kind} {spec.name!r} has a fixed batch dimension {shape[0]}; "
                "export it dynamic or set max_batch_size: 0"
            )
        shape = shape[1:]
    if len(shape) != len(spec.dims):
        return [*problems, f"{kind} {spec.name!r} has shape {shape} in the model, dims "
                f"{list(spec.dims)} in config (batch axis excluded: {batching})"]  # fmt: skip
    for want, have in zip(spec.dims, shape, strict=True):
        if want != -1 and isinstance(have, int) and have > 0 and have != want:
            problems.append(
                f"{kind} {spec.name!r} has shape {shape} in the model, dims {list(spec.dims)} "
                "in config"
            )
            break
    return problems


def _random(rng: np.random.Generator, spec: TensorSpec, size: int | None) -> np.ndarray:
    shape = spec.dims if size is None else (size, *spec.dims)
    if spec.np_dtype.kind == "f":
        return rng.standard_normal(shape).astype(spec.np_dtype)
    if spec.np_dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(np.bool_)
    # Small non-negative integers are valid for index-like inputs (Gather, Embedding).
    return rng.integers(0, 2, shape).astype(spec.np_dtype)

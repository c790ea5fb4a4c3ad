"""ONNX Runtime session options: the one place they are chosen.

The server (service/runtime.py), the exporter's parity check (export/onnx_export.py, so parity is
measured with the graph optimisations the server will run) and the benchmark peers
(benchmarks/peers/, which load this file by path from their own virtual environments) all build
sessions from here. It imports nothing from convserve, only onnxruntime and the standard library.
"""

from __future__ import annotations

from typing import Any

import onnxruntime as ort

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"


def session_options(intra_op_threads: int = 0) -> ort.SessionOptions:
    """Options for one serving session; `intra_op_threads` 0 lets ONNX Runtime pick (one per
    core)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = intra_op_threads
    # Parallelism comes from batching and instances, not from running graph branches at once.
    options.inter_op_num_threads = 1
    # Idle ORT threads spin for a while by default; between batches they would burn cores that
    # the decoding threads, the event loop and other instances need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def cuda_options(device_id: int, conv_algo_search: str = "HEURISTIC") -> dict[str, str]:
    """CUDA execution provider options for one device.

    `conv_algo_search`: EXHAUSTIVE benchmarks every cuDNN conv algorithm on each new input shape
    (seconds of stall on the first request of each batch size unless every bucket is warmed);
    HEURISTIC picks from cuDNN's heuristics at once. A model chooses with its config parameter
    `cudnn_conv_algo_search`.
    """
    return {
        "device_id": str(device_id),
        "cudnn_conv_algo_search": conv_algo_search,
        # One stream for copies and compute: no cross-stream races with CPU-bound outputs.
        "do_copy_in_default_stream": "1",
        # Grow the arena by what is asked, not by doubling: a serving process keeps several models
        # resident and doubling strands memory the other sessions could use.
        "arena_extend_strategy": "kSameAsRequested",
    }


def cpu_session(path: str, intra_op_threads: int = 0) -> ort.InferenceSession:
    """A session on the CPU execution provider with the serving options."""
    return ort.InferenceSession(
        path, sess_options=session_options(intra_op_threads), providers=[CPU]
    )


def describe(options: ort.SessionOptions) -> dict[str, Any]:
    """The options that matter, as plain values (tests compare the server's with the peers')."""
    return {
        "graph_optimization_level": str(options.graph_optimization_level),
        "execution_mode": str(options.execution_mode),
        "intra_op_num_threads": options.intra_op_num_threads,
        "inter_op_num_threads": options.inter_op_num_threads,
        "allow_spinning": options.get_session_config_entry("session.intra_op.allow_spinning"),
    }

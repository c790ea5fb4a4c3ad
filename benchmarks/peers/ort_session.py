"""The ONNX Runtime session every peer server builds: convserve's CPU options, copied.

Kept free of convserve imports on purpose: the peers run in their own virtual environments
(.cache/bench-venvs/<peer>), with plain `onnxruntime` (CPU). The options mirror
service/runtime.py's OrtRuntime on the CPU execution provider; keep the two in step.
"""

from __future__ import annotations

import onnxruntime as ort


def cpu_session(path: str, intra_op_threads: int = 0) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])

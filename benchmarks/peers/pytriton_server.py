"""PyTriton serving one ONNX model through ONNX Runtime, for the peer comparison.

Runs in its own environment (.cache/bench-venvs/pytriton: `nvidia-pytriton onnxruntime numpy`):

    .cache/bench-venvs/pytriton/bin/python benchmarks/peers/pytriton_server.py \
        --onnx .cache/bench-repo/lenet5_fashion/1/model.onnx --name lenet5_fashion \
        --input input:1,32,32 --output logits:10 --grpc-port 8101

PyTriton starts a real Triton Inference Server (the binary inside the wheel) whose Python-proxy
backend hands each batch to this process's `infer` function. Triton's dynamic batcher does the
batching with the same max_batch_size and max_queue_delay_microseconds as convserve's config.pbtxt;
one model instance, like convserve's `instance_group { count: 1 }`. The ONNX Runtime session has
convserve's CPU options (service/session_options.py, loaded by peers/ort_session.py). The
server's KServe v2 gRPC endpoint is what perf_analyzer and our loadgen drive; no endpoint is
token-protected (`TritonSecurityConfig(restricted_endpoints=[])`), since perf_analyzer sends no
token.

On this machine the Triton binary needs the Python runtime's lib directory on LD_LIBRARY_PATH
(run.py sets it). Prints `pytriton serving grpc=127.0.0.1:PORT` when the model is bound and
serving; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ort_session import cpu_session


def _tensor(arg: str) -> tuple[str, tuple[int, ...]]:
    name, dims = arg.split(":")
    return name, tuple(int(d) for d in dims.split(","))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--input", required=True, help="NAME:D1,D2 (FP32, batch axis excluded)")
    parser.add_argument("--output", required=True, help="NAME:D1 (FP32, batch axis excluded)")
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-queue-delay-us", type=int, default=1000)
    parser.add_argument("--intra-op-threads", type=int, default=0)
    args = parser.parse_args(argv)

    in_name, in_dims = _tensor(args.input)
    out_name, out_dims = _tensor(args.output)
    session = cpu_session(args.onnx, args.intra_op_threads)

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        (logits,) = session.run([out_name], {in_name: inputs[in_name]})
        return {out_name: logits}

    config = TritonConfig(
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        log_verbose=0,
    )
    security = TritonSecurityConfig(restricted_endpoints=[])
    with Triton(config=config, security_config=security) as triton:
        triton.bind(
            model_name=args.name,
            infer_func=infer,
            inputs=[Tensor(name=in_name, dtype=np.float32, shape=in_dims)],
            outputs=[Tensor(name=out_name, dtype=np.float32, shape=out_dims)],
            config=ModelConfig(
                max_batch_size=args.max_batch_size,
                batcher=DynamicBatcher(max_queue_delay_microseconds=args.max_queue_delay_us),
            ),
            strict=False,
        )
        triton.run()  # starts the server and loads the model; returns once it is ready
        print(f"pytriton serving grpc=127.0.0.1:{args.grpc_port}", flush=True)

        stop = {"now": False}

        def on_signal(signum: int, frame: object) -> None:
            stop["now"] = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        while not stop["now"]:
            signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main())

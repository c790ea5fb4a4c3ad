"""Seldon MLServer serving one ONNX model through ONNX Runtime, for the peer comparison.

Runs in its own environment (.cache/bench-venvs/mlserver: `mlserver onnxruntime numpy
uvloop==0.21.0`):

    .cache/bench-venvs/mlserver/bin/python benchmarks/peers/mlserver_server.py \
        --onnx .cache/bench-repo/lenet5_fashion/1/model.onnx --name lenet5_fashion \
        --grpc-port 8201 --http-port 8202 --metrics-port 8203 --workdir /tmp/mlserver-bench

Writes `settings.json` (ports, `parallel_workers`, debug off) and `<name>/model-settings.json`
(implementation `mlserver_runtime.OnnxRuntimeModel`, `max_batch_size`, `max_batch_time` = the
same batching as convserve's config.pbtxt) into --workdir, then execs `mlserver start`.
MLServer has no ModelConfig RPC, so perf_analyzer cannot drive it: our loadgen does, over the
same KServe v2 gRPC. `parallel_workers: 0` runs inference in the server process;
`parallel_workers: N` in N worker processes (MLServer's default is 1), which needs
uvloop==0.21.0 with MLServer 1.7.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-queue-delay-us", type=int, default=1000)
    parser.add_argument("--parallel-workers", type=int, default=0)
    parser.add_argument("--intra-op-threads", type=int, default=0)
    args = parser.parse_args(argv)

    shutil.rmtree(args.workdir, ignore_errors=True)
    (args.workdir / args.name).mkdir(parents=True)
    settings = {
        "debug": False,
        "parallel_workers": args.parallel_workers,
        "grpc_port": args.grpc_port,
        "http_port": args.http_port,
        "metrics_port": args.metrics_port,
        "host": "127.0.0.1",
        "grpc_max_message_length": 64 * 1024 * 1024,
    }
    model = {
        "name": args.name,
        "implementation": "mlserver_runtime.OnnxRuntimeModel",
        "max_batch_size": args.max_batch_size,
        "max_batch_time": args.max_queue_delay_us / 1e6,
        "parameters": {
            "uri": str(Path(args.onnx).resolve()),
            "extra": {"intra_op_threads": args.intra_op_threads},
        },
    }
    (args.workdir / "settings.json").write_text(json.dumps(settings, indent=2))
    (args.workdir / args.name / "model-settings.json").write_text(json.dumps(model, indent=2))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    mlserver = str(Path(sys.executable).with_name("mlserver"))
    print(f"mlserver: {args.workdir}: grpc=127.0.0.1:{args.grpc_port}", flush=True)
    os.execve(mlserver, [mlserver, "start", str(args.workdir)], env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())

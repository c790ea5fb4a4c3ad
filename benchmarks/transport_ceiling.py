"""The transport ceiling: a grpc.aio KServe v2 server that runs no model.

    python -m benchmarks.transport_ceiling --repository .cache/bench-repo --model lenet5_fashion

It answers ModelInfer with a zero output of the right shape (batch rows taken from the request),
built once per batch size, and implements just enough else for perf_analyzer and our loadgen:
ServerLive/Ready, ModelReady, ServerMetadata, ModelMetadata, ModelConfig (read from the model's
config.pbtxt with convserve's own parser) and an empty ModelStatistics. Same gRPC server options
as convserve, same generated stubs, one event loop: whatever this answers per second is what any
Python grpc.aio server on this machine can at most answer — every request still pays for
HTTP/2, protobuf parsing of the request and serialisation of the reply, and the event loop.

Prints `transport serving grpc=127.0.0.1:PORT` when ready; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
import sys
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from service._proto.inference import grpc_service_pb2 as pb
from service._proto.inference import grpc_service_pb2_grpc as pb_grpc
from service.config import read_spec
from service.spec import ModelSpec

Context = grpc.aio.ServicerContext[Any, Any]


class NullServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, spec: ModelSpec, config: pb.ModelConfigResponse) -> None:
        self.spec = spec
        self.config = config
        self.count = 0
        self._zeros: dict[int, list[bytes]] = {}
        self._metadata = pb.ModelMetadataResponse(
            name=spec.name, versions=["1"], platform="onnxruntime_onnx"
        )
        batch = [-1] if spec.batching else []
        for t in spec.inputs:
            self._metadata.inputs.add(name=t.name, datatype=t.datatype, shape=[*batch, *t.dims])
        for t in spec.outputs:
            self._metadata.outputs.add(name=t.name, datatype=t.datatype, shape=[*batch, *t.dims])

    async def ServerLive(  # noqa: N802
        self, request: pb.ServerLiveRequest, context: Context
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(  # noqa: N802
        self, request: pb.ServerReadyRequest, context: Context
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)

    async def ModelReady(  # noqa: N802
        self, request: pb.ModelReadyRequest, context: Context
    ) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=request.name == self.spec.name)

    async def ServerMetadata(  # noqa: N802
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="transport-ceiling", version="0", extensions=[])

    async def ModelMetadata(  # noqa: N802
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        return self._metadata

    async def ModelConfig(  # noqa: N802
        self, request: pb.ModelConfigRequest, context: Context
    ) -> pb.ModelConfigResponse:
        return self.config

    async def ModelStatistics(  # noqa: N802
        self, request: pb.ModelStatisticsRequest, context: Context
    ) -> pb.ModelStatisticsResponse:
        reply = pb.ModelStatisticsResponse()
        reply.model_stats.add(name=self.spec.name, version="1", inference_count=self.count)
        return reply

    async def ModelInfer(  # noqa: N802
        self, request: pb.ModelInferRequest, context: Context
    ) -> pb.ModelInferResponse:
        rows = int(request.inputs[0].shape[0]) if self.spec.batching and request.inputs else 1
        self.count += rows
        zeros = self._zeros.get(rows)
        if zeros is None:
            zeros = self._zeros[rows] = [
                bytes(4 * rows * math.prod(t.dims)) for t in self.spec.outputs
            ]
        reply = pb.ModelInferResponse(model_name=self.spec.name, model_version="1", id=request.id)
        batch = [rows] if self.spec.batching else []
        for t in self.spec.outputs:
            reply.outputs.add(name=t.name, datatype=t.datatype, shape=[*batch, *t.dims])
        reply.raw_output_contents.extend(zeros)
        return reply


async def serve(args: argparse.Namespace) -> None:
    model_dir = args.repository / args.model
    spec = read_spec(model_dir)
    server = grpc.aio.server(
        options=[
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_concurrent_streams", 256),
            ("grpc.so_reuseport", 0),
        ]
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(
        NullServicer(spec, pb.ModelConfigResponse(config=spec.config)), server
    )
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    await server.start()
    print(f"transport serving grpc=127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(serve(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

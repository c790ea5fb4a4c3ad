"""The running server as `convserve tune` drives it: reachability, a model's config, and loading
a model with a candidate config (Triton's load override) or back from its config.pbtxt.

Every failure is a TuneError with one line a user can act on: the server is not there, the model
is unknown or not loaded, a candidate config was refused.
"""

from __future__ import annotations

import time
from types import TracebackType

import grpc
from google.protobuf import json_format

from service._proto.inference import grpc_service_pb2 as pb
from service._proto.inference import grpc_service_pb2_grpc as pb_grpc
from service._proto.inference import model_config_pb2
from service.client import describe_error
from service.loadgen import GRPC_OPTIONS

LOAD_TIMEOUT_S = 300.0  # building and warming sessions for every batch bucket


class TuneError(Exception):
    """Why tuning cannot go on, in one line."""


class Control:
    """One channel to the server for everything but the load itself."""

    def __init__(self, target: str, timeout: float = 10.0) -> None:
        self.target = target
        self.timeout = timeout
        self._channel = grpc.insecure_channel(target, options=GRPC_OPTIONS)
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)

    def __enter__(self) -> Control:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._channel.close()

    def check(self, model: str) -> model_config_pb2.ModelConfig:
        """The server is up and `model` is READY: its config as the server has it now."""
        try:
            live = self._stub.ServerLive(pb.ServerLiveRequest(), timeout=self.timeout).live
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise TuneError(
                    f"cannot reach a server at {self.target} ({describe_error(exc)}); "
                    "is `convserve serve` running there?"
                ) from None
            raise TuneError(f"{self.target}: {describe_error(exc)}") from None
        if not live:
            raise TuneError(f"the server at {self.target} is not live")
        try:
            config = self._stub.ModelConfig(
                pb.ModelConfigRequest(name=model), timeout=self.timeout
            ).config
            ready = self._stub.ModelReady(pb.ModelReadyRequest(name=model), timeout=self.timeout)
        except grpc.RpcError as exc:
            raise TuneError(f"{self.target}: {describe_error(exc)}") from None
        if not ready.ready:
            raise TuneError(
                f"model {model!r} is not ready on {self.target}; load it first "
                "(RepositoryModelLoad) or fix it (see `convserve models`)"
            )
        return config

    def load(self, model: str, config: model_config_pb2.ModelConfig | None) -> float:
        """(Re)load `model`: with `config` in place of its config.pbtxt, or from config.pbtxt
        when None. The seconds it took; TuneError with the server's reason when it fails."""
        request = pb.RepositoryModelLoadRequest(model_name=model)
        if config is not None:
            request.parameters["config"].string_param = json_format.MessageToJson(config)
        start = time.perf_counter()
        try:
            self._stub.RepositoryModelLoad(request, timeout=LOAD_TIMEOUT_S)
        except grpc.RpcError as exc:
            raise TuneError(describe_error(exc)) from None
        return time.perf_counter() - start

"""A small synchronous client for convserve's task API (convserve.v1) and gRPC health.

    with ConvserveClient("127.0.0.1:8001") as client:
        reply = client.classify(Path("cat.jpg").read_bytes(), top_k=3)
        for c in reply.classes:
            print(c.label, c.score)

    with ConvserveClient("convserve.example:8001", tls_ca=Path("ca.pem")) as client: ...

Methods return the protobuf replies; a failed call raises grpc.RpcError (`.code()`,
`.details()`), which `describe_error` turns into one line.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service._proto.convserve.v1 import inference_pb2 as pb
from service._proto.convserve.v1 import inference_pb2_grpc as pb_grpc

DEFAULT_SERVER: Final = "127.0.0.1:8001"
SERVER_ENV: Final = "CONVSERVE_SERVER"
MAX_MESSAGE_BYTES: Final = 64 * 1024 * 1024


class ConvserveClient:
    """One channel to a convserve server; `timeout` (seconds) applies to every call.

    TLS: `tls_ca` (PEM file of the CA that signed the server's certificate) turns it on;
    `tls_cert` and `tls_key` add a client certificate for mutual TLS; `tls_server_name` overrides
    the name checked against the server's certificate (when dialling an address it does not name).
    Any TLS option without `tls_ca` uses the system's root certificates.
    """

    def __init__(
        self,
        target: str = DEFAULT_SERVER,
        *,
        timeout: float | None = 30.0,
        tls_ca: Path | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        tls_server_name: str = "",
    ) -> None:
        self.target = target
        self.timeout = timeout
        options: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ]
        credentials = channel_credentials(tls_ca, tls_cert, tls_key)
        if tls_server_name:
            if credentials is None:
                credentials = grpc.ssl_channel_credentials()
            options.append(("grpc.ssl_target_name_override", tls_server_name))
        if credentials is None:
            self._channel = grpc.insecure_channel(target, options=options)
        else:
            self._channel = grpc.secure_channel(target, credentials, options=options)
        self._stub = pb_grpc.InferenceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def classify(
        self,
        image: bytes,
        *,
        model: str = "",
        version: str = "",
        top_k: int = 5,
    ) -> pb.ClassifyImageResponse:
        """Top-k classes of one encoded image (the server's default image model if none named)."""
        request = pb.ClassifyImageRequest(model=model, version=version, image=image, top_k=top_k)
        return self._stub.ClassifyImage(request, timeout=self.timeout)

    def classify_tensor(
        self, tensor: np.ndarray, *, model: str = "", version: str = "", top_k: int = 5
    ) -> pb.ClassifyImageResponse:
        """Top-k classes of an already preprocessed float32 tensor (no batch axis)."""
        arr = np.ascontiguousarray(tensor, dtype="<f4")
        request = pb.ClassifyImageRequest(
            model=model,
            version=version,
            top_k=top_k,
            tensor=pb.Tensor(shape=list(arr.shape), raw=arr.tobytes()),
        )
        return self._stub.ClassifyImage(request, timeout=self.timeout)

    def detect_speech(
        self,
        audio: bytes | None = None,
        *,
        samples: Sequence[float] | np.ndarray | None = None,
        sample_rate: int = 0,
        model: str = "",
        version: str = "",
        threshold: float = 0.0,
    ) -> pb.DetectSpeechResponse:
        """Speech / no-speech for encoded audio (WAV, FLAC, ...) or float samples at sample_rate."""
        if (audio is None) == (samples is None):
            raise ValueError("pass exactly one of audio (bytes) and samples")
        request = pb.DetectSpeechRequest(
            model=model, version=version, threshold=threshold, sample_rate=sample_rate
        )
        if audio is not None:
            request.audio = audio
        else:
            assert samples is not None
            request.samples.extend(np.asarray(samples, dtype=np.float32).tolist())
        return self._stub.DetectSpeech(request, timeout=self.timeout)

    def stream_detect_speech(
        self,
        chunks: Iterable[np.ndarray | bytes],
        *,
        sample_rate: int = 0,
        model: str = "",
        version: str = "",
        threshold: float = 0.0,
    ) -> Iterator[pb.StreamDetectSpeechResponse]:
        """Stream audio chunks (float arrays, or bytes of 16-bit little-endian PCM)."""

        def requests() -> Iterator[pb.StreamDetectSpeechRequest]:
            first = True
            for chunk in chunks:
                message = pb.StreamDetectSpeechRequest()
                if first:
                    message.model, message.version = model, version
                    message.sample_rate, message.threshold = sample_rate, threshold
                    first = False
                if isinstance(chunk, bytes | bytearray):
                    message.pcm_s16le = bytes(chunk)
                else:
                    message.samples.extend(np.asarray(chunk, dtype=np.float32).tolist())
                yield message
            if first:  # no chunks: still send the settings
                yield pb.StreamDetectSpeechRequest(
                    model=model, version=version, sample_rate=sample_rate, threshold=threshold
                )

        yield from self._stub.StreamDetectSpeech(requests(), timeout=self.timeout)

    def list_models(self) -> pb.ListModelsResponse:
        return self._stub.ListModels(pb.ListModelsRequest(), timeout=self.timeout)

    def get_model(self, name: str, version: str = "") -> pb.ModelInfo:
        return self._stub.GetModel(
            pb.GetModelRequest(name=name, version=version), timeout=self.timeout
        )

    def health(self, service: str = "") -> str:
        """grpc.health.v1 status name: SERVING, NOT_SERVING, or SERVICE_UNKNOWN."""
        reply = self._health.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=self.timeout
        )
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> ConvserveClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def channel_credentials(
    ca: Path | None = None, cert: Path | None = None, key: Path | None = None
) -> grpc.ChannelCredentials | None:
    """TLS credentials for a channel, or None (plaintext) when no file is given.

    Raises ValueError when only one of cert and key is given, OSError when a file is unreadable.
    """
    if (cert is None) != (key is None):
        raise ValueError("a client certificate needs both --tls-cert and --tls-key")
    if ca is None and cert is None:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=None if ca is None else ca.read_bytes(),
        private_key=None if key is None else key.read_bytes(),
        certificate_chain=None if cert is None else cert.read_bytes(),
    )


def describe_error(exc: grpc.RpcError) -> str:
    """One line for a failed call: `NOT_FOUND: unknown model 'x'`."""
    code = exc.code() if isinstance(exc, grpc.Call) else None
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    name = code.name if code is not None else "ERROR"
    return f"{name}: {(details or '').strip() or 'no details'}".splitlines()[0]

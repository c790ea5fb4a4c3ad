"""convserve's exception tree; every domain error carries the gRPC status it maps to.

    ConvserveError                 INTERNAL (base; anything unexpected)
    ├── InvalidInputError          INVALID_ARGUMENT: undecodable, oversized or wrong-shape input
    ├── SettingsError              INVALID_ARGUMENT: a bad flag or CONVSERVE_* variable
    ├── ModelNotFoundError         NOT_FOUND: unknown model or version
    ├── ModelNotReadyError         UNAVAILABLE: model loading, unloading, unloaded or failed
    ├── ModelLoadError             UNAVAILABLE: a model (or its config) failed to load
    ├── ServerShuttingDownError    UNAVAILABLE: draining after SIGTERM
    ├── QueueFullError             RESOURCE_EXHAUSTED: the model's batch queue is full
    ├── DeadlineExceededError      DEADLINE_EXCEEDED: the deadline passed while queued
    ├── RepositoryError            INTERNAL: start-up found no usable model repository
    └── InferenceError             INTERNAL: ONNX Runtime failed on a batch

`to_status` is the single translation point from an exception to a gRPC status and message: the
message of a domain error is meant for the client; anything else becomes INTERNAL with a generic
message, and the caller logs the traceback. `InferenceError` messages are written by the batcher
to be safe for clients ("inference failed for model X version Y"): ONNX Runtime's own text, which
can name files and kernels, stays in the log.
"""

from __future__ import annotations

import asyncio

import grpc

INTERNAL_MESSAGE = "internal error (see server log)"


class ConvserveError(Exception):
    """Base of every error convserve raises on purpose; `status` is its gRPC status code."""

    status: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidInputError(ConvserveError):
    status = grpc.StatusCode.INVALID_ARGUMENT


class SettingsError(ConvserveError):
    status = grpc.StatusCode.INVALID_ARGUMENT


class ModelNotFoundError(ConvserveError):
    status = grpc.StatusCode.NOT_FOUND


class ModelNotReadyError(ConvserveError):
    status = grpc.StatusCode.UNAVAILABLE


class ModelLoadError(ConvserveError):
    status = grpc.StatusCode.UNAVAILABLE


class ServerShuttingDownError(ConvserveError):
    status = grpc.StatusCode.UNAVAILABLE


class QueueFullError(ConvserveError):
    status = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceededError(ConvserveError):
    status = grpc.StatusCode.DEADLINE_EXCEEDED


class RepositoryError(ConvserveError):
    status = grpc.StatusCode.INTERNAL


class InferenceError(ConvserveError):
    status = grpc.StatusCode.INTERNAL


# Foreign exceptions with a meaning of their own; checked in order, first match wins. Everything
# not here and not a ConvserveError is a bug, reported as INTERNAL with a generic message.
_FOREIGN: tuple[tuple[type[BaseException], grpc.StatusCode, str], ...] = (
    (asyncio.CancelledError, grpc.StatusCode.CANCELLED, "request cancelled"),
)


def to_status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """Map an exception to the gRPC status code and message a client should see."""
    if isinstance(exc, ConvserveError):
        # An empty message would leave the client with a bare code; name the error instead.
        return exc.status, str(exc) or type(exc).__name__
    for kind, code, message in _FOREIGN:
        if isinstance(exc, kind):
            return code, message
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE


def brief(exc: BaseException, limit: int = 500) -> str:
    """The first line of an exception's text, cut at `limit` characters (ONNX Runtime's errors
    repeat the whole graph and can run to pages); the type name when it has no text."""
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else type(exc).__name__

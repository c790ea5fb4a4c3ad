"""convserve's exception tree; every domain error carries the gRPC status it maps to.

    ConvserveError                 INTERNAL (base; anything unexpected)
    ├── InvalidInputError          INVALID_ARGUMENT: undecodable, oversized or wrong-shape input
    ├── SettingsError              INVALID_ARGUMENT: a bad flag or CONVSERVE_* variable
    ├── ModelNotFoundError         NOT_FOUND: unknown model or version
    ├── ModelNotReadyError         UNAVAILABLE: model loading, unloading, unloaded or failed
    ├── ModelLoadError             UNAVAILABLE: a model (or its config) failed to load
    ├── ServerShuttingDownError    UNAVAILABLE: draining after SIGTERM
    ├── QueueFullError             RESOURCE_EXHAUSTED: the model's batch queue is full
    ├── MessageTooLargeError       RESOURCE_EXHAUSTED (HTTP 413): a request body over the limit
    ├── DeadlineExceededError      DEADLINE_EXCEEDED: the deadline passed while queued
    ├── RepositoryError            INTERNAL: start-up found no usable model repository
    └── InferenceError             INTERNAL: ONNX Runtime failed on a batch

`to_status` is the single translation point from an exception to a gRPC status and message: the
message of a domain error is meant for the client; anything else becomes INTERNAL with a generic
message, and the caller logs the traceback. HTTP answers the same status through one table,
`HTTP_STATUS` (gRPC status → HTTP status, as grpc-gateway maps them); a request body over
--max-message-bytes is the one refinement (413, where gRPC says RESOURCE_EXHAUSTED).
`InferenceError` messages are written by the batcher to be safe for clients ("inference failed
for model X version Y"): ONNX Runtime's own text, which can name files and kernels, stays in the
log.
"""

from __future__ import annotations

import asyncio

import grpc

INTERNAL_MESSAGE = "internal error (see server log)"


class ConvserveError(Exception):
    """Base of every error convserve raises on purpose; `status` is its gRPC status code and
    `http_status`, when set, refines what HTTP_STATUS would answer."""

    status: grpc.StatusCode = grpc.StatusCode.INTERNAL
    http_status: int | None = None


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


class MessageTooLargeError(ConvserveError):
    """An HTTP request body above --max-message-bytes (gRPC refuses those in its transport)."""

    status = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 413


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


# gRPC status -> HTTP status for the REST routes (the mapping grpc-gateway and Google APIs use).
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


def to_http_status(exc: BaseException) -> tuple[int, grpc.StatusCode, str]:
    """(HTTP status, gRPC status, message) for `exc`: the gRPC answer, through HTTP_STATUS."""
    code, message = to_status(exc)
    refined = exc.http_status if isinstance(exc, ConvserveError) else None
    return refined or HTTP_STATUS[code], code, message


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

"""What every HTTP route shares: call accounting, error answers, bodies, JSON.

`endpoint(method)` wraps a route like service.servicers.rpc wraps a gRPC handler: one
`service.calls.Call` per request (admission, in-flight gauge, request metrics under the same
method names as the gRPC RPCs, so one dashboard covers both protocols), and any exception
becomes the gRPC status's HTTP answer (service.errors.HTTP_STATUS) with a JSON body
`{"error": message}` — INTERNAL ones with the generic message, the traceback in the log.

The wrapper reads the body (bounded, decompressed) and hands it to the route. For a route that
waits on inference (`watch=True`), it also watches the connection: a client that goes away
cancels its request, which leaves the batch queue and is counted CANCELLED, as over gRPC.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from starlette.requests import Request
from starlette.responses import Response

from service.calls import Admission, Call, CallMetrics, translate
from service.dataplane import DataPlane
from service.errors import HTTP_STATUS, InvalidInputError, MessageTooLargeError, to_http_status

_INT64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}


@dataclass(frozen=True)
class HttpContext:
    """What the routes work with; one per server, in `app.state.ctx`."""

    plane: DataPlane
    calls: CallMetrics | None
    admission: Admission | None
    max_body_bytes: int


Route = Callable[[HttpContext, Request, bytes], Awaitable[Response]]


def endpoint(
    method: str, *, watch: bool = False
) -> Callable[[Route], Callable[[Request], Awaitable[Response]]]:
    """Wrap a route; `method` is the gRPC RPC it corresponds to (metrics, logs)."""

    def wrap(route: Route) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(route)
        async def handle(request: Request) -> Response:
            ctx: HttpContext = request.app.state.ctx
            call = Call(ctx.calls, method)
            status = "OK"
            try:
                call.admit(ctx.admission)
                body = await read_body(ctx, request)
                if not watch:
                    return await route(ctx, request, body)
                return await _unless_gone(request, route(ctx, request, body))
            except _ClientGoneError:
                status = "CANCELLED"
                return Response(status_code=499)  # nobody reads it: the client is gone
            except asyncio.CancelledError:
                status = "CANCELLED"
                raise
            except Exception as exc:
                http, code, message = to_http_status(exc)
                translate(exc, method)  # logs INTERNAL with its traceback
                status = code.name
                return json_response({"error": message}, http)
            finally:
                call.finish(status)

        return handle

    return wrap


class _ClientGoneError(Exception):
    """The client disconnected before its answer was ready."""


async def _unless_gone(request: Request, work: Awaitable[Response]) -> Response:
    """`work`, cancelled if the client disconnects first (_ClientGoneError then)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    raise _ClientGoneError


async def _disconnect(request: Request) -> None:
    """Returns when the client disconnects (the body is read: receive() has nothing else)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def json_response(document: Any, status: int = 200) -> Response:
    body = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(body, status, media_type="application/json")


def message_json(message: Message) -> dict[str, Any]:
    """A protobuf message as JSON with its .proto field names and every field present, 64-bit
    integers as numbers (protobuf's mapping writes them as strings; Triton's HTTP API and its
    clients use numbers)."""
    document = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    _numbers(message, document)
    return document


def _numbers(message: Message, document: dict[str, Any]) -> None:
    field: Any
    for field in message.DESCRIPTOR.fields:
        key = field.name
        if key not in document:
            continue
        value = getattr(message, key)
        if field.type in _INT64:
            document[key] = [int(v) for v in value] if _repeated(field) else int(value)
        elif field.message_type is not None and field.message_type.GetOptions().map_entry:
            entry = field.message_type.fields_by_name["value"]
            if entry.message_type is not None:
                for k, v in value.items():
                    _numbers(v, document[key][str(k)])
            elif entry.type in _INT64:
                document[key] = {k: int(v) for k, v in document[key].items()}
        elif field.message_type is not None:
            if _repeated(field):
                for item, item_doc in zip(value, document[key], strict=True):
                    _numbers(item, item_doc)
            else:
                _numbers(value, document[key])


def _repeated(field: Any) -> bool:
    return bool(field.is_repeated)


async def read_body(ctx: HttpContext, request: Request) -> bytes:
    """The request body, decompressed (Content-Encoding gzip/deflate), at most max_body_bytes."""
    limit = ctx.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise MessageTooLargeError(_too_large(int(declared), limit))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise MessageTooLargeError(_too_large(size, limit))
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise InvalidInputError(f"Content-Encoding {encoding!r} is not supported (gzip, deflate)")
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        plain = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInputError(f"body is not valid {encoding} data: {exc}") from None
    if len(plain) > limit or inflater.unconsumed_tail:
        raise MessageTooLargeError(_too_large(len(plain), limit, "decompressed "))
    return plain


def _too_large(size: int, limit: int, what: str = "") -> str:
    return (
        f"{what}request body is {size} bytes, above the limit of {limit} (raise "
        "--max-message-bytes)"
    )


def deadline(timeout_us: object) -> float | None:
    """Triton's `timeout` request parameter (microseconds) -> a time.monotonic() deadline."""
    if timeout_us is None:
        return None
    if isinstance(timeout_us, bool) or not isinstance(timeout_us, int) or timeout_us <= 0:
        raise InvalidInputError(
            f"timeout must be a positive number of microseconds, got {timeout_us!r}"
        )
    return time.monotonic() + timeout_us / 1e6


def query(
    request: Request, key: str, kind: type[int] | type[float] | type[str], default: Any
) -> Any:
    raw = request.query_params.get(key)
    if raw is None or raw == "":
        return default
    try:
        return kind(raw)
    except ValueError:
        raise InvalidInputError(
            f"query parameter {key} must be {kind.__name__}, got {raw!r}"
        ) from None


__all__ = ["HTTP_STATUS", "HttpContext", "endpoint", "json_response", "message_json", "read_body"]

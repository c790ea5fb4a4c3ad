"""The one wrapper every gRPC handler goes through: call accounting, error translation,
cancellation — the same for unary and streaming handlers.

    class KServeServicer(Servicer, pb_grpc.GRPCInferenceServiceServicer):
        @rpc
        async def ModelInfer(self, request, context): ...

For each call, `_Scope`
  * opens a `service.calls.Call` (admission, in-flight gauge, request metrics by model, method
    and final gRPC status); once the server drains, new calls are refused with UNAVAILABLE before
    their handler runs;
  * turns any exception into a gRPC status with `service.errors.to_status` (the single
    translation table) and aborts the call with it. INTERNAL errors have their traceback logged
    and only the generic message is sent;
  * lets cancellation (client went away, deadline passed) propagate, so that whatever the handler
    awaits (a queued inference) is cancelled too, and records it as CANCELLED or DEADLINE_EXCEEDED.

`wrapped_method(fn)` tells whether a handler went through `rpc`; a test checks every method of
both services against it.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, TypeVar, cast

import grpc

from service.calls import Admission, Call, CallMetrics, translate
from service.dataplane import DataPlane

Handler = TypeVar("Handler", bound=Callable[..., Any])
Context = grpc.aio.ServicerContext[Any, Any]
_MARK = "__convserve_rpc__"


class Servicer:
    """What every servicer has: the data plane it translates for, and the call accounting."""

    def __init__(
        self, plane: DataPlane, calls: CallMetrics | None, admission: Admission | None
    ) -> None:
        self.plane = plane
        self.calls = calls
        self.admission = admission


class _Scope:
    """One call's accounting and error translation, around its handler."""

    def __init__(self, servicer: Servicer, method: str, context: Context) -> None:
        self.servicer = servicer
        self.method = method
        self.context = context
        self.call = Call(servicer.calls, method)

    async def __aenter__(self) -> None:
        try:
            self.call.admit(self.servicer.admission)
        except Exception as exc:
            await self.__aexit__(type(exc), exc, exc.__traceback__)  # aborts: raises AbortError

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        status = "OK"
        try:
            if isinstance(exc, grpc.aio.AbortError):
                status = _code_name(self.context.code())
            elif isinstance(exc, asyncio.CancelledError | GeneratorExit):
                status = _cancel_status(self.context)
            elif isinstance(exc, Exception):
                code, message = translate(exc, self.method)
                status = code.name
                await self.context.abort(code, message)
        finally:
            self.call.finish(status)
        return False


def rpc(handler: Handler) -> Handler:
    """Wrap a servicer method; see the module docstring."""
    method = handler.__name__
    wrapper: Callable[..., Any]
    if inspect.isasyncgenfunction(handler):

        @functools.wraps(handler)
        async def stream(self: Servicer, request: Any, context: Context) -> AsyncIterator[Any]:
            async with _Scope(self, method, context):
                async for response in handler(self, request, context):
                    yield response

        wrapper = stream
    elif inspect.iscoroutinefunction(handler):

        @functools.wraps(handler)
        async def unary(self: Servicer, request: Any, context: Context) -> Any:
            async with _Scope(self, method, context):
                return await handler(self, request, context)

        wrapper = unary
    else:
        raise TypeError(f"{method}: rpc() wraps async handlers only")
    setattr(wrapper, _MARK, method)
    return cast(Handler, wrapper)


def wrapped_method(fn: object) -> str | None:
    """The RPC name `rpc` recorded on a wrapped handler, or None when it was not wrapped."""
    name = getattr(fn, _MARK, None)
    return name if isinstance(name, str) else None


def _code_name(code: Any) -> str:
    if isinstance(code, grpc.StatusCode):
        return code.name
    for candidate in grpc.StatusCode:
        if candidate.value[0] == code:
            return candidate.name
    return grpc.StatusCode.UNKNOWN.name


def _cancel_status(context: Context) -> str:
    """A cancelled handler: the deadline passed (time left <= 0) or the client cancelled."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED.name
    return grpc.StatusCode.CANCELLED.name


def deadline_of(context: Context) -> float | None:
    """The client's deadline on the time.monotonic() clock (what the data plane takes)."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining

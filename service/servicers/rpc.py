"""The one wrapper every RPC handler goes through: metrics, error translation, cancellation.

    @rpc
    async def ClassifyImage(self, request, context): ...

For each call it
  * counts the call in `convserve_inflight_requests{model}` while it runs, then records
    `convserve_requests_total` and `convserve_request_duration_seconds` by model, method and
    final gRPC status;
  * turns any exception into a gRPC status with `service.errors.to_status` (the single
    translation table) and aborts the call with it. INTERNAL errors have their traceback logged
    and only the generic message sent;
  * lets cancellation (client went away, deadline passed) propagate, so that whatever the handler
    awaits (a queued inference) is cancelled too, and records it as CANCELLED or DEADLINE_EXCEEDED.

Graceful shutdown: a servicer with an `admission` attribute (an `Admission`, shared by every
servicer of a server) has its calls counted there; once the server closes admission, new calls
are refused with UNAVAILABLE ("server is shutting down") before their handler runs, while the ones
already running finish. The server waits for that (`Admission.drained`) before stopping gRPC itself,
because gRPC's own shutdown *cancels* the calls that reached the server but were not yet picked up
by the application; refusing them first gives those clients a clean, retryable UNAVAILABLE.
ServerLive and ServerReady are always answered (ready turns false), for probes.

The model label starts empty and is set by the handler with `set_model(name)` once the request's
model has been resolved, so unknown names a client sends never become label values.

Handlers may be coroutines (unary responses) or async generators (streaming responses); the
servicer object must have a `metrics` attribute (a `service.metrics.Metrics`, or None in tests).
`wrapped_method(fn)` tells whether a handler went through `rpc`; a test checks every method of
both services against it.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar, cast

import grpc

from service.errors import ServerShuttingDownError, to_status
from service.metrics import Metrics

logger = logging.getLogger("service.rpc")

Handler = TypeVar("Handler", bound=Callable[..., Any])
Context = grpc.aio.ServicerContext[Any, Any]
_MARK = "__convserve_rpc__"


class _Call:
    """Book-keeping for one RPC; reachable from the handler through a context variable."""

    def __init__(self, metrics: Metrics | None, method: str) -> None:
        self.metrics = metrics
        self.method = method
        self.model = ""
        self.finished = False
        self.admission: Admission | None = None
        self.start = time.perf_counter()
        if metrics is not None:
            metrics.inflight_requests.labels(model="").inc()

    def set_model(self, name: str) -> None:
        # After finish() (a straggling sub-task of a stream) the gauge must not move any more.
        if name == self.model or self.finished:
            return
        if self.metrics is not None:
            # Move the in-flight count to the resolved model, so inc and dec use one label.
            self.metrics.inflight_requests.labels(model=self.model).dec()
            self.metrics.inflight_requests.labels(model=name).inc()
        self.model = name

    def admit(self, admission: Admission | None) -> None:
        """Count the call in `admission` (ServerShuttingDownError when it is closing)."""
        if admission is not None and admission.enter(self.method):
            self.admission = admission

    def finish(self, status: str) -> None:
        self.finished = True
        if self.admission is not None:
            self.admission.leave()
            self.admission = None
        if self.metrics is None:
            return
        m = self.metrics
        elapsed = time.perf_counter() - self.start
        m.inflight_requests.labels(model=self.model).dec()
        m.requests_total.labels(model=self.model, method=self.method, status=status).inc()
        m.request_duration_seconds.labels(
            model=self.model, method=self.method, status=status
        ).observe(elapsed)


class Admission:
    """RPCs in flight, and whether new ones are still admitted (see the module docstring)."""

    # Probes keep getting answers while the server drains (ServerReady says false).
    ALWAYS_ANSWERED = frozenset({"ServerLive", "ServerReady"})

    def __init__(self) -> None:
        self.active = 0
        self.closing = False
        self.last_arrival = time.monotonic()

    def enter(self, method: str) -> bool:
        """Count a call in; False for one that is not counted (a probe). Raises
        ServerShuttingDownError once closing."""
        if method in self.ALWAYS_ANSWERED:
            return False
        self.last_arrival = time.monotonic()
        if self.closing:
            raise ServerShuttingDownError("server is shutting down; retry on another replica")
        self.active += 1
        return True

    def leave(self) -> None:
        self.active -= 1

    async def drained(self, deadline: float, *, quiet: float = 0.2, poll: float = 0.02) -> bool:
        """Close admission; wait until no call is running and none has arrived for `quiet`
        seconds (the clients have noticed), or until `deadline` (monotonic). True if drained."""
        self.closing = True
        while True:
            now = time.monotonic()
            if self.active == 0 and now - self.last_arrival >= quiet:
                return True
            if now >= deadline:
                return False
            await asyncio.sleep(min(poll, max(deadline - now, 0.0)))


_current: contextvars.ContextVar[_Call | None] = contextvars.ContextVar(
    "convserve_rpc_call", default=None
)


def set_model(name: str) -> None:
    """Label the current RPC's metrics with the model it resolved to (no-op outside an RPC)."""
    call = _current.get()
    if call is not None:
        call.set_model(name)


def current_model() -> str:
    call = _current.get()
    return "" if call is None else call.model


def rpc(handler: Handler) -> Handler:
    """Wrap a servicer method; see the module docstring."""
    method = handler.__name__
    if inspect.isasyncgenfunction(handler):

        @functools.wraps(handler)
        async def stream(self: Any, request: Any, context: Context) -> AsyncIterator[Any]:
            call = _begin(self, method)
            status = "OK"
            try:
                call.admit(getattr(self, "admission", None))
                async for response in handler(self, request, context):
                    yield response
            except grpc.aio.AbortError:
                status = _code_name(context.code())
                raise
            except (asyncio.CancelledError, GeneratorExit):
                status = _cancel_status(context)
                raise
            except Exception as exc:
                code, message = translate(exc, method)
                status = code.name
                await context.abort(code, message)
            finally:
                call.finish(status)
                _current.set(None)

        wrapper: Callable[..., Any] = stream
    elif inspect.iscoroutinefunction(handler):

        @functools.wraps(handler)
        async def unary(self: Any, request: Any, context: Context) -> Any:
            call = _begin(self, method)
            status = "OK"
            try:
                call.admit(getattr(self, "admission", None))
                return await handler(self, request, context)
            except grpc.aio.AbortError:
                status = _code_name(context.code())
                raise
            except asyncio.CancelledError:
                status = _cancel_status(context)
                raise
            except Exception as exc:
                code, message = translate(exc, method)
                status = code.name
                await context.abort(code, message)
            finally:
                call.finish(status)
                _current.set(None)

        wrapper = unary
    else:
        raise TypeError(f"{method}: rpc() wraps async handlers only")
    setattr(wrapper, _MARK, method)
    return cast(Handler, wrapper)


def wrapped_method(fn: object) -> str | None:
    """The RPC name `rpc` recorded on a wrapped handler, or None when it was not wrapped."""
    name = getattr(fn, _MARK, None)
    return name if isinstance(name, str) else None


def _begin(servicer: Any, method: str) -> _Call:
    call = _Call(getattr(servicer, "metrics", None), method)
    _current.set(call)
    return call


def translate(exc: Exception, method: str) -> tuple[grpc.StatusCode, str]:
    """The status for `exc` (errors.to_status); INTERNAL ones are logged with their traceback."""
    code, message = to_status(exc)
    if code is grpc.StatusCode.INTERNAL:
        logger.error("%s failed (model %r)", method, current_model(), exc_info=exc)
    else:
        logger.debug("%s: %s %s", method, code.name, message)
    return code, message


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
    """The client's deadline on the time.monotonic() clock (what ServedModel.infer takes)."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining

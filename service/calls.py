"""Per-call bookkeeping shared by both wire protocols: admission, the model label, request metrics.

Every RPC and every HTTP request is one `Call`:
  * it is admitted by the server's `Admission` (new calls are refused with
    ServerShuttingDownError once the server drains; probes are always answered);
  * it counts in `convserve_inflight_requests{model}` while it runs, and at the end records
    `convserve_requests_total` and `convserve_request_duration_seconds` by model, method and
    final status (gRPC status names for both protocols, so one dashboard covers both);
  * its model label starts empty and is set by the data plane with `set_model(name)` once the
    request's model has been resolved, so unknown names a client sends never become label values.

The metric children are cached per label set (`labels()` costs a lock and a dictionary lookup),
and the in-flight gauge reads plain per-model counts when scraped instead of taking a lock three
times per call: every call is handled on the event loop, so the counts need none.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from typing import Any

import grpc
from prometheus_client.metrics import MetricWrapperBase

from service.errors import ServerShuttingDownError, to_status
from service.metrics import Metrics

logger = logging.getLogger(__name__)


class Admission:
    """Calls in flight, and whether new ones are still admitted.

    The server closes admission on SIGTERM and waits (`drained`) until the calls it admitted have
    finished, before stopping its transports: gRPC's own shutdown *cancels* the calls that reached
    the server but were not yet picked up by the application; refusing them first gives those
    clients a clean, retryable UNAVAILABLE.
    """

    # Probes keep getting answers while the server drains (readiness says false).
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


class CallMetrics:
    """The request series with their children cached per label set."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics
        self._children: dict[tuple[Any, ...], Any] = {}
        self._inflight: dict[str, int] = {}

    def _child(self, metric: MetricWrapperBase, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def inflight(self, model: str, change: int) -> None:
        count = self._inflight.get(model)
        if count is None:
            count = self._inflight[model] = 0
            self._m.inflight_requests.labels(model).set_function(lambda: self._inflight[model])
        self._inflight[model] = count + change

    def finished(self, model: str, method: str, status: str, seconds: float) -> None:
        self._child(self._m.requests_total, model, method, status).inc()
        self._child(self._m.request_duration_seconds, model, method, status).observe(seconds)


class Call:
    """Book-keeping for one call; reachable from the data plane through a context variable."""

    __slots__ = ("admission", "finished", "method", "metrics", "model", "start")

    def __init__(self, metrics: CallMetrics | None, method: str) -> None:
        self.metrics = metrics
        self.method = method
        self.model = ""
        self.finished = False
        self.admission: Admission | None = None
        self.start = time.perf_counter()
        if metrics is not None:
            metrics.inflight("", 1)
        _current.set(self)

    def set_model(self, name: str) -> None:
        # After finish() (a straggling sub-task of a stream) the gauge must not move any more.
        if name == self.model or self.finished:
            return
        if self.metrics is not None:
            # Move the in-flight count to the resolved model, so inc and dec use one label.
            self.metrics.inflight(self.model, -1)
            self.metrics.inflight(name, 1)
        self.model = name

    def admit(self, admission: Admission | None) -> None:
        """Count the call in `admission` (ServerShuttingDownError when it is closing)."""
        if admission is not None and admission.enter(self.method):
            self.admission = admission

    def finish(self, status: str) -> None:
        self.finished = True
        _current.set(None)
        if self.admission is not None:
            self.admission.leave()
            self.admission = None
        if self.metrics is not None:
            self.metrics.inflight(self.model, -1)
            self.metrics.finished(self.model, self.method, status, time.perf_counter() - self.start)


_current: contextvars.ContextVar[Call | None] = contextvars.ContextVar(
    "convserve_call", default=None
)


def set_model(name: str) -> None:
    """Label the current call's metrics with the model it resolved to (no-op outside a call)."""
    call = _current.get()
    if call is not None:
        call.set_model(name)


def current_model() -> str:
    call = _current.get()
    return "" if call is None else call.model


def translate(exc: BaseException, method: str) -> tuple[grpc.StatusCode, str]:
    """The status for `exc` (errors.to_status); INTERNAL ones are logged with their traceback
    (the client only gets the generic message)."""
    code, message = to_status(exc)
    if code is grpc.StatusCode.INTERNAL:
        logger.error("%s failed (model %r)", method, current_model(), exc_info=exc)
    else:
        logger.debug("%s: %s %s", method, code.name, message)
    return code, message

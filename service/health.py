"""grpc.health.v1.Health (Kubernetes gRPC probes, load balancers), following the repository.

Services: "" (the server), convserve.v1.Inference, inference.GRPCInferenceService — SERVING once
every requested model has a READY version — and one entry per model name, SERVING while that
model has a READY version. `ModelHealth.refresh(name)` is subscribed to the repository's changes.

Watch sends the current status, then every change. At shutdown every service turns NOT_SERVING
for good and each Watch stream ends right after sending it: a watcher learns that this replica is
going, and open Watch streams do not hold the drain for the whole grace period (the reference
servicer keeps them open until the server cancels them).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.model import ModelState, ServedModel
from service.repository import ModelRepository

SERVING: Final = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING: Final = health_pb2.HealthCheckResponse.NOT_SERVING
UNKNOWN: Final = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
Status = Any  # health_pb2.HealthCheckResponse.ServingStatus


class Health(health_pb2_grpc.HealthServicer):  # type: ignore[misc]  # untyped stubs
    """Statuses by service name; Check, Watch, and a final shutdown."""

    def __init__(self) -> None:
        self._status: dict[str, Status] = {}
        self._changed = asyncio.Condition()
        self.shutting_down = False

    def status(self, service: str) -> Status | None:
        return self._status.get(service)

    async def set(self, service: str, status: Status) -> None:
        """Set a service's status (ignored once shutting down: NOT_SERVING is final)."""
        if self.shutting_down or self._status.get(service) == status:
            return
        async with self._changed:
            self._status[service] = status
            self._changed.notify_all()

    async def enter_graceful_shutdown(self) -> None:
        """Every service NOT_SERVING for good; Watch streams send it and end."""
        async with self._changed:
            self.shutting_down = True
            for service in self._status:
                self._status[service] = NOT_SERVING
            self._changed.notify_all()

    async def Check(  # noqa: N802
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthCheckResponse:
        status = self._status.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(  # noqa: N802
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        sent = None
        while True:
            async with self._changed:
                status = self._status.get(request.service, UNKNOWN)
                while status == sent and not self.shutting_down:
                    await self._changed.wait()
                    status = self._status.get(request.service, UNKNOWN)
                # Read with the status, under the lock: a shutdown that comes while the yield
                # below is suspended must still be sent before the stream ends.
                final = self.shutting_down
            if status != sent:
                yield health_pb2.HealthCheckResponse(status=status)
                sent = status
            if final:
                return


class ModelHealth:
    """Keeps `health` equal to the repository: per model, and overall for `services`."""

    def __init__(
        self,
        health: Health,
        repository: ModelRepository,
        services: tuple[str, ...],
        stopping: Callable[[], bool],
    ) -> None:
        self.health = health
        self.repository = repository
        self.services = services
        self._stopping = stopping
        self._background: set[asyncio.Task[None]] = set()

    async def refresh(self, name: str | None = None) -> None:
        """One model's status (all models when None), then the overall one."""
        names = self.repository.names() if name is None else [name]
        for model in names:
            await self.health.set(model, model_status(self.repository.versions(model)))
        ready = self.repository.is_ready() and not self._stopping()
        for service in self.services:
            await self.health.set(service, SERVING if ready else NOT_SERVING)

    def changed(self, name: str) -> None:
        """Repository listener (called on the event loop): refresh in a task of its own."""
        task = asyncio.get_running_loop().create_task(self.refresh(name))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def settle(self) -> None:
        """Wait for the refreshes still running."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)


def model_status(versions: list[ServedModel]) -> Status:
    return SERVING if any(v.state is ModelState.READY for v in versions) else NOT_SERVING

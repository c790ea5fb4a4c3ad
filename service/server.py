"""Server lifecycle: start, serve, drain on SIGTERM.

    start:  check the repository ─▶ bind gRPC (health NOT_SERVING) ─▶ /metrics ─▶ HTTP
            ─▶ load models ─▶ health SERVING (overall and per model) ─▶ print the ready line
    SIGTERM / SIGINT:
            health NOT_SERVING for every service (Watch streams end) ─▶ new requests get
            UNAVAILABLE / 503, in-flight ones finish (and the batchers run what they queued),
            within grace_period_s ─▶ stop gRPC and HTTP ─▶ close the sessions ─▶ stop /metrics
            ─▶ exit 0

gRPC and HTTP are two doors to one data plane (service.dataplane), with one admission (a drain
covers both) and one set of request metrics. TLS applies to the gRPC port (service.tls); HTTP and
/metrics are plain, for use inside the cluster (bind them to private addresses with --http-host
and --metrics-host, or turn HTTP off with --http-port -1).

The ready line on stdout, `convserve serving grpc=HOST:PORT metrics=HOST:PORT http=HOST:PORT`
(port -1 when disabled), is how scripts and tests learn the ports when they asked for port 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Final

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service._proto.convserve.v1 import inference_pb2 as task_pb2
from service._proto.convserve.v1 import inference_pb2_grpc as task_pb2_grpc
from service._proto.inference import grpc_service_pb2 as kserve_pb2
from service._proto.inference import grpc_service_pb2_grpc as kserve_pb2_grpc
from service.calls import Admission, CallMetrics
from service.dataplane import DataPlane
from service.errors import ConvserveError, RepositoryError
from service.health import NOT_SERVING, Health, ModelHealth
from service.http import HttpServer, build_app
from service.metrics import Metrics, ModelSeries
from service.repository import ModelRepository
from service.servicers.kserve import KServeServicer
from service.servicers.task import TaskServicer
from service.settings import Settings
from service.tls import server_credentials, transport_security

logger = logging.getLogger("service.server")

TASK_SERVICE: Final = task_pb2.DESCRIPTOR.services_by_name["Inference"].full_name
KSERVE_SERVICE: Final = kserve_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
HEALTH_SERVICE: Final = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
EXIT_STARTUP_FAILED: Final = 2


class Server:
    """gRPC, HTTP, the repository and the metrics endpoint, as one unit.

    server = await Server(settings).start()   # .grpc_port / .http_port / .metrics_port bound
    ...
    await server.stop()                        # drain within settings.grace_period_s
    """

    def __init__(self, settings: Settings, *, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics if metrics is not None else Metrics()
        self.repository = ModelRepository(settings, self.metrics)
        self.grpc_port = 0
        self.metrics_port = -1
        self.http_port = -1
        self._executor = ThreadPoolExecutor(
            max_workers=settings.preprocess_threads or (os.cpu_count() or 1),
            thread_name_prefix="preprocess",
        )
        self.admission = Admission()
        self.plane = DataPlane(self.repository, settings, self.metrics, self._executor)
        calls = CallMetrics(self.metrics)
        self.task = TaskServicer(self.plane, calls, self.admission)
        self.kserve = KServeServicer(self.plane, calls, self.admission)
        self.health = Health()
        self._model_health = ModelHealth(
            self.health,
            self.repository,
            ("", TASK_SERVICE, KSERVE_SERVICE),
            lambda: self._stopping,
        )
        self._model_series = ModelSeries(self.metrics)
        self.http = HttpServer(
            build_app(self.plane, calls, self.admission, settings.max_message_bytes)
        )
        self._grpc: grpc.aio.Server | None = None
        self._stopping = False
        self._stopped = asyncio.Event()

    @property
    def grpc_address(self) -> str:
        return f"{_host(self.settings.grpc_host)}:{self.grpc_port}"

    @property
    def ready_line(self) -> str:
        """`convserve serving grpc=HOST:PORT metrics=HOST:PORT http=HOST:PORT` (-1: off)."""
        s = self.settings
        metrics = f"{_host(s.metrics_host)}:{self.metrics_port}"
        http = f"{_host(s.http_host)}:{self.http_port}"
        return f"convserve serving grpc={self.grpc_address} metrics={metrics} http={http}"

    async def start(self) -> Server:
        """Bind, load the models and report SERVING; raises RepositoryError on a bad repository.

        On failure everything started so far is stopped again.
        """
        s = self.settings
        _check_repository(s)
        # Health says NOT_SERVING (not unknown) for every service while the models load.
        for service in self._model_health.services:
            await self.health.set(service, NOT_SERVING)
        self.repository.on_change += [self._publish_model, self._model_health.changed]
        self._grpc = self._grpc_server()
        try:
            await self._grpc.start()
            if s.metrics_port >= 0:
                try:
                    self.metrics_port = self.metrics.start_http_server(
                        s.metrics_host, s.metrics_port
                    )
                except OSError as exc:
                    raise ConvserveError(
                        f"cannot bind metrics to {s.metrics_host}:{s.metrics_port}: {exc}"
                    ) from None
            if s.http_port >= 0:
                self.http_port = await self.http.start(s.http_host, s.http_port)
            await self.repository.start()
            self._log_models()
            await self._model_health.refresh()
        except BaseException:
            await self.stop(0)
            raise
        logger.info("gRPC on %s (%s)", self.grpc_address, transport_security(s))
        return self

    def _grpc_server(self) -> grpc.aio.Server:
        s = self.settings
        server = grpc.aio.server(
            options=[
                ("grpc.max_send_message_length", s.max_message_bytes),
                ("grpc.max_receive_message_length", s.max_message_bytes),
                # Per connection (HTTP/2); StreamDetectSpeech is also capped server-wide at
                # the same number, with RESOURCE_EXHAUSTED past it (service.dataplane).
                ("grpc.max_concurrent_streams", s.max_concurrent_streams),
                ("grpc.so_reuseport", 0),
            ]
        )
        task_pb2_grpc.add_InferenceServicer_to_server(self.task, server)
        kserve_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(self.kserve, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (TASK_SERVICE, KSERVE_SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME), server
        )
        address = f"{s.grpc_host}:{s.grpc_port}"
        credentials = server_credentials(s)
        try:
            if credentials is None:
                self.grpc_port = server.add_insecure_port(address)
            else:
                self.grpc_port = server.add_secure_port(address, credentials)
        except RuntimeError as exc:
            raise ConvserveError(
                f"cannot bind gRPC to {s.grpc_host}:{s.grpc_port}: {exc}"
            ) from None
        return server

    def _log_models(self) -> None:
        for name in self.repository.names():
            for v in self.repository.versions(name):
                logger.info(
                    "model %s version %s: %s on %s (requested device %s)%s",
                    name,
                    v.version,
                    v.state.value,
                    v.provider or "-",
                    v.requested_device or "-",
                    f": {v.reason}" if v.reason else "",
                )

    async def stop(self, grace: float | None = None) -> None:
        """Graceful stop (idempotent): NOT_SERVING, refuse new requests, finish in-flight ones
        within `grace` seconds (settings.grace_period_s by default), drain batchers, stop
        /metrics."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        grace = self.settings.grace_period_s if grace is None else grace
        deadline = time.monotonic() + grace
        try:
            self.plane.begin_shutdown()
            await self.health.enter_graceful_shutdown()
            if self._grpc is not None:
                # New calls get UNAVAILABLE (HTTP 503) while the running ones finish; only then
                # do the transports stop, since gRPC's own shutdown cancels calls the
                # application has not picked up (service.calls.Admission). What is left of the
                # grace period goes to their stop.
                logger.info("stopping: finishing in-flight requests (grace %.1fs)", grace)
                if not await self.admission.drained(deadline) and self.admission.active:
                    logger.warning(
                        "grace period over with %d requests still running", self.admission.active
                    )
                left = max(deadline - time.monotonic(), 0.0)
                await asyncio.gather(self._grpc.stop(left), self.http.stop(left))
            await self.repository.close(drain=True)
            await self._model_health.settle()
        finally:
            self.metrics.close()
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._stopped.set()
            logger.info("stopped")

    async def wait_for_termination(self) -> None:
        if self._grpc is not None:
            await self._grpc.wait_for_termination()

    def _publish_model(self, name: str) -> None:
        repo = self.repository
        self._model_series.update(name, repo.versions(name), repo.error(name))


async def serve(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; 0 after a clean drain, 2 when start-up fails."""
    configure_logging(settings.log_level)
    settings.log_summary(logger)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:  # before loading: a SIGTERM during start-up also stops cleanly
        loop.add_signal_handler(sig, _on_signal, sig, stop)
    try:
        server = Server(settings)
        try:
            await server.start()
        except ConvserveError as exc:  # RepositoryError, SettingsError, a bad bind
            print(f"convserve: cannot start: {exc}", file=sys.stderr, flush=True)
            return EXIT_STARTUP_FAILED
        print(server.ready_line, flush=True)
        await stop.wait()
        await server.stop()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
    return 0


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


def _on_signal(sig: signal.Signals, stop: asyncio.Event) -> None:
    if stop.is_set():
        logger.warning("%s again: already stopping", sig.name)
    else:
        logger.info("%s: shutting down", sig.name)
    stop.set()


def _check_repository(s: Settings) -> None:
    """Fail before binding anything when there is obviously nothing to serve."""
    repo, hint = s.repository, "(build one with `convserve build-defaults`)"
    if not repo.is_dir():
        raise RepositoryError(f"model repository {str(repo)!r} does not exist {hint}")
    if not any(p.is_dir() and not p.name.startswith(".") for p in repo.iterdir()):
        raise RepositoryError(f"model repository {str(repo)!r} holds no model folders {hint}")


def _host(host: str) -> str:
    """An address a client can dial: the wildcard binds become loopback, IPv6 gets brackets."""
    if host in ("0.0.0.0", "", "::", "[::]"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host

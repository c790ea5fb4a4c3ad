"""Prometheus metrics on a registry of our own (no process-global state), served over HTTP.

Names follow Prometheus conventions: `convserve_` prefix, base units (seconds, bytes), `_total`
for counters. Latencies are histograms, not summaries, so percentiles aggregate across replicas.
The call wrapper (service.calls) updates the request metrics; each batcher the
queue/compute/batch ones; `ModelSeries` keeps the per-model state ones equal to what the
repository reports (the server subscribes it to the repository's changes).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import threading
from collections.abc import Sequence
from typing import Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from service.gpu import GpuMonitor

logger = logging.getLogger(__name__)

# Sub-millisecond (a small CNN on GPU) up to seconds (a big batch on CPU, long audio).
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


def package_version() -> str:
    try:
        return importlib.metadata.version("convserve")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"  # running from a source tree that was never installed


class Metrics:
    """Every convserve metric, registered on `registry` (a fresh one unless given)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests_total = Counter(
            "convserve_requests_total",
            "RPCs finished, by model, method and gRPC status code.",
            ["model", "method", "status"],
            registry=r,
        )
        self.request_duration_seconds = Histogram(
            "convserve_request_duration_seconds",
            "Time from receiving an RPC to sending its reply.",
            ["model", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait_seconds = Histogram(
            "convserve_queue_wait_seconds",
            "Time a request waited in the batch queue before its batch started.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.preprocess_duration_seconds = Histogram(
            "convserve_preprocess_duration_seconds",
            "Time decoding and preprocessing one request's input.",
            ["model", "kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.compute_duration_seconds = Histogram(
            "convserve_compute_duration_seconds",
            "Time of one batch: filling the input buffer, ONNX Runtime run, splitting outputs.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "convserve_batch_size",
            "Real rows per batch sent to ONNX Runtime (padding not counted).",
            ["model", "version"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "convserve_queue_depth",
            "Requests waiting in the batch queue.",
            ["model", "version"],
            registry=r,
        )
        self.inflight_requests = Gauge(
            "convserve_inflight_requests",
            "RPCs being handled now.",
            ["model"],
            registry=r,
        )
        self.model_ready = Gauge(
            "convserve_model_ready",
            "1 when the model version is READY and serving, else 0.",
            ["model", "version"],
            registry=r,
        )
        self.execution_provider = Gauge(
            "convserve_execution_provider",
            "1 for the ONNX Runtime execution provider actually in use (it may fall back to CPU).",
            ["model", "version", "provider"],
            registry=r,
        )
        self.requested_device_info = Gauge(
            "convserve_requested_device_info",
            "1 for the device the model version was asked to run on.",
            ["model", "version", "device"],
            registry=r,
        )
        self.gpu_memory_used_bytes = Gauge(
            "convserve_gpu_memory_used_bytes",
            "GPU memory in use (all processes), from NVML.",
            ["gpu"],
            registry=r,
        )
        self.gpu_memory_total_bytes = Gauge(
            "convserve_gpu_memory_total_bytes",
            "GPU memory in total, from NVML.",
            ["gpu"],
            registry=r,
        )
        self.gpu_utilization_ratio = Gauge(
            "convserve_gpu_utilization_ratio",
            "Fraction of time the GPU was busy over NVML's last sample period.",
            ["gpu"],
            registry=r,
        )
        self.build_info = Gauge(
            "convserve_build_info", "convserve build; the value is always 1.", ["version"],
            registry=r,
        )  # fmt: skip
        self.build_info.labels(version=package_version()).set(1)
        # The process/platform/GC collectors are registered on our registry, not the global one.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)

        self._gpus: dict[int, GpuMonitor | None] = {}
        self._gpu_lock = threading.Lock()
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def track_gpu(self, ordinal: int) -> bool:
        """Export NVML memory/utilisation for CUDA device `ordinal`; False when NVML is absent.

        The gauges read NVML at scrape time, so they are fresh without a polling thread.
        """
        with self._gpu_lock:
            if ordinal not in self._gpus:
                monitor = GpuMonitor.open(ordinal)
                self._gpus[ordinal] = monitor
                if monitor is not None:
                    gpu = str(ordinal)
                    self.gpu_memory_used_bytes.labels(gpu=gpu).set_function(
                        lambda: monitor.memory()[0]
                    )
                    self.gpu_memory_total_bytes.labels(gpu=gpu).set_function(
                        lambda: monitor.memory()[1]
                    )
                    self.gpu_utilization_ratio.labels(gpu=gpu).set_function(monitor.utilization)
            return self._gpus[ordinal] is not None

    def start_http_server(self, host: str, port: int) -> int:
        """Serve /metrics on host:port in a daemon thread; return the bound port (0 = any)."""
        if self._server is not None:
            raise RuntimeError("metrics HTTP server already running")
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        bound = int(self._server.server_port)
        logger.info("metrics on http://%s:%d/metrics", host, bound)
        return bound

    def stop_http_server(self) -> None:
        """Stop the HTTP server if it is running."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server = self._thread = None

    def close(self) -> None:
        """Stop the HTTP server and release NVML (GPU gauges then read NaN)."""
        self.stop_http_server()
        with self._gpu_lock:
            for monitor in self._gpus.values():
                if monitor is not None:
                    monitor.close()


class VersionView(Protocol):
    """What the per-model series need to know about a served version (service.model)."""

    version: str

    @property
    def ready(self) -> bool: ...

    @property
    def provider(self) -> str: ...

    @property
    def requested_device(self) -> str: ...

    @property
    def gpu_ids(self) -> Sequence[int]: ...


class ModelSeries:
    """convserve_model_ready, _execution_provider and _requested_device_info of every model.

    `update(name, versions, error)` is called after any change to a model. A version keeps its
    ready series (at 0 once gone, so a dashboard sees it drop); provider and device series exist
    only while the version is loaded. A model with no readable version (its config failed)
    shows `version=""` at 0 until the error clears.
    """

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics
        self._versions: dict[str, set[str]] = {}
        self._providers: dict[str, set[tuple[str, str, str]]] = {}

    def update(self, name: str, versions: Sequence[VersionView], error: str | None) -> None:
        m = self._m
        seen = self._versions.setdefault(name, set())
        current = {v.version for v in versions}
        for v in versions:
            m.model_ready.labels(name, v.version).set(1 if v.ready else 0)
        for version in seen - current - {""}:
            m.model_ready.labels(name, version).set(0)
        if error is not None and not versions:
            m.model_ready.labels(name, "").set(0)
            current.add("")
        elif "" in seen:
            with contextlib.suppress(KeyError):
                m.model_ready.remove(name, "")
        self._versions[name] = (seen | current) - ({""} - current)
        live = {
            (v.version, v.provider, v.requested_device) for v in versions if v.ready and v.provider
        }
        for version, provider, device in live:
            m.execution_provider.labels(name, version, provider).set(1)
            m.requested_device_info.labels(name, version, device).set(1)
        for version, provider, device in self._providers.get(name, set()) - live:
            with contextlib.suppress(KeyError):
                m.execution_provider.remove(name, version, provider)
            with contextlib.suppress(KeyError):
                m.requested_device_info.remove(name, version, device)
        self._providers[name] = live
        for v in versions:
            if v.ready:
                for gpu in v.gpu_ids:
                    m.track_gpu(gpu)

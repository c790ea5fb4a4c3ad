"""service.metrics / service.gpu: names, own registry, HTTP exposition, NVML gauges."""

from __future__ import annotations

import sys
import types
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from service.metrics import BATCH_SIZE_BUCKETS, LATENCY_BUCKETS, Metrics

NAMES = [
    "convserve_requests_total",
    "convserve_request_duration_seconds",
    "convserve_queue_wait_seconds",
    "convserve_preprocess_duration_seconds",
    "convserve_compute_duration_seconds",
    "convserve_batch_size",
    "convserve_queue_depth",
    "convserve_inflight_requests",
    "convserve_model_ready",
    "convserve_execution_provider",
    "convserve_requested_device_info",
    "convserve_gpu_memory_used_bytes",
    "convserve_gpu_memory_total_bytes",
    "convserve_gpu_utilization_ratio",
    "convserve_build_info",
]


def test_every_metric_is_exposed_on_its_own_registry() -> None:
    first, second = Metrics(), Metrics()  # a global registry would reject the second
    assert first.registry is not second.registry
    text = generate_latest(first.registry).decode()
    for name in NAMES:
        assert f"# TYPE {name} " in text, name
    assert 'convserve_build_info{version="' in text
    assert "process_cpu_seconds_total" in text or "python_info" in text


def test_given_registry_is_used() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    assert metrics.registry is registry
    assert registry.get_sample_value("convserve_build_info", {"version": _version(metrics)}) == 1


def _version(metrics: Metrics) -> str:
    for family in metrics.registry.collect():
        if family.name == "convserve_build_info":
            return family.samples[0].labels["version"]
    raise AssertionError("no build info")


def test_labels_and_buckets() -> None:
    metrics = Metrics()
    metrics.requests_total.labels(model="m", method="ModelInfer", status="OK").inc()
    metrics.request_duration_seconds.labels("m", "ModelInfer", "OK").observe(0.0004)
    metrics.batch_size.labels(model="m", version="1").observe(3)
    metrics.queue_depth.labels(model="m", version="1").set(2)
    metrics.preprocess_duration_seconds.labels(model="m", kind="image").observe(0.02)
    registry = metrics.registry
    assert (
        registry.get_sample_value(
            "convserve_requests_total", {"model": "m", "method": "ModelInfer", "status": "OK"}
        )
        == 1
    )
    assert (
        registry.get_sample_value(
            "convserve_request_duration_seconds_bucket",
            {"model": "m", "method": "ModelInfer", "status": "OK", "le": "0.0005"},
        )
        == 1
    )
    assert (
        registry.get_sample_value(
            "convserve_batch_size_bucket", {"model": "m", "version": "1", "le": "4.0"}
        )
        == 1
    )
    assert LATENCY_BUCKETS[0] <= 0.0005 and LATENCY_BUCKETS[-1] >= 10
    assert BATCH_SIZE_BUCKETS == (1, 2, 4, 8, 16, 32, 64, 128)


def test_http_server_on_an_ephemeral_port() -> None:
    metrics = Metrics()
    metrics.model_ready.labels(model="m", version="1").set(1)
    port = metrics.start_http_server("127.0.0.1", 0)
    try:
        assert port > 0
        with pytest.raises(RuntimeError):
            metrics.start_http_server("127.0.0.1", 0)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body = response.read().decode()
        assert 'convserve_model_ready{model="m",version="1"} 1.0' in body
        assert "process_" in body  # the process collector is on our registry
    finally:
        metrics.stop_http_server()
    metrics.stop_http_server()  # idempotent
    metrics.close()


def test_gpu_gauges_absent_without_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml → ImportError
    metrics = Metrics()
    assert metrics.track_gpu(0) is False
    assert (
        metrics.registry.get_sample_value("convserve_gpu_memory_used_bytes", {"gpu": "0"}) is None
    )


def fake_nvml(calls: list[str]) -> types.ModuleType:
    module = types.ModuleType("pynvml")

    def init() -> None:
        calls.append("init")

    def by_index(index: int) -> str:
        calls.append(f"index {index}")
        return f"handle{index}"

    def by_uuid(uuid: str) -> str:
        calls.append(f"uuid {uuid}")
        return uuid

    def memory(handle: str) -> types.SimpleNamespace:
        if handle == "handle9":
            raise RuntimeError("GPU is lost")
        return types.SimpleNamespace(used=3 << 30, total=80 << 30)

    def utilization(handle: str) -> types.SimpleNamespace:
        return types.SimpleNamespace(gpu=42, memory=7)

    module.nvmlInit = init  # type: ignore[attr-defined]
    module.nvmlShutdown = lambda: calls.append("shutdown")  # type: ignore[attr-defined]
    module.nvmlDeviceGetHandleByIndex = by_index  # type: ignore[attr-defined]
    module.nvmlDeviceGetHandleByUUID = by_uuid  # type: ignore[attr-defined]
    module.nvmlDeviceGetMemoryInfo = memory  # type: ignore[attr-defined]
    module.nvmlDeviceGetUtilizationRates = utilization  # type: ignore[attr-defined]
    return module


def test_gpu_gauges_read_nvml_at_scrape_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(calls))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "9,GPU-abc")
    metrics = Metrics()
    assert metrics.track_gpu(1) is True
    assert metrics.track_gpu(1) is True  # once per device
    assert calls == ["init", "uuid GPU-abc"]
    get = metrics.registry.get_sample_value
    assert get("convserve_gpu_memory_used_bytes", {"gpu": "1"}) == 3 << 30
    assert get("convserve_gpu_memory_total_bytes", {"gpu": "1"}) == 80 << 30
    assert get("convserve_gpu_utilization_ratio", {"gpu": "1"}) == pytest.approx(0.42)
    # CUDA device 0 is host GPU 9 here, whose reads fail: NaN, never an exception at scrape.
    assert metrics.track_gpu(0) is True
    value = get("convserve_gpu_memory_used_bytes", {"gpu": "0"})
    assert value is not None and value != value  # NaN
    metrics.close()
    assert calls.count("shutdown") == 2

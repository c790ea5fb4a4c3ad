"""Faults, end to end over gRPC: broken model files at start-up and on hot load, ONNX Runtime
failing inside one batch, unloading a model with requests queued, and SIGTERM under load on a real
`python -m service serve` process. In each, the failure stays with what it hit: the other models,
the other batches and the requests already accepted are answered, none hangs.

(test_server.py drains six queued requests on SIGTERM and servicers/test_kserve.py hot-loads a
corrupt model; these go further: several kinds of broken file, recovery, batch-level isolation,
unload under load, SIGTERM with traffic still arriving.)
"""

from __future__ import annotations

import shutil
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service._proto.convserve.v1 import inference_pb2 as tpb
from service._proto.convserve.v1 import inference_pb2_grpc as tpb_grpc
from service._proto.inference import grpc_service_pb2 as pb
from service._proto.inference import grpc_service_pb2_grpc as pb_grpc
from service.errors import INTERNAL_MESSAGE
from service.servicers import converters
from tests.service import onnx_builders
from tests.service.conftest import ServerThread, eventually, make_settings, png
from tests.service.test_server import _inflight, _serve

pytestmark = pytest.mark.timeout(120)
Stub = pb_grpc.GRPCInferenceServiceStub
BROKEN = {  # how a model.onnx can be broken -> bytes derived from a valid one
    "truncated": lambda good: good[: len(good) // 2],
    "garbage": lambda good: np.random.default_rng(3).bytes(len(good)),
    "empty": lambda good: b"",
}


def _valid_bytes() -> bytes:
    return onnx_builders.linear().SerializeToString()


def _break(model_dir: Path, how: str, version: int = 1) -> None:
    (model_dir / str(version) / "model.onnx").write_bytes(BROKEN[how](_valid_bytes()))


@pytest.fixture(scope="module")
def fault_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faults")
    onnx_builders.write_model(root, "good")
    # 30 ms batches: concurrent requests share them, so a failing row takes its batch-mates along.
    onnx_builders.write_model(root, "echo", kind="echo", delay_us=30_000)
    onnx_builders.write_model(root, "slow_echo", kind="echo", delay_us=800_000)
    for how in BROKEN:
        _break(onnx_builders.write_model(root, how), how)
    return root


@pytest.fixture(scope="module")
def fault_server(fault_repo: Path) -> Iterator[ServerThread]:
    names = ("good", "echo", "slow_echo", *BROKEN)
    settings = make_settings(fault_repo, load_models=names, metrics_port=-1)
    thread = ServerThread(settings).start()
    yield thread
    thread.stop()


@pytest.fixture
def stub(fault_server: ServerThread) -> Iterator[Stub]:
    with grpc.insecure_channel(fault_server.target) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def _request(model: str, x: np.ndarray, name: str, **kwargs: Any) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, **kwargs)
    request.inputs.add(name=name, datatype="FP32", shape=list(x.shape))
    request.raw_input_contents.append(np.ascontiguousarray(x, np.float32).tobytes())
    return request


def _good(stub: Stub, rng: np.random.Generator) -> None:
    x = rng.standard_normal((2, 1, 4, 4)).astype(np.float32)
    reply = stub.ModelInfer(_request("good", x, "input"), timeout=10)
    assert list(reply.outputs[0].shape) == [2, 3]


def _echo(ident: float, select: float, model: str = "echo") -> pb.ModelInferRequest:
    return _request(model, np.array([[ident, select]], np.float32), "x", id=str(ident))


def _status(call: Any, request: Any, timeout: float = 10) -> tuple[grpc.StatusCode, str, Any]:
    try:
        return grpc.StatusCode.OK, "", call(request, timeout=timeout)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or "", None  # type: ignore[attr-defined]


def _index(stub: Stub) -> dict[str, pb.RepositoryIndexResponse.ModelIndex]:
    return {m.name: m for m in stub.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=5).models}


# ---- broken model files -------------------------------------------------------------------------


@pytest.mark.parametrize("how", sorted(BROKEN))
def test_broken_model_at_start_up_is_unavailable_and_the_rest_serve(
    fault_server: ServerThread, stub: Stub, how: str, rng: np.random.Generator
) -> None:
    x = rng.standard_normal((1, 1, 4, 4)).astype(np.float32)
    code, message, _ = _status(stub.ModelInfer, _request(how, x, "input"))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert f"model '{how}' version 1 is UNAVAILABLE" in message
    assert "ONNX Runtime cannot load it" in message and "model.onnx" in message  # the reason
    assert not stub.ModelReady(pb.ModelReadyRequest(name=how), timeout=5).ready
    entry = _index(stub)[how]
    assert entry.state == "UNAVAILABLE" and "cannot load it" in entry.reason
    with grpc.insecure_channel(fault_server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        check = health.Check(health_pb2.HealthCheckRequest(service=how), timeout=5)
        assert check.status == health_pb2.HealthCheckResponse.NOT_SERVING
        good = health.Check(health_pb2.HealthCheckRequest(service="good"), timeout=5)
        assert good.status == health_pb2.HealthCheckResponse.SERVING
    _good(stub, rng)


@pytest.mark.parametrize("how", sorted(BROKEN))
def test_hot_load_of_a_broken_model_then_the_fixed_one(
    fault_repo: Path, stub: Stub, how: str, rng: np.random.Generator
) -> None:
    name = f"late_{how}"
    model_dir = onnx_builders.write_model(fault_repo, name)
    _break(model_dir, how)
    try:
        load = pb.RepositoryModelLoadRequest(model_name=name)
        code, message, _ = _status(stub.RepositoryModelLoad, load, timeout=60)
        assert code == grpc.StatusCode.UNAVAILABLE
        assert f"model '{name}' failed to load: version 1:" in message
        assert "ONNX Runtime cannot load it" in message
        x = rng.standard_normal((1, 1, 4, 4)).astype(np.float32)
        code, message, _ = _status(stub.ModelInfer, _request(name, x, "input"))
        assert code == grpc.StatusCode.UNAVAILABLE and "cannot load it" in message
        _good(stub, rng)
        # Fixing the file and loading again brings it up: a failure is not sticky.
        onnx.save(onnx_builders.linear(), model_dir / "1" / "model.onnx")
        stub.RepositoryModelLoad(load, timeout=60)
        assert stub.ModelReady(pb.ModelReadyRequest(name=name), timeout=5).ready
        assert stub.ModelInfer(_request(name, x, "input"), timeout=10).outputs
    finally:
        stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name=name), timeout=30)
        shutil.rmtree(model_dir)


def test_hot_reload_with_a_broken_new_version_keeps_the_old_one(
    fault_repo: Path, stub: Stub, rng: np.random.Generator
) -> None:
    model_dir = fault_repo / "good"
    (model_dir / "2").mkdir()
    (model_dir / "2" / "model.onnx").write_bytes(BROKEN["truncated"](_valid_bytes()))
    try:
        code, message, _ = _status(
            stub.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name="good"), 60
        )
        assert code == grpc.StatusCode.UNAVAILABLE
        assert "version 2:" in message and "previous versions still serve" in message
        ready = stub.ModelMetadata(pb.ModelMetadataRequest(name="good"), timeout=5).versions
        assert list(ready) == ["1"]
        _good(stub, rng)
    finally:
        shutil.rmtree(model_dir / "2")


# ---- ONNX Runtime failing inside one batch ------------------------------------------------------


def test_a_runtime_failure_fails_its_batch_only(
    fault_server: ServerThread, stub: Stub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The echo model fails a whole run when any row's column 1 holds 100 (a Gather out of
    bounds). Among concurrent requests, exactly those batched with such a row fail, with the
    generic INTERNAL message; every other request gets its own id back; the model keeps serving."""
    assert fault_server.server is not None
    served = fault_server.server.plane.models.resolve("echo")
    runtime = served.runtimes[0]
    original = runtime.run
    batches: list[tuple[set[float], bool]] = []
    lock = threading.Lock()

    def recording(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["x"]
        with lock:
            batches.append((set(x[:, 0].tolist()), bool((x[:, 1] == onnx_builders.FAIL).any())))
        return original(inputs)

    monkeypatch.setattr(runtime, "run", recording)
    failing = {7.0, 23.0, 41.0}
    idents = [float(i) for i in range(1, 49)]

    def call(ident: float) -> tuple[float, grpc.StatusCode, str, Any]:
        select = onnx_builders.FAIL if ident in failing else float(int(ident) % 10)
        return (ident, *_status(stub.ModelInfer, _echo(ident, select)))

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(call, idents))
    assert len(results) == len(idents)  # every request answered
    failed_batches = set().union(*(ids for ids, bad in batches if bad))
    for ident, code, message, reply in results:
        if ident in failed_batches:
            assert code == grpc.StatusCode.INTERNAL, (ident, code, message)
            assert message == "inference failed for model 'echo' version 1"
            assert "Gather" not in message and "indices" not in message  # ORT text stays in logs
        else:
            assert code == grpc.StatusCode.OK, (ident, code, message)
            y = converters.raw_tensors(reply.outputs, reply.raw_output_contents)["y"]
            assert y[0, 0] == ident and y[0, 1] == onnx_builders.ECHO_TABLE[int(ident) % 10]
    assert failing <= failed_batches  # the bad rows themselves failed
    assert len(failed_batches) < len(idents)  # and not everything did
    # The next requests, alone, all succeed.
    for ident in (101.0, 102.0, 103.0):
        code, message, reply = _status(stub.ModelInfer, _echo(ident, 2.0))
        assert code == grpc.StatusCode.OK, message
    stats = stub.ModelStatistics(pb.ModelStatisticsRequest(name="echo"), timeout=5).model_stats[0]
    assert stats.inference_stats.fail.count >= len(failing)


def test_a_failure_alone_is_internal_and_generic(stub: Stub) -> None:
    code, message, _ = _status(stub.ModelInfer, _echo(5.0, onnx_builders.FAIL))
    assert code == grpc.StatusCode.INTERNAL and message != INTERNAL_MESSAGE
    assert message == "inference failed for model 'echo' version 1"
    code, _, reply = _status(stub.ModelInfer, _echo(6.0, 1.0))
    assert code == grpc.StatusCode.OK and reply.id == "6.0"


# ---- unload with requests queued ----------------------------------------------------------------


def test_unload_while_requests_are_queued(fault_server: ServerThread, stub: Stub) -> None:
    """slow_echo waits 0.8 s to fill a batch: six requests are queued when the unload comes, and
    more keep arriving during it. The queued ones are answered (the unload drains them); the
    later ones get UNAVAILABLE; none is left hanging."""
    assert fault_server.server is not None
    repo = fault_server.server.repository
    queued = [
        stub.ModelInfer.future(_echo(float(i), 1.0, "slow_echo"), timeout=20) for i in range(6)
    ]
    eventually(lambda: repo.versions("slow_echo")[-1].queue_depth == 6)
    stop = threading.Event()
    late: list[tuple[grpc.StatusCode, str]] = []

    def keep_sending() -> None:
        i = 100
        while not stop.is_set() and i < 400:
            code, message, _ = _status(stub.ModelInfer, _echo(float(i), 1.0, "slow_echo"), 20)
            late.append((code, message))
            i += 1

    sender = threading.Thread(target=keep_sending)
    sender.start()
    started = time.monotonic()
    try:
        stub.RepositoryModelUnload(
            pb.RepositoryModelUnloadRequest(model_name="slow_echo"), timeout=30
        )
        unload_s = time.monotonic() - started
        # The drain did not wait out the batch delay for nothing, nor hang.
        assert unload_s < 5, unload_s
        for i, future in enumerate(queued):
            try:
                reply = future.result(timeout=10)
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc  # type: ignore[attr-defined]
            else:
                y = converters.raw_tensors(reply.outputs, reply.raw_output_contents)["y"]
                assert y[0, 0] == i
        time.sleep(0.2)  # let the sender meet the unloaded model
    finally:
        stop.set()
        sender.join(30)
    assert not sender.is_alive()
    assert late and all(
        code in (grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE) for code, _ in late
    )
    unavailable = [m for code, m in late if code == grpc.StatusCode.UNAVAILABLE]
    assert unavailable and all("slow_echo" in m for m in unavailable), unavailable[:3]
    stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="slow_echo"), timeout=60)
    code, _, _ = _status(stub.ModelInfer, _echo(1.0, 1.0, "slow_echo"))
    assert code == grpc.StatusCode.OK


# ---- SIGTERM under load -------------------------------------------------------------------------


def test_sigterm_under_load_answers_every_accepted_request(
    repository: Path, rng: np.random.Generator
) -> None:
    """Eight clients hammer tiny_image/batchy and three keep a 1.5 s `slow` request each in
    flight; SIGTERM arrives mid-load and the clients carry on for another second. Every call ends
    OK or UNAVAILABLE (none hangs, none is cancelled), the three slow calls that were in flight
    at SIGTERM are answered OK, and the process exits 0 well within its grace period."""
    grace = 20.0
    proc = _serve(
        repository,
        "--load-models", "tiny_image,batchy,slow",
        "--grace-period-s", str(grace),
        "--log-level", "WARNING",
    ).wait_ready()  # fmt: skip
    try:
        target, metrics = str(proc.endpoint("grpc")), proc.url("metrics", "/metrics")
        image = png(rng.integers(0, 256, size=(8, 8), dtype=np.uint8))
        stop = threading.Event()
        lock = threading.Lock()
        # (model, started, finished, status, details); finished = None while in flight
        calls: list[list[Any]] = []

        def client(models: tuple[str, ...], limit: int) -> None:
            with grpc.insecure_channel(target) as channel:
                stub = tpb_grpc.InferenceStub(channel)
                for i in range(limit):
                    if stop.is_set():
                        return
                    record = [models[i % len(models)], time.monotonic(), None, None, ""]
                    with lock:
                        calls.append(record)
                    request = tpb.ClassifyImageRequest(model=record[0], image=image)
                    code, details, _ = _status(stub.ClassifyImage, request, timeout=30)
                    record[2:] = [time.monotonic(), code, details]

        threads = [
            threading.Thread(target=client, args=(("tiny_image", "tiny_image", "batchy"), 5000))
            for _ in range(8)
        ] + [threading.Thread(target=client, args=(("slow",), 50)) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        eventually(lambda: _inflight(metrics, "slow") == 3, timeout=10)
        with lock:
            in_flight_slow = [c for c in calls if c[0] == "slow" and c[2] is None]
        sigterm = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)  # traffic keeps coming while the server drains
        stop.set()
        for t in threads:
            t.join(timeout=grace + 10)
        assert not any(t.is_alive() for t in threads), "a client hung"
        exit_code = proc.wait(timeout=grace)
        stopped_s = time.monotonic() - sigterm
        err = proc.stderr()
    finally:
        proc.stop()
    assert exit_code == 0, err
    assert stopped_s < grace, stopped_s
    assert "Traceback" not in err, err
    assert all(c[2] is not None for c in calls), "a call never finished"
    statuses = {c[3] for c in calls}
    assert statuses <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, {
        (c[0], c[1] - sigterm, c[2] - sigterm, c[3], c[4])
        for c in calls
        if c[3] not in (grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE)
    }
    assert len(in_flight_slow) == 3
    assert all(c[3] == grpc.StatusCode.OK for c in in_flight_slow), in_flight_slow
    before = [c for c in calls if c[2] < sigterm]
    assert before and all(c[3] == grpc.StatusCode.OK for c in before)
    refused = [c for c in calls if c[3] == grpc.StatusCode.UNAVAILABLE]
    assert refused, "no call arrived after shutdown began: the test did not test that"
    # Refused by the draining server (or, once it has gone, by the closed port): never a
    # half-handled call.
    assert all("shutting down" in c[4] or "connect" in c[4] for c in refused), refused[:3]
    assert all(c[1] > sigterm - 0.5 for c in refused), "refused before shutdown began"
    assert len(calls) >= 50


def test_draining_server_refuses_new_calls_and_finishes_queued_ones(
    repository: Path, rng: np.random.Generator
) -> None:
    """In-process view of the drain: while queued `slow` requests finish, a new call gets
    UNAVAILABLE "server is shutting down", ServerReady says false and ServerLive true."""
    thread = ServerThread(
        make_settings(repository, load_models=("slow", "tiny_image"), metrics_port=-1)
    ).start()
    assert thread.server is not None
    image = png(rng.integers(0, 256, size=(8, 8), dtype=np.uint8))
    with grpc.insecure_channel(thread.target) as channel:
        task = tpb_grpc.InferenceStub(channel)
        kserve = pb_grpc.GRPCInferenceServiceStub(channel)
        queued = [
            task.ClassifyImage.future(
                tpb.ClassifyImageRequest(model="slow", image=image), timeout=20
            )
            for _ in range(2)
        ]
        eventually(lambda: thread.server.plane.models.resolve("slow").queue_depth == 2)  # type: ignore[union-attr]
        stopper = threading.Thread(target=thread.stop)
        stopper.start()
        eventually(lambda: thread.server.admission.closing)  # type: ignore[union-attr]
        code, message, _ = _status(
            task.ClassifyImage, tpb.ClassifyImageRequest(model="tiny_image", image=image)
        )
        assert code == grpc.StatusCode.UNAVAILABLE and "server is shutting down" in message
        assert not kserve.ServerReady(pb.ServerReadyRequest(), timeout=5).ready
        assert kserve.ServerLive(pb.ServerLiveRequest(), timeout=5).live
        assert all(len(f.result(timeout=10).classes) == 5 for f in queued)
        stopper.join(30)
    assert not stopper.is_alive()

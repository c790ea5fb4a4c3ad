"""service.batcher: batching, padding, bounds, deadlines, cancellation, failures, stop, and a
property test over random interleavings (each row carries a unique id the echo model returns)."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from service.batcher import DynamicBatcher
from service.errors import (
    DeadlineExceededError,
    InferenceError,
    ModelNotReadyError,
    QueueFullError,
    ServerShuttingDownError,
)
from service.metrics import Metrics
from service.runtime import OrtRuntime
from service.spec import ModelSpec
from tests.service import onnx_builders

pytestmark = pytest.mark.timeout(60)
Models = dict[str, tuple[ModelSpec, OrtRuntime]]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    root = tmp_path_factory.mktemp("batcher")
    out = {}
    for kind in ("echo", "linear"):
        model_dir = onnx_builders.write_model(root, kind, kind=kind, max_batch_size=8)
        spec = onnx_builders.spec_of(model_dir)
        out[kind] = (spec, OrtRuntime(model_dir / "1" / "model.onnx", spec, "cpu"))
    return out


class FakeRuntime:
    """Echo x→y in a worker thread, optionally held at a gate; records every batch it sees."""

    def __init__(self, gate: threading.Event | None = None, *, on_gpu: bool = False) -> None:
        self.gate = gate
        self.on_gpu = on_gpu  # padding to buckets happens only for GPU sessions by default
        self.batches: list[np.ndarray] = []
        self.running = 0
        self.max_running = 0
        self._lock = threading.Lock()

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            self.batches.append(inputs["x"].copy())
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            if self.gate is not None:
                assert self.gate.wait(20), "test forgot to open the gate"
            return {"y": inputs["x"] * 2}
        finally:
            with self._lock:
                self.running -= 1


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()  # never leave a worker thread blocked


def echo_spec(models: Models, **changes: object) -> ModelSpec:
    return dataclasses.replace(models["echo"][0], **changes)


def rows(*ids: float) -> np.ndarray:
    """Echo-model input: column 0 the ids, column 1 a valid Gather index (0)."""
    return np.stack([np.array(ids, np.float32), np.zeros(len(ids), np.float32)], axis=1)


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition never became true"
        await asyncio.sleep(0.002)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_concurrent_submits_are_batched_and_exact(models: Models) -> None:
    spec, runtime = models["linear"]
    spec = dataclasses.replace(spec, max_queue_delay_s=0.05)
    metrics = Metrics()
    batcher = DynamicBatcher(spec, [runtime], metrics, "1")
    await batcher.start()
    rng = np.random.default_rng(11)
    sizes = [1, 2, 1, 3, 1]
    inputs = [rng.standard_normal((n, 1, 4, 4)).astype(np.float32) for n in sizes]
    results = await asyncio.wait_for(
        asyncio.gather(*(batcher.submit({"input": x}) for x in inputs)), 10
    )
    await batcher.stop()
    for x, result in zip(inputs, results, strict=True):
        alone = runtime.run({"input": x})["logits"]  # the same session, request on its own
        assert result["logits"].shape == (len(x), 3)
        np.testing.assert_array_equal(result["logits"], alone)  # bit for bit on CPU
    labels = {"model": "linear", "version": "1"}
    batches = sample(metrics, "convserve_batch_size_count", **labels)
    assert sample(metrics, "convserve_batch_size_sum", **labels) == sum(sizes)
    assert 1 <= batches < len(sizes)  # at least one batch held more than one request
    assert sample(metrics, "convserve_queue_wait_seconds_count", **labels) == len(sizes)
    assert sample(metrics, "convserve_compute_duration_seconds_count", **labels) == batches
    assert sample(metrics, "convserve_queue_depth", **labels) == 0
    stats = batcher.stats
    assert stats.inference_count == sum(sizes) and stats.execution_count == batches
    assert stats.success.count == len(sizes) and stats.fail.count == 0


async def test_cpu_batches_run_at_their_real_size(models: Models) -> None:
    runtime = FakeRuntime(on_gpu=False)
    spec = echo_spec(models, buckets=(2, 4, 8), max_queue_delay_s=0.05)
    batcher = DynamicBatcher(spec, [runtime], Metrics(), "1")
    await batcher.start()
    a, b = rows(1, 2), rows(3)
    await asyncio.wait_for(asyncio.gather(batcher.submit({"x": a}), batcher.submit({"x": b})), 5)
    await batcher.stop()
    assert [len(x) for x in runtime.batches] == [3]  # no padding rows computed on CPU


async def test_padding_to_the_bucket_and_split(models: Models) -> None:
    runtime = FakeRuntime(on_gpu=True)
    spec = echo_spec(models, buckets=(2, 4, 8), max_queue_delay_s=0.05)
    batcher = DynamicBatcher(spec, [runtime], Metrics(), "1")
    await batcher.start()
    a, b = rows(1, 2), rows(3)
    out_a, out_b = await asyncio.wait_for(
        asyncio.gather(batcher.submit({"x": a}), batcher.submit({"x": b})), 5
    )
    await batcher.stop()
    assert len(runtime.batches) == 1
    sent = runtime.batches[0]
    assert sent.shape == (4, 2)  # 3 rows padded to bucket 4
    np.testing.assert_array_equal(sent[3], sent[2])  # padding repeats the last real row
    np.testing.assert_array_equal(out_a["y"], a * 2)
    np.testing.assert_array_equal(out_b["y"], b * 2)


async def test_full_batch_goes_without_waiting_for_the_delay(models: Models) -> None:
    spec = echo_spec(models, max_queue_delay_s=5.0)
    batcher = DynamicBatcher(spec, [models["echo"][1]], Metrics(), "1")
    await batcher.start()
    started = time.monotonic()
    await asyncio.wait_for(batcher.submit({"x": rows(*range(8))}), 2)
    assert time.monotonic() - started < 2
    await batcher.stop()


async def test_queue_full(models: Models, gate: threading.Event) -> None:
    runtime = FakeRuntime(gate)
    spec = echo_spec(models, max_batch_size=1, buckets=(1,), max_queue_size=2)
    batcher = DynamicBatcher(spec, [runtime], Metrics(), "1")
    await batcher.start()
    running = asyncio.create_task(batcher.submit({"x": rows(1)}))
    await until(lambda: len(runtime.batches) == 1)
    queued = [asyncio.create_task(batcher.submit({"x": rows(i)})) for i in (2, 3)]
    await until(lambda: batcher.queue_depth == 2)
    with pytest.raises(QueueFullError, match="full \\(2 requests\\)"):
        await batcher.submit({"x": rows(4)})
    gate.set()
    results = await asyncio.wait_for(asyncio.gather(running, *queued), 5)
    assert [r["y"][0, 0] for r in results] == [2, 4, 6]
    await batcher.stop()


async def test_deadline_passes_while_queued(models: Models, gate: threading.Event) -> None:
    runtime = FakeRuntime(gate)
    spec = echo_spec(models, max_batch_size=1, buckets=(1,))
    metrics = Metrics()
    batcher = DynamicBatcher(spec, [runtime], metrics, "1")
    await batcher.start()
    running = asyncio.create_task(batcher.submit({"x": rows(1)}))
    await until(lambda: len(runtime.batches) == 1)
    started = time.monotonic()
    with pytest.raises(DeadlineExceededError, match="in the queue"):
        await asyncio.wait_for(batcher.submit({"x": rows(2)}, deadline=started + 0.05), 5)
    assert 0.04 <= time.monotonic() - started < 2  # failed at its deadline, not at the gate
    assert batcher.queue_depth == 0
    with pytest.raises(DeadlineExceededError):  # already past on arrival
        await batcher.submit({"x": rows(3)}, deadline=time.monotonic() - 1)
    gate.set()
    await asyncio.wait_for(running, 5)
    await batcher.stop()
    assert [b[0, 0] for b in runtime.batches] == [1]  # the expired ones never ran


async def test_cancelled_submit_leaves_the_queue(models: Models, gate: threading.Event) -> None:
    runtime = FakeRuntime(gate)
    spec = echo_spec(models, max_batch_size=1, buckets=(1,))
    batcher = DynamicBatcher(spec, [runtime], Metrics(), "1")
    await batcher.start()
    running = asyncio.create_task(batcher.submit({"x": rows(1)}))
    await until(lambda: len(runtime.batches) == 1)
    doomed = asyncio.create_task(batcher.submit({"x": rows(2)}))
    kept = asyncio.create_task(batcher.submit({"x": rows(3)}))
    await until(lambda: batcher.queue_depth == 2)
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert batcher.queue_depth == 1
    gate.set()
    await asyncio.wait_for(asyncio.gather(running, kept), 5)
    await batcher.stop()
    assert [b[0, 0] for b in runtime.batches] == [1, 3]


async def test_cancel_while_running_discards_the_result(
    models: Models, gate: threading.Event
) -> None:
    runtime = FakeRuntime(gate)
    batcher = DynamicBatcher(echo_spec(models, max_queue_delay_s=0), [runtime], Metrics(), "1")
    await batcher.start()
    task = asyncio.create_task(batcher.submit({"x": rows(1)}))
    await until(lambda: len(runtime.batches) == 1)
    task.cancel()
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    out = await asyncio.wait_for(batcher.submit({"x": rows(5)}), 5)  # still serving
    assert out["y"][0, 0] == 10
    await batcher.stop()


async def test_failing_batch_fails_only_its_requests(
    models: Models, caplog: pytest.LogCaptureFixture
) -> None:
    spec = echo_spec(models, max_queue_delay_s=0.05)
    batcher = DynamicBatcher(spec, [models["echo"][1]], Metrics(), "1")
    await batcher.start()
    bad = rows(2)
    bad[0, 1] = onnx_builders.FAIL
    with caplog.at_level(logging.ERROR, logger="service.batcher"):
        outcomes = await asyncio.wait_for(
            asyncio.gather(
                batcher.submit({"x": rows(1)}), batcher.submit({"x": bad}), return_exceptions=True
            ),
            5,
        )
    for outcome in outcomes:  # same batch: both fail, with a message safe for clients
        assert isinstance(outcome, InferenceError)
        assert str(outcome) == "inference failed for model 'echo' version 1"
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1  # logged once
    assert caplog.records[0].exc_info is not None
    out = await asyncio.wait_for(batcher.submit({"x": rows(3, 4)}), 5)  # keeps serving
    np.testing.assert_array_equal(out["y"][:, 0], [3, 4])
    np.testing.assert_array_equal(out["y"][:, 1], onnx_builders.ECHO_TABLE[0])
    assert batcher.stats.fail.count == 2 and batcher.stats.success.count == 1
    await batcher.stop()


async def test_stop_with_drain_finishes_queued_work(models: Models, gate: threading.Event) -> None:
    runtime = FakeRuntime(gate)
    spec = echo_spec(models, max_batch_size=1, buckets=(1,))
    batcher = DynamicBatcher(spec, [runtime], Metrics(), "1")
    await batcher.start()
    tasks = [asyncio.create_task(batcher.submit({"x": rows(i)})) for i in (1, 2, 3)]
    await until(lambda: len(runtime.batches) == 1 and batcher.queue_depth == 2)
    stopping = asyncio.create_task(batcher.stop(drain=True))
    await asyncio.sleep(0.01)
    with pytest.raises(ModelNotReadyError):  # no new work while draining
        await batcher.submit({"x": rows(9)})
    gate.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), 5)
    await asyncio.wait_for(stopping, 5)
    assert [r["y"][0, 0] for r in results] == [2, 4, 6]


async def test_stop_without_drain_fails_queued_work(models: Models, gate: threading.Event) -> None:
    runtime = FakeRuntime(gate)
    spec = echo_spec(models, max_batch_size=1, buckets=(1,))
    batcher = DynamicBatcher(spec, [runtime], Metrics(), "1")
    await batcher.start()
    tasks = [asyncio.create_task(batcher.submit({"x": rows(i)})) for i in (1, 2, 3)]
    await until(lambda: len(runtime.batches) == 1 and batcher.queue_depth == 2)
    stopping = asyncio.create_task(
        batcher.stop(drain=False, error=ServerShuttingDownError("server is shutting down"))
    )
    outcomes = await asyncio.wait_for(asyncio.gather(*tasks[1:], return_exceptions=True), 5)
    assert all(isinstance(o, ServerShuttingDownError) for o in outcomes)
    gate.set()  # the running batch still completes
    assert (await asyncio.wait_for(tasks[0], 5))["y"][0, 0] == 2
    await asyncio.wait_for(stopping, 5)
    assert len(runtime.batches) == 1


async def test_cancelled_drain_can_be_cut_short(models: Models, gate: threading.Event) -> None:
    runtime = FakeRuntime(gate)
    spec = echo_spec(models, max_batch_size=1, buckets=(1,))
    batcher = DynamicBatcher(spec, [runtime], Metrics(), "1")
    await batcher.start()
    tasks = [asyncio.create_task(batcher.submit({"x": rows(i)})) for i in (1, 2)]
    await until(lambda: len(runtime.batches) == 1 and batcher.queue_depth == 1)
    with pytest.raises(TimeoutError):  # the grace period runs out
        await asyncio.wait_for(batcher.stop(drain=True), 0.05)
    stopping = asyncio.create_task(batcher.stop(drain=False))
    with pytest.raises(ModelNotReadyError):
        await asyncio.wait_for(tasks[1], 5)
    gate.set()
    await asyncio.wait_for(asyncio.gather(tasks[0], stopping), 5)


async def test_instances_run_concurrently(models: Models, gate: threading.Event) -> None:
    runtimes = [FakeRuntime(gate), FakeRuntime(gate)]
    spec = echo_spec(models, max_batch_size=1, buckets=(1,))
    batcher = DynamicBatcher(spec, runtimes, Metrics(), "1")
    await batcher.start()
    tasks = [asyncio.create_task(batcher.submit({"x": rows(i)})) for i in (1, 2)]
    await until(lambda: all(r.running == 1 for r in runtimes))  # both inside run() at once
    gate.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    await batcher.stop()


async def test_model_without_batching_runs_each_request_alone(models: Models) -> None:
    runtime = FakeRuntime()
    spec = echo_spec(models, max_batch_size=0, buckets=(), max_queue_delay_s=0.05)
    batcher = DynamicBatcher(spec, [runtime], Metrics(), "1")
    await batcher.start()
    a, b = np.ones((3, 2), np.float32), np.full((3, 2), 2, np.float32)  # no batch axis: as-is
    out = await asyncio.wait_for(
        asyncio.gather(batcher.submit({"x": a}), batcher.submit({"x": b})), 5
    )
    await batcher.stop()
    assert [x.shape for x in runtime.batches] == [(3, 2), (3, 2)]
    np.testing.assert_array_equal(out[1]["y"], b * 2)


async def test_variable_dims_batch_only_same_shapes(models: Models) -> None:
    runtime = FakeRuntime()
    base = echo_spec(models)
    spec = dataclasses.replace(
        base,
        inputs=(dataclasses.replace(base.inputs[0], dims=(-1,)),),
        buckets=(),
        max_queue_delay_s=0.05,
    )
    batcher = DynamicBatcher(spec, [runtime], Metrics(), "1")
    await batcher.start()
    shapes = [(1, 3), (2, 5), (1, 3)]
    arrays = [np.full(s, i, np.float32) for i, s in enumerate(shapes)]
    out = await asyncio.wait_for(asyncio.gather(*(batcher.submit({"x": a}) for a in arrays)), 5)
    await batcher.stop()
    assert sorted(b.shape for b in runtime.batches) == [(2, 3), (2, 5)]
    for a, o in zip(arrays, out, strict=True):
        np.testing.assert_array_equal(o["y"], a * 2)


async def test_submit_before_start_and_after_stop(models: Models) -> None:
    batcher = DynamicBatcher(echo_spec(models), [FakeRuntime()], Metrics(), "1")
    with pytest.raises(ModelNotReadyError):
        await batcher.submit({"x": rows(1)})
    await batcher.start()
    await batcher.stop()
    await batcher.stop()  # twice is fine
    with pytest.raises(ModelNotReadyError):
        await batcher.submit({"x": rows(1)})


# -- property: random arrivals, sizes, deadlines, cancels, failures, queue bounds and stops -------
#
# Any interleaving of these must leave every request with exactly one outcome, and an OK outcome
# must carry that request's own rows, in order, computed exactly once. Every other outcome must
# be explained by the plan: a deadline that passed, a cancel, a failing row in the same batch, a
# queue at its bound, or a stop. The runtime is the real ONNX Runtime echo model (ids in column
# 0 come back; a FAIL in column 1 makes the whole run fail), wrapped to record every batch.

request_plan = st.tuples(
    st.integers(0, 4),  # arrival, ms after start
    st.integers(1, 5),  # rows (clamped to max_batch_size)
    st.one_of(st.none(), st.integers(0, 6)),  # deadline, ms after arrival
    st.one_of(st.none(), st.integers(0, 6)),  # cancel, ms after arrival
    st.integers(0, 7).map(lambda v: v == 0),  # carries a failing row (1 in 8)
)
Plan = tuple[int, int, "int | None", "int | None", bool]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    plan=st.lists(request_plan, min_size=1, max_size=24),
    instances=st.integers(1, 2),
    max_batch_size=st.integers(1, 8),
    queue_size=st.one_of(st.just(1000), st.integers(1, 6)),
    stop=st.one_of(st.none(), st.tuples(st.integers(0, 8), st.booleans())),  # (ms, drain)
)
def test_every_request_is_answered_once_with_its_own_rows(
    models: Models,
    plan: list[Plan],
    instances: int,
    max_batch_size: int,
    queue_size: int,
    stop: tuple[int, bool] | None,
) -> None:
    spec, runtime = models["echo"]
    spec = dataclasses.replace(
        spec,
        max_queue_delay_s=0.002,
        max_queue_size=queue_size,
        max_batch_size=max_batch_size,
        buckets=(max_batch_size,),
    )
    batches: list[tuple[list[float], bool]] = []  # (ids, failed) per run, in any instance
    lock = threading.Lock()

    class Recording:
        on_gpu = False

        def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            x = inputs["x"]
            assert len(x) <= max_batch_size
            bad = bool((x[:, 1] == onnx_builders.FAIL).any())
            with lock:
                batches.append((x[:, 0].tolist(), bad))
            return runtime.run(inputs)

    def ids_of(i: int, n: int) -> np.ndarray:
        return np.arange(n, dtype=np.float32) + 100 * i  # unique per row, exact in float32

    async def scenario() -> list[tuple[str, object]]:
        loop_errors: list[dict] = []
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: loop_errors.append(ctx))
        batcher = DynamicBatcher(spec, [Recording() for _ in range(instances)], Metrics(), "1")
        await batcher.start()
        outcomes: list[list[tuple[str, object]]] = [[] for _ in plan]

        async def client(i: int, arrival: int, n: int, dl: int | None, cancel: int | None, bad):
            await asyncio.sleep(arrival / 1000)
            n = min(n, max_batch_size)
            x = rows(*ids_of(i, n))
            x[:, 1] = i % 10
            if bad:
                x[-1, 1] = onnx_builders.FAIL
            deadline = None if dl is None else time.monotonic() + dl / 1000
            task = asyncio.create_task(batcher.submit({"x": x}, deadline=deadline))
            if cancel is not None:
                await asyncio.sleep(cancel / 1000)
                task.cancel()
            try:
                outcomes[i].append(("ok", await task))
            except asyncio.CancelledError:
                outcomes[i].append(("cancelled", None))
            except DeadlineExceededError:
                outcomes[i].append(("deadline", None))
            except QueueFullError:
                outcomes[i].append(("queue full", None))
            except InferenceError:
                outcomes[i].append(("failed", None))
            except ModelNotReadyError:
                outcomes[i].append(("not ready", None))

        async def stopper() -> None:
            if stop is not None:
                await asyncio.sleep(stop[0] / 1000)
                await batcher.stop(drain=stop[1])

        await asyncio.gather(stopper(), *(client(i, *p) for i, p in enumerate(plan)))
        await batcher.stop()
        assert batcher.queue_depth == 0
        gc.collect()  # surface "exception was never retrieved" while the handler is installed
        await asyncio.sleep(0)
        assert not loop_errors, loop_errors
        return [o for [o] in outcomes]  # exactly one outcome each

    results = asyncio.run(asyncio.wait_for(scenario(), 30))
    event("outcomes: " + ", ".join(sorted({kind for kind, _ in results})))  # coverage, in stats
    computed = [ident for ids, _ in batches for ident in ids]
    assert len(computed) == len(set(computed)), "a row was computed twice"
    failed_ids = {ident for ids, bad in batches if bad for ident in ids}
    for i, ((_arrival, n, dl, cancel, bad), (kind, value)) in enumerate(
        zip(plan, results, strict=True)
    ):
        ids = ids_of(i, min(n, max_batch_size))
        ran = set(ids.tolist()) & set(computed)
        assert not ran or ran == set(ids.tolist()), "a request split across batches"
        if kind == "ok":
            y = value["y"]  # type: ignore[index]
            np.testing.assert_array_equal(y[:, 0], ids)  # its own rows, in order
            np.testing.assert_array_equal(y[:, 1], onnx_builders.ECHO_TABLE[i % 10])
            assert ran and not bad and not ran & failed_ids
        elif kind == "failed":
            assert ran and ran <= failed_ids  # it ran in a batch with a failing row
        elif kind == "deadline":
            assert dl is not None and not ran  # dropped without running
        elif kind == "cancelled":
            assert cancel is not None
        elif kind == "queue full":
            assert queue_size < len(plan) and not ran
        else:
            assert kind == "not ready" and stop is not None and not ran
        if dl is None and cancel is None and stop is None and queue_size >= len(plan):
            assert kind in ("ok", "failed")
            assert kind == "ok" or ran & failed_ids

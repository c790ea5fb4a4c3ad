"""Dynamic batching: one queue per model version, one ONNX Runtime run per batch.

Requests queue as futures (service.batcher.queue). A dispatcher task waits for an idle instance,
collects a batch, and runs it in that instance's thread (service.batcher.worker) — packing, ONNX
Runtime and splitting happen there (service.batcher.packing); the event loop only routes. One
batch per instance at a time, so instances run concurrently. Statistics and metrics:
service.batcher.stats.

When a batch goes (config parameter `batch_policy`, service.spec.BatchPolicy):
  * `eager`: an idle instance does not wait for requests that have not arrived. It lets the event
    loop run once, so requests that already reached the server join, and sends the batch as soon
    as the queue stops growing (or at `max_batch_size` rows, or after `max_queue_delay`, which
    then caps the gathering under a flood). While every instance is busy requests accumulate
    anyway, so batches still grow with load.
  * `delay` (Triton's rule): the batch goes when `max_batch_size` rows are queued or the oldest
    request has waited `max_queue_delay`, even if an instance is idle. Fewer, fuller batches, for
    up to `max_queue_delay` more latency at low load.

Inputs arrive validated (service.dataplane.validation): batch axis first, 1..max_batch_size rows.
A runtime failure fails the requests of that batch only, with a generic InferenceError.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Sequence
from typing import Protocol

from service.batcher.packing import Packer, Tensors
from service.batcher.queue import Request, RequestQueue
from service.batcher.stats import BatchRecorder, Duration, ModelStats
from service.batcher.worker import Worker
from service.errors import (
    ConvserveError,
    DeadlineExceededError,
    InferenceError,
    ModelNotReadyError,
    QueueFullError,
)
from service.metrics import Metrics
from service.spec import BatchPolicy, ModelSpec

__all__ = ["Duration", "DynamicBatcher", "ModelStats", "Runtime", "Tensors"]

logger = logging.getLogger(__name__)


class Runtime(Protocol):
    """What the batcher needs from a session (OrtRuntime, or a stand-in in tests)."""

    @property
    def on_gpu(self) -> bool: ...

    def run(self, inputs: Tensors) -> Tensors: ...


class DynamicBatcher:
    """Queue and dispatcher for one model version; `runtimes` are its instances."""

    def __init__(
        self, spec: ModelSpec, runtimes: Sequence[Runtime], metrics: Metrics, version: str
    ) -> None:
        if not runtimes:
            raise ValueError("a batcher needs at least one runtime")
        self.spec = spec
        self.version = version
        self.what = f"model {spec.name!r} version {version}"
        self._recorder = BatchRecorder(metrics, spec.name, version)
        self._runtimes = list(runtimes)
        # Padding to bucket sizes pays on GPU (few shapes: no per-shape kernel selection, reusable
        # CUDA graphs). On CPU a padded row costs as much as a real one and ONNX Runtime's CPU
        # kernels have no per-shape set-up, so batches run at their real size unless
        # config.pbtxt asks for buckets explicitly.
        pad = spec.pad_batches or any(r.on_gpu for r in self._runtimes)
        self._packers = [Packer(spec, pad=pad) for _ in self._runtimes]
        self._eager = spec.batch_policy == BatchPolicy.EAGER
        self._limit = spec.max_batch_size if spec.batching else 1
        self._workers = [
            Worker(f"ort-{spec.name}-{version}-{i}") for i in range(len(self._runtimes))
        ]
        self._queue = RequestQueue(self.what)
        self._recorder.queue_depth(self._queue.__len__)
        self._wakeup = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._accepting = False
        self._stopping = False

    @property
    def stats(self) -> ModelStats:
        return self._recorder.stats

    @property
    def queue_depth(self) -> int:
        """Requests waiting (not yet in a batch)."""
        return len(self._queue)

    async def start(self) -> None:
        if self._dispatcher is None:
            self._accepting = True
            self._dispatcher = asyncio.create_task(self._dispatch(), name=f"batcher {self.what}")

    async def stop(self, *, drain: bool = True, error: ConvserveError | None = None) -> None:
        """Stop accepting; drain (run what is queued) or fail the queue with `error`.

        `error` defaults to ModelNotReadyError; the repository passes ServerShuttingDownError at
        shutdown. Batches already running always finish. Safe to call twice, and a cancelled
        stop(drain=True) can be followed by stop(drain=False) to cut the drain short.
        """
        self._accepting = False
        if not drain:
            self._queue.fail_all(error or ModelNotReadyError(f"{self.what} is unloading"))
        self._stopping = True
        self._wakeup.set()
        # shield: cancelling stop() (a grace period running out) must not kill the dispatcher,
        # or the requests still queued would never be answered.
        if self._dispatcher is not None:
            await asyncio.shield(self._dispatcher)
        if self._running:
            await asyncio.shield(asyncio.gather(*self._running))
        for worker in self._workers:
            worker.stop()  # nothing left to run: every batch has finished
        for packer in self._packers:
            packer.release()
        self._recorder.queue_depth(int)  # 0, and the gauge lets go of the queue

    async def submit(self, inputs: Tensors, *, deadline: float | None = None) -> Tensors:
        """Queue one request (validated arrays, batch axis first when the model batches) and wait
        for its rows of every output. `deadline` is on the time.monotonic() clock."""
        if not self._accepting:
            raise ModelNotReadyError(f"{self.what} is not accepting requests")
        if len(self._queue) >= self.spec.max_queue_size:
            raise QueueFullError(
                f"queue of {self.what} is full ({self.spec.max_queue_size} requests)"
            )
        if deadline is not None and deadline <= time.monotonic():
            raise DeadlineExceededError(f"deadline passed before {self.what} could queue it")
        first = next(iter(inputs.values()))
        rows = int(first.shape[0]) if self.spec.batching else 1
        key = tuple(a.shape[1:] for a in inputs.values()) if self.spec.variable_inputs else None
        request = Request(inputs, rows, key, asyncio.get_running_loop().create_future(), deadline)
        self._queue.push(request)
        # The dispatcher needs waking only by the first request (it sleeps on an empty queue) and
        # by the one that completes a batch; in between it sleeps on its own timer. Waking it for
        # every arrival cost a task switch per request, the biggest batcher cost on small models.
        if len(self._queue) == 1 or self._queue.rows >= self._limit:
            self._wakeup.set()
        try:
            return await request.future
        finally:
            if request.timer is not None:
                request.timer.cancel()
            if request.queued:  # cancelled while waiting: leave the queue
                self._queue.discard(request)

    async def _dispatch(self) -> None:
        idle: asyncio.Queue[int] = asyncio.Queue()
        for index in range(len(self._runtimes)):
            idle.put_nowait(index)
        try:
            while True:
                index = await idle.get()
                batch = await self._collect()
                if batch is None:
                    return
                task = asyncio.create_task(self._run(index, batch))
                self._running.add(task)
                task.add_done_callback(functools.partial(self._finished, idle, index))
        except asyncio.CancelledError:
            self._queue.fail_all(ModelNotReadyError(f"{self.what} stopped"))
            raise
        except Exception:
            # A bug here must not leave callers waiting forever.
            logger.exception("batcher for %s crashed", self.what)
            self._accepting = False
            self._queue.fail_all(InferenceError(f"inference failed for {self.what}"))

    def _finished(self, idle: asyncio.Queue[int], index: int, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        idle.put_nowait(index)

    async def _collect(self) -> list[Request] | None:
        """Wait for a batch worth sending; None once stopping with nothing left."""
        loop = asyncio.get_running_loop()
        queue = self._queue
        while True:
            if not queue:
                if self._stopping:
                    return None
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            full = queue.rows >= self._limit
            wait = queue.oldest.enqueued + self.spec.max_queue_delay_s - time.monotonic()
            if not (full or self._stopping or wait <= 0):
                queued = len(queue)
                if self._eager:
                    # Let the loop run once, so requests that have already reached the server
                    # join; go once the queue stops growing (the delay caps a flood).
                    await asyncio.sleep(0)
                    if len(queue) != queued:
                        continue
                else:
                    self._wakeup.clear()
                    # A timer, not wait_for: wait_for wraps the wait in a new task every time.
                    timer = loop.call_later(wait, self._wakeup.set)
                    try:
                        await self._wakeup.wait()
                    finally:
                        timer.cancel()
                    continue
            batch = queue.take(self._limit)
            if batch:
                return batch

    async def _run(self, index: int, batch: list[Request]) -> None:
        started = time.monotonic()
        self._recorder.started([started - r.enqueued for r in batch])
        rows = sum(r.rows for r in batch)
        try:
            results, phases = await self._workers[index].run(self._compute, index, batch, rows)
        except Exception:
            logger.exception("inference failed for %s (batch of %d rows)", self.what, rows)
            now = time.monotonic()
            self._recorder.failed([now - r.enqueued for r in batch])
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(
                        InferenceError(f"inference failed for {self.what}")
                    )
            return
        finished = time.monotonic()
        self._recorder.succeeded(rows, phases, [finished - r.enqueued for r in batch])
        for request, result in zip(batch, results, strict=True):
            if not request.future.done():  # cancelled meanwhile: the rows are dropped
                request.future.set_result(result)

    def _compute(
        self, index: int, batch: list[Request], rows: int
    ) -> tuple[list[Tensors], tuple[float, float, float]]:
        """Worker thread: pack the inputs, run, split the outputs per request."""
        packer = self._packers[index]
        t0 = time.perf_counter()
        feed = packer.pack([r.inputs for r in batch], rows)
        t1 = time.perf_counter()
        outputs = self._runtimes[index].run(feed)
        t2 = time.perf_counter()
        results = packer.split(feed, outputs, [r.rows for r in batch])
        t3 = time.perf_counter()
        return results, (t1 - t0, t2 - t1, t3 - t2)

"""Dynamic batching: one queue per model version, one ONNX Runtime run per batch.

Requests queue as futures. A dispatcher task waits for an idle instance, then collects requests,
packs them (FIFO) into a preallocated buffer padded to the smallest bucket that fits, and runs it
in a worker thread; one batch per instance at a time, so instances run concurrently. The event
loop only routes: copying, ONNX Runtime and splitting happen in the executor.

When a batch goes (config parameter `batch_policy`):
  * `delay` (default, Triton's rule): the batch goes when `max_batch_size` rows are queued or the
    oldest request has waited `max_queue_delay`, even if an instance is idle. Fewer, fuller
    batches, for up to `max_queue_delay` more latency at low load.
  * `eager`: an idle instance does not wait for requests that have not arrived. It lets the event
    loop run once, so requests that already reached the server join, and sends the batch as soon
    as the queue stops growing (or at `max_batch_size` rows, or after `max_queue_delay`, which
    then caps the gathering under a flood). While every instance is busy requests accumulate
    anyway, so batches still grow with load. Measured on LeNet-5, 2 CPU cores: p50 at
    concurrency 1 from 2.0 to 0.8 ms, throughput at concurrency 16 up ~15%
    (benchmarks/results/results.md).

The queue is bounded in *requests* (Triton's `max_queue_size` semantics), not rows: a full queue
holds at most max_queue_size × max_batch_size rows. Past it, QueueFullError. A request whose
deadline passes while queued fails with DeadlineExceededError without running; a cancelled one
leaves the queue (if it is already running, its rows are computed and discarded). A runtime
failure fails the requests of that batch only, with a generic InferenceError.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from service.config import ModelSpec
from service.errors import (
    ConvserveError,
    DeadlineExceededError,
    InferenceError,
    InvalidInputError,
    ModelNotReadyError,
    QueueFullError,
)
from service.metrics import Metrics

logger = logging.getLogger(__name__)

Tensors = dict[str, np.ndarray]


class Runtime(Protocol):
    """What the batcher needs from a session (OrtRuntime, or a stand-in in tests)."""

    def run(self, inputs: Tensors) -> Tensors: ...


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += int(seconds * 1e9) * count


@dataclass
class ModelStats:
    """Cumulative counters in the shape of Triton's ModelStatistics (per model version).

    Request-level durations count each request once (a batch's compute time is charged to every
    request in it, as Triton does); `batches` is keyed by the real rows of a batch.
    """

    last_inference_ms: int = 0
    inference_count: int = 0  # rows answered
    execution_count: int = 0  # batches run
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    batches: dict[int, Duration] = field(default_factory=dict)


class _Request:
    __slots__ = ("deadline", "enqueued", "future", "inputs", "key", "queued", "rows", "timer")

    def __init__(
        self,
        inputs: Tensors,
        rows: int,
        key: tuple[tuple[int, ...], ...] | None,
        future: asyncio.Future[Tensors],
        deadline: float | None,
    ) -> None:
        self.inputs = inputs
        self.rows = rows
        self.key = key  # non-batch shapes; only set when the model has variable dims
        self.future = future
        self.enqueued = time.monotonic()
        self.deadline = deadline
        self.timer: asyncio.TimerHandle | None = None
        self.queued = True


class DynamicBatcher:
    """Queue and dispatcher for one model version; `runtimes` are its instances."""

    def __init__(
        self,
        spec: ModelSpec,
        runtimes: Sequence[Runtime],
        metrics: Metrics,
        version: str,
        *,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        if not runtimes:
            raise ValueError("a batcher needs at least one runtime")
        self.spec = spec
        self.version = version
        self.stats = ModelStats()
        self._runtimes = list(runtimes)
        # Padding to bucket sizes pays on GPU (few shapes: no per-shape kernel selection, reusable
        # CUDA graphs). On CPU a padded row costs as much as a real one and ONNX Runtime's CPU
        # kernels have no per-shape set-up, so batches run at their real size unless
        # config.pbtxt asks for buckets explicitly.
        self._pad = "batch_buckets" in spec.parameters or any(
            getattr(r, "on_gpu", False) for r in self._runtimes
        )
        self._eager = spec.batch_policy == "eager"
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(
            max_workers=len(runtimes), thread_name_prefix=f"ort-{spec.name}-{version}"
        )
        self._queue: deque[_Request] = deque()
        self._queued_rows = 0  # kept, not summed, since it is read on every arrival
        self._wakeup = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._accepting = False
        self._stopping = False
        # Per instance, per bucket: one input buffer per input, reused batch after batch.
        self._buffers: list[dict[int, Tensors]] = [{} for _ in runtimes]
        self._variable = any(-1 in t.dims for t in spec.inputs)
        labels = {"model": spec.name, "version": version}
        self._m_queue_wait = metrics.queue_wait_seconds.labels(**labels)
        self._m_compute = metrics.compute_duration_seconds.labels(**labels)
        self._m_batch = metrics.batch_size.labels(**labels)
        self._m_depth = metrics.queue_depth.labels(**labels)
        self._m_depth.set(0)

    @property
    def queue_depth(self) -> int:
        """Requests waiting (not yet in a batch)."""
        return len(self._queue)

    @property
    def what(self) -> str:
        return f"model {self.spec.name!r} version {self.version}"

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
            self._fail_queue(error or ModelNotReadyError(f"{self.what} is unloading"))
        self._stopping = True
        self._wakeup.set()
        # shield: cancelling stop() (a grace period running out) must not kill the dispatcher,
        # or the requests still queued would never be answered.
        if self._dispatcher is not None:
            await asyncio.shield(self._dispatcher)
        if self._running:
            await asyncio.shield(asyncio.gather(*self._running))
        if self._own_executor:
            self._executor.shutdown(wait=False)  # nothing left in it: every batch has finished
        self._buffers = [{} for _ in self._runtimes]
        self._m_depth.set(0)

    async def submit(self, inputs: Tensors, *, deadline: float | None = None) -> Tensors:
        """Queue one request (arrays with the batch axis first) and wait for its output rows.

        `deadline` is on the time.monotonic() clock.
        """
        if not self._accepting:
            raise ModelNotReadyError(f"{self.what} is not accepting requests")
        rows = self._rows(inputs)
        if len(self._queue) >= self.spec.max_queue_size:
            raise QueueFullError(
                f"queue of {self.what} is full ({self.spec.max_queue_size} requests)"
            )
        if deadline is not None and deadline <= time.monotonic():
            raise DeadlineExceededError(f"deadline passed before {self.what} could queue it")
        loop = asyncio.get_running_loop()
        key = tuple(a.shape[1:] for a in inputs.values()) if self._variable else None
        request = _Request(inputs, rows, key, loop.create_future(), deadline)
        if deadline is not None:
            request.timer = loop.call_later(deadline - request.enqueued, self._expire, request)
        self._queue.append(request)
        self._queued_rows += rows
        self._m_depth.set(len(self._queue))
        # The dispatcher needs waking only by the first request (it sleeps on an empty queue) and
        # by the one that completes a batch; in between it sleeps on its own timer. Waking it for
        # every arrival cost a task switch per request, the biggest batcher cost on small models.
        if len(self._queue) == 1 or self._queued_rows >= self.spec.max_batch_size:
            self._wakeup.set()
        try:
            return await request.future
        finally:
            if request.timer is not None:
                request.timer.cancel()
            if request.queued:  # cancelled while waiting: leave the queue
                self._discard(request)

    def _rows(self, inputs: Tensors) -> int:
        if not inputs:
            raise InvalidInputError(f"no inputs for {self.what}")
        if not self.spec.batching:
            return 1
        counts = {a.shape[0] if a.ndim else 0 for a in inputs.values()}
        if len(counts) != 1:
            raise InvalidInputError(
                f"inputs for {self.what} disagree on the batch size (first dimension): "
                f"{sorted(counts)}"
            )
        rows = counts.pop()
        if not 1 <= rows <= self.spec.max_batch_size:
            raise InvalidInputError(
                f"{self.what} takes 1 to {self.spec.max_batch_size} rows per request, got {rows}"
            )
        return rows

    def _expire(self, request: _Request) -> None:
        # Only while queued: once running, the rows are moments away and still worth returning.
        if request.queued and not request.future.done():
            self._discard(request)
            waited = time.monotonic() - request.enqueued
            request.future.set_exception(
                DeadlineExceededError(
                    f"deadline passed after {waited:.3f}s in the queue of {self.what}"
                )
            )

    def _discard(self, request: _Request) -> None:
        request.queued = False
        try:
            self._queue.remove(request)
        except ValueError:
            return  # already taken by the dispatcher
        self._queued_rows -= request.rows
        self._m_depth.set(len(self._queue))

    def _fail_queue(self, error: ConvserveError) -> None:
        while self._queue:
            request = self._queue.popleft()
            request.queued = False
            if request.timer is not None:
                request.timer.cancel()
            if not request.future.done():
                # A fresh instance per request: a shared one would collect every raiser's traceback.
                request.future.set_exception(type(error)(str(error)))
        self._queued_rows = 0
        self._m_depth.set(0)

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
            self._fail_queue(ModelNotReadyError(f"{self.what} stopped"))
            raise
        except Exception:
            # A bug here must not leave callers waiting forever.
            logger.exception("batcher for %s crashed", self.what)
            self._accepting = False
            self._fail_queue(InferenceError(f"inference failed for {self.what}"))

    def _finished(self, idle: asyncio.Queue[int], index: int, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        idle.put_nowait(index)

    async def _collect(self) -> list[_Request] | None:
        """Wait for a batch worth sending; None once stopping with nothing left."""
        spec = self.spec
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._stopping:
                    return None
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            full = not spec.batching or self._queued_rows >= spec.max_batch_size
            wait = self._queue[0].enqueued + spec.max_queue_delay_s - time.monotonic()
            if not (full or self._stopping or wait <= 0):
                queued = len(self._queue)
                if self._eager:
                    # Let the loop run once, so requests that have already reached the server
                    # join; go once the queue stops growing (the delay caps a flood).
                    await asyncio.sleep(0)
                    if len(self._queue) != queued:
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
            batch = self._take()
            if batch:
                return batch

    def _take(self) -> list[_Request]:
        """Pop requests FIFO while they fit; with variable dims, only same-shaped ones."""
        now = time.monotonic()
        limit = self.spec.max_batch_size if self.spec.batching else 1
        batch: list[_Request] = []
        rows = 0
        skipped: list[_Request] = []
        while self._queue and rows < limit:
            request = self._queue.popleft()
            if request.future.done():  # cancelled; its submit() has not run its finally yet
                request.queued = False
                continue
            if rows + request.rows > limit or (batch and request.key != batch[0].key):
                skipped.append(request)
                if rows + request.rows > limit:
                    break
                continue
            request.queued = False
            if request.timer is not None:
                request.timer.cancel()
            if request.deadline is not None and request.deadline <= now:
                request.future.set_exception(
                    DeadlineExceededError(f"deadline passed in the queue of {self.what}")
                )
                continue
            batch.append(request)
            rows += request.rows if self.spec.batching else 1
        self._queue.extendleft(reversed(skipped))
        self._queued_rows = sum(r.rows for r in self._queue)
        self._m_depth.set(len(self._queue))
        return batch

    async def _run(self, index: int, batch: list[_Request]) -> None:
        started = time.monotonic()
        for request in batch:
            waited = started - request.enqueued
            self._m_queue_wait.observe(waited)
            self.stats.queue.add(waited)
        rows = sum(r.rows for r in batch)
        loop = asyncio.get_running_loop()
        try:
            results, phases = await loop.run_in_executor(
                self._executor, self._compute, index, batch, rows
            )
        except Exception:
            logger.exception("inference failed for %s (batch of %d rows)", self.what, rows)
            for request in batch:
                self.stats.fail.add(time.monotonic() - request.enqueued)
                if not request.future.done():
                    request.future.set_exception(
                        InferenceError(f"inference failed for {self.what}")
                    )
            return
        finished = time.monotonic()
        self._m_compute.observe(sum(phases))
        self._m_batch.observe(rows)
        stats = self.stats
        stats.execution_count += 1
        stats.inference_count += rows
        stats.last_inference_ms = int(time.time() * 1000)
        for counter, seconds in zip(
            (stats.compute_input, stats.compute_infer, stats.compute_output), phases, strict=True
        ):
            counter.add(seconds, len(batch))
        stats.batches.setdefault(rows, Duration()).add(sum(phases))
        for request, result in zip(batch, results, strict=True):
            stats.success.add(finished - request.enqueued)
            if not request.future.done():  # cancelled meanwhile: the rows are dropped
                request.future.set_result(result)

    def _compute(
        self, index: int, batch: list[_Request], rows: int
    ) -> tuple[list[Tensors], tuple[float, float, float]]:
        """Worker thread: fill the input buffers, run, split the outputs per request."""
        t0 = time.perf_counter()
        if not self.spec.batching:
            feed = batch[0].inputs
        else:
            size = self._bucket(rows)
            if len(batch) == 1 and size == rows:
                feed = batch[0].inputs  # nothing to pack: no copy
            else:
                feed = {
                    t.name: self._pack(index, t.name, batch, rows, size) for t in self.spec.inputs
                }
        t1 = time.perf_counter()
        outputs = self._runtimes[index].run(feed)
        t2 = time.perf_counter()
        if not self.spec.batching or (len(batch) == 1 and feed is batch[0].inputs):
            results = [outputs]
        else:
            results = []
            offset = 0
            for request in batch:
                # Copy: a view would pin the padded batch, and an output may alias the buffer
                # (Identity) that the next batch overwrites.
                end = offset + request.rows
                results.append({name: out[offset:end].copy() for name, out in outputs.items()})
                offset = end
        t3 = time.perf_counter()
        return results, (t1 - t0, t2 - t1, t3 - t2)

    def _bucket(self, rows: int) -> int:
        if not self._pad:
            return rows
        for size in self.spec.buckets:
            if size >= rows:
                return size
        return rows  # no buckets (padding off)

    def _pack(
        self, index: int, name: str, batch: list[_Request], rows: int, size: int
    ) -> np.ndarray:
        parts = [r.inputs[name] for r in batch]
        first = parts[0]
        # One buffer per input, sized for the largest batch, used through a leading slice (still
        # C-contiguous, so ONNX Runtime reads it without a copy): one buffer per batch size seen
        # would hold up to max_batch_size buffers per input (over 1 GB for a 224-px model).
        buffers = self._buffers[index].setdefault(0, {})
        capacity = max(size, self.spec.max_batch_size, *self.spec.buckets)
        buffer = buffers.get(name)
        if (
            buffer is None
            or len(buffer) < size
            or buffer.shape[1:] != first.shape[1:]
            or buffer.dtype != first.dtype
        ):
            buffer = np.empty((capacity, *first.shape[1:]), dtype=first.dtype)
            if not self._variable:  # variable shapes would keep reallocating: don't cache
                buffers[name] = buffer
        buffer = buffer[:size]
        offset = 0
        for part in parts:
            buffer[offset : offset + len(part)] = part
            offset += len(part)
        # Padding repeats the last real row: real data keeps every kernel on its usual path
        # (no denormals or NaN from garbage); the padded rows' outputs are dropped.
        buffer[rows:size] = buffer[rows - 1]
        return buffer

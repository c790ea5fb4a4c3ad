"""The queue of one model version: pending requests, FIFO, bounded, with deadlines.

The bound is in *requests* (Triton's `max_queue_size` semantics), not rows: a full queue holds
at most max_queue_size × max_batch_size rows. A request whose deadline passes while queued fails
with DeadlineExceededError without running (a timer fires at the deadline); a cancelled one
leaves the queue. `take` pops the next batch: FIFO while the rows fit, and for a model with
variable dimensions only requests whose shapes match the first one's.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

import numpy as np

from service.errors import ConvserveError, DeadlineExceededError

Tensors = dict[str, np.ndarray]


class Request:
    """One submitted request: its arrays, rows, future and deadline."""

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


class RequestQueue:
    """FIFO of Requests."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.rows = 0  # kept, not summed, since it is read on every arrival
        self._items: deque[Request] = deque()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def oldest(self) -> Request:
        return self._items[0]

    def push(self, request: Request) -> None:
        if request.deadline is not None:
            loop = asyncio.get_running_loop()
            request.timer = loop.call_later(
                request.deadline - request.enqueued, self._expire, request
            )
        self._items.append(request)
        self.rows += request.rows

    def discard(self, request: Request) -> None:
        """Remove a request that is still queued (cancelled, expired)."""
        request.queued = False
        try:
            self._items.remove(request)
        except ValueError:
            return  # already taken into a batch
        self.rows -= request.rows

    def fail_all(self, error: ConvserveError) -> None:
        while self._items:
            request = self._items.popleft()
            request.queued = False
            if request.timer is not None:
                request.timer.cancel()
            if not request.future.done():
                # A fresh instance per request: a shared one would collect every raiser's traceback.
                request.future.set_exception(type(error)(str(error)))
        self.rows = 0

    def take(self, limit: int) -> list[Request]:
        """Pop a batch: FIFO while rows fit in `limit`, same-shaped requests only when keyed."""
        now = time.monotonic()
        batch: list[Request] = []
        rows = 0
        skipped: list[Request] = []
        while self._items and rows < limit:
            request = self._items.popleft()
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
            rows += request.rows
        self._items.extendleft(reversed(skipped))
        self.rows = sum(r.rows for r in self._items)
        return batch

    def _expire(self, request: Request) -> None:
        # Only while queued: once running, the rows are moments away and still worth returning.
        if request.queued and not request.future.done():
            self.discard(request)
            waited = time.monotonic() - request.enqueued
            request.future.set_exception(
                DeadlineExceededError(
                    f"deadline passed after {waited:.3f}s in the queue of {self.what}"
                )
            )

"""One thread per model instance, running its batches: ONNX Runtime off the event loop, cheaply.

`loop.run_in_executor` costs a concurrent Future, a work item, the pool's locks and semaphore,
and an asyncio future chained to it — measured at about twice the CPU of this module's path per
hop (a SimpleQueue put, and `call_soon_threadsafe` back), which on a small model is paid by
nearly every request. An instance runs one batch at a time anyway, so one thread per instance is
all the pool ever used.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
_STOP = object()


class Worker:
    """A daemon thread that runs the callables given to `run`, one at a time, in order."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run `fn(*args)` in the thread; the future (of the calling loop) gets its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((loop, future, fn, args))
        return future

    def stop(self) -> None:
        """Finish the jobs already given, then end the thread (without waiting for it)."""
        self._jobs.put(_STOP)

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not _STOP:
            loop, future, fn, args = job
            try:
                result, error = fn(*args), None
            except BaseException as exc:  # the caller's future carries it, as an executor's would
                result, error = None, exc
            # A closed loop (RuntimeError) has nobody waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, future, result, error)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the awaiting task was cancelled meanwhile
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)

"""service.batcher.worker: one thread per instance, results and errors back on the loop."""

from __future__ import annotations

import asyncio
import threading

import pytest

from service.batcher.worker import Worker


async def test_runs_in_its_thread_in_order_and_returns_results() -> None:
    worker = Worker("test-worker")
    seen: list[tuple[int, str]] = []

    def job(i: int) -> int:
        seen.append((i, threading.current_thread().name))
        return i * i

    results = await asyncio.gather(*(worker.run(job, i) for i in range(20)))
    worker.stop()
    assert results == [i * i for i in range(20)]
    assert [i for i, _ in seen] == list(range(20))
    assert {name for _, name in seen} == {"test-worker"}


async def test_errors_reach_the_caller_and_the_thread_goes_on() -> None:
    worker = Worker("test-worker")

    def boom() -> None:
        raise ValueError("bad batch")

    with pytest.raises(ValueError, match="bad batch"):
        await worker.run(boom)
    assert await worker.run(lambda: 7) == 7
    worker.stop()


async def test_a_cancelled_caller_does_not_break_the_delivery() -> None:
    worker = Worker("test-worker")
    gate = threading.Event()
    waiting = asyncio.ensure_future(worker.run(gate.wait, 10))
    await asyncio.sleep(0.01)
    waiting.cancel()
    gate.set()
    assert await worker.run(lambda: "next") == "next"  # the result for nobody was dropped
    worker.stop()

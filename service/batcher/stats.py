"""What a batcher counts: Triton-shaped statistics and the Prometheus series of one model version.

`ModelStats` is what KServe's ModelStatistics RPC reports; `BatchRecorder` updates it together
with the version's metric children, which are looked up once here rather than per batch
(`labels()` is a dictionary lookup under a lock, and it ran several times per request).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from service.metrics import Metrics


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


class BatchRecorder:
    """Statistics and metrics of one model version, fed by its batcher."""

    def __init__(self, metrics: Metrics, model: str, version: str) -> None:
        self.stats = ModelStats()
        labels = {"model": model, "version": version}
        self._queue_wait = metrics.queue_wait_seconds.labels(**labels)
        self._compute = metrics.compute_duration_seconds.labels(**labels)
        self._batch_size = metrics.batch_size.labels(**labels)
        self._depth = metrics.queue_depth.labels(**labels)

    def queue_depth(self, read: Callable[[], int]) -> None:
        """The depth gauge reads `read()` when scraped (nothing to update per request)."""
        self._depth.set_function(read)

    def started(self, waited: list[float]) -> None:
        """A batch left the queue; `waited` holds each of its requests' queue time."""
        for seconds in waited:
            self._queue_wait.observe(seconds)
            self.stats.queue.add(seconds)

    def succeeded(
        self, rows: int, phases: tuple[float, float, float], requests: list[float]
    ) -> None:
        """A batch ran: its (input, infer, output) times and each request's total time."""
        total = sum(phases)
        self._compute.observe(total)
        self._batch_size.observe(rows)
        stats = self.stats
        stats.execution_count += 1
        stats.inference_count += rows
        stats.last_inference_ms = int(time.time() * 1000)
        for counter, seconds in zip(
            (stats.compute_input, stats.compute_infer, stats.compute_output), phases, strict=True
        ):
            counter.add(seconds, len(requests))
        stats.batches.setdefault(rows, Duration()).add(total)
        for seconds in requests:
            stats.success.add(seconds)

    def failed(self, requests: list[float]) -> None:
        for seconds in requests:
            self.stats.fail.add(seconds)

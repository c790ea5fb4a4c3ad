"""service.batcher `batch_policy`: `eager` (the default) sends at once on an idle instance yet still
batches what arrives together and what piles up while the instance is busy; `delay` waits."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from service.batcher import DynamicBatcher
from service.errors import ModelLoadError
from service.metrics import Metrics
from tests.service.batcher.test_batcher import (
    FakeRuntime,
    Models,
    echo_spec,
    gate,
    models,
    rows,
    until,
)
from tests.service.test_config import DOCUMENTED, spec_from, write

pytestmark = pytest.mark.timeout(60)
__all__ = ["gate", "models"]  # fixtures shared with test_batcher


async def test_eager_lone_request_does_not_wait_for_the_delay(models: Models) -> None:
    runtime = FakeRuntime()
    batcher = DynamicBatcher(
        echo_spec(models, max_queue_delay_s=5.0, batch_policy="eager"), [runtime], Metrics(), "1"
    )
    await batcher.start()
    x = rows(7)
    started = time.monotonic()
    out = await asyncio.wait_for(batcher.submit({"x": x}), 4)
    assert time.monotonic() - started < 1.0  # far below the 5 s delay
    np.testing.assert_array_equal(out["y"], x * 2)
    await batcher.stop()


async def test_delay_policy_waits_for_the_delay(models: Models) -> None:
    spec = echo_spec(models, max_queue_delay_s=0.3)
    batcher = DynamicBatcher(spec, [FakeRuntime()], Metrics(), "1")
    assert echo_spec(models).batch_policy == "delay"  # named in the test config
    await batcher.start()
    started = time.monotonic()
    await asyncio.wait_for(batcher.submit({"x": rows(1)}), 4)
    assert time.monotonic() - started >= 0.25
    await batcher.stop()


async def test_eager_batches_requests_that_arrive_together(models: Models) -> None:
    runtime = FakeRuntime()
    spec = echo_spec(models, max_queue_delay_s=5.0, batch_policy="eager")
    batcher = DynamicBatcher(spec, [runtime], Metrics(), "1")
    await batcher.start()
    inputs = [rows(i, i + 0.5) for i in range(3)]
    outs = await asyncio.wait_for(asyncio.gather(*(batcher.submit({"x": x}) for x in inputs)), 4)
    await batcher.stop()
    assert [len(b) for b in runtime.batches] == [6]  # one batch, no 5 s wait
    for x, out in zip(inputs, outs, strict=True):
        np.testing.assert_array_equal(out["y"], x * 2)


async def test_eager_batches_what_queues_while_the_instance_is_busy(
    models: Models, gate: threading.Event
) -> None:
    runtime = FakeRuntime(gate)
    spec = echo_spec(models, max_queue_delay_s=5.0, batch_policy="eager")
    batcher = DynamicBatcher(spec, [runtime], Metrics(), "1")
    await batcher.start()
    first = asyncio.ensure_future(batcher.submit({"x": rows(0)}))
    await until(lambda: runtime.running == 1)  # the instance is busy with the first request
    later = [asyncio.ensure_future(batcher.submit({"x": rows(i)})) for i in (1, 2, 3)]
    await until(lambda: batcher.queue_depth == 3)
    gate.set()
    await asyncio.wait_for(asyncio.gather(first, *later), 4)
    await batcher.stop()
    assert [len(b) for b in runtime.batches] == [1, 3]


@pytest.mark.parametrize("policy", ["eager", "delay", "EAGER"])
def test_batch_policy_parameter(tmp_path: Path, policy: str) -> None:
    text = (
        DOCUMENTED + f'parameters {{ key: "batch_policy" value: {{ string_value: "{policy}" }} }}'
    )
    assert spec_from(write(tmp_path, text)).batch_policy == policy.lower()


def test_bad_batch_policy(tmp_path: Path) -> None:
    text = DOCUMENTED + 'parameters { key: "batch_policy" value: { string_value: "greedy" } }'
    with pytest.raises(ModelLoadError, match="batch_policy"):
        spec_from(write(tmp_path, text))


def test_a_config_naming_no_policy_gets_eager(tmp_path: Path) -> None:
    assert "batch_policy" not in DOCUMENTED
    assert spec_from(write(tmp_path, DOCUMENTED)).batch_policy == "eager"

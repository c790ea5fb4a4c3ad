"""service/tune/space.py: knob values read from and written into Triton configs."""

from __future__ import annotations

from dataclasses import replace

import pytest

from service._proto.inference import model_config_pb2
from service.config import DEFAULT_BATCH_POLICY, load_spec
from service.config_text import parse
from service.tune.space import AXES, Knobs, Limits, apply, axis_values, knobs_of
from tests.service.onnx_builders import write_model

EXTRA = 'parameters { key: "batch_buckets" value: { string_value: "1,2,4,8" } }\n'


def _config(text: str) -> model_config_pb2.ModelConfig:
    config = model_config_pb2.ModelConfig()
    parse(text, config)
    return config


@pytest.fixture
def model_dir(tmp_path):
    return write_model(tmp_path, "m", max_batch_size=8, delay_us=2000, instances=2,
                       extra_config=EXTRA)  # fmt: skip


def test_knobs_of_a_config(model_dir):
    knobs = knobs_of(_config((model_dir / "config.pbtxt").read_text()))
    assert knobs == Knobs(8, 2000, "delay", 2, 0)
    assert knobs.label() == "b8 d2000us delay i2 t-"
    # Defaults: no policy parameter is the server's default, no instance group is one instance.
    bare = _config('name: "m" max_batch_size: 4')
    assert knobs_of(bare) == Knobs(4, 0, DEFAULT_BATCH_POLICY.value, 1, 0)
    gpus = _config('name: "m" instance_group [ { count: 2 gpus: [ 0, 1 ] } ]')
    assert knobs_of(gpus).instances == 4


def test_apply_sets_every_knob_and_the_result_loads(model_dir, rng):
    base = _config((model_dir / "config.pbtxt").read_text())
    for _ in range(6):
        knobs = Knobs(
            max_batch_size=int(rng.choice([1, 2, 4, 16])),
            queue_delay_us=int(rng.integers(0, 20_000)),
            batch_policy=str(rng.choice(["eager", "delay"])),
            instances=int(rng.integers(1, 5)),
            intra_op_threads=int(rng.integers(0, 4)),
        )
        tuned = apply(base, knobs)
        assert knobs_of(tuned) == knobs
        spec = load_spec(model_dir, tuned, default_max_queue_size=64)
        assert spec.max_batch_size == knobs.max_batch_size
        assert spec.instances == knobs.instances
        assert spec.intra_op_threads == knobs.intra_op_threads
        assert all(b <= knobs.max_batch_size for b in spec.buckets)
        # Untouched: tensors, labels, the queue, the other parameters.
        assert tuned.input == base.input and tuned.output == base.output
        assert tuned.parameters["task"] == base.parameters["task"]
        policy = tuned.dynamic_batching.default_queue_policy
        assert policy == base.dynamic_batching.default_queue_policy


def test_apply_changes_only_what_differs(model_dir):
    base = _config((model_dir / "config.pbtxt").read_text())
    assert apply(base, knobs_of(base)) == base
    one = apply(base, replace(knobs_of(base), queue_delay_us=500))
    assert one.dynamic_batching.max_queue_delay_microseconds == 500
    one.dynamic_batching.max_queue_delay_microseconds = 2000
    assert one == base


def test_apply_cuts_batch_sizes_to_the_new_limit(model_dir):
    base = _config((model_dir / "config.pbtxt").read_text())
    small = apply(base, replace(knobs_of(base), max_batch_size=2))
    assert list(small.dynamic_batching.preferred_batch_size) == [2]
    assert small.parameters["batch_buckets"].string_value == "1,2"
    one = apply(base, replace(knobs_of(base), max_batch_size=1))
    assert list(one.dynamic_batching.preferred_batch_size) == []
    assert one.parameters["batch_buckets"].string_value == "1"
    load_spec(model_dir, one, default_max_queue_size=64)


def test_threads_zero_removes_the_parameter(model_dir):
    base = _config((model_dir / "config.pbtxt").read_text())
    two = apply(base, replace(knobs_of(base), intra_op_threads=2))
    assert two.parameters["intra_op_thread_count"].string_value == "2"
    back = apply(two, replace(knobs_of(two), intra_op_threads=0))
    assert "intra_op_thread_count" not in back.parameters


def test_axis_values(model_dir):
    base = _config((model_dir / "config.pbtxt").read_text())
    axes = axis_values(base, Limits(max_batch_size=16, instances=3, intra_op_threads=4), 10.0)
    assert set(axes) == set(AXES)
    assert axes["max_batch_size"] == [1, 2, 4, 8, 16]
    assert axes["queue_delay_us"][0] == 0 and max(axes["queue_delay_us"]) <= 5000  # half of 10 ms
    assert axes["batch_policy"] == ["delay", "eager"]
    assert axes["instances"] == [1, 2, 3]
    assert axes["intra_op_threads"] == [0, 1, 2, 4]
    for axis, values in axes.items():
        assert getattr(knobs_of(base), axis) in values
    # A delay past the budget's half is still a candidate when it is the current one.
    tight = axis_values(base, Limits(), 1.0)
    assert 2000 in tight["queue_delay_us"] and 1000 not in tight["queue_delay_us"]


def test_a_model_without_batching_keeps_it():
    config = _config('name: "m" max_batch_size: 0')
    axes = axis_values(config, Limits(), 50.0)
    assert axes["max_batch_size"] == [0]
    assert axes["queue_delay_us"] == [0]
    assert len(axes["instances"]) > 1

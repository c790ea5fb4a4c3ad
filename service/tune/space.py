"""What `convserve tune` varies: five knobs of a model's config, their candidate values, and how a
set of knob values becomes a ModelConfig.

The knobs and the config keys they set (service/config.py reads them):
  max_batch_size     max_batch_size (and preferred_batch_size / parameter batch_buckets are cut
                     to it, since sizes above it make the load fail)
  queue_delay_us     dynamic_batching.max_queue_delay_microseconds
  batch_policy       parameter batch_policy: eager | delay (service/batcher)
  instances          instance_group count (one group: the first one's kind and gpus are kept)
  intra_op_threads   parameter intra_op_thread_count (0: the server's --intra-op-threads)

`apply` changes only the fields whose value differs from the base config's, so everything else
in it (tensors, labels, convserve's own parameters, unknown-to-tune settings) is kept as it was.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from service._proto.inference import model_config_pb2
from service.config import DEFAULT_BATCH_POLICY
from service.spec import BatchPolicy

ModelConfig = model_config_pb2.ModelConfig

AXES = ("max_batch_size", "queue_delay_us", "batch_policy", "instances", "intra_op_threads")
POLICY_KEY = "batch_policy"
THREADS_KEY = "intra_op_thread_count"
BUCKETS_KEY = "batch_buckets"
DELAYS_US = (0, 100, 250, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000)


@dataclass(frozen=True)
class Knobs:
    """One point of the search space."""

    max_batch_size: int
    queue_delay_us: int
    batch_policy: str
    instances: int
    intra_op_threads: int

    def label(self) -> str:
        """Short form for progress lines and tables: `b16 d1000us eager i2 t1`."""
        threads = f"t{self.intra_op_threads}" if self.intra_op_threads else "t-"
        return (
            f"b{self.max_batch_size} d{self.queue_delay_us}us {self.batch_policy} "
            f"i{self.instances} {threads}"
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Limits:
    """Upper bounds of the search (the server's cores are not visible from the client)."""

    max_batch_size: int = 64
    instances: int = 4
    intra_op_threads: int = 4


def knobs_of(config: ModelConfig) -> Knobs:
    """The knob values a config has now."""
    policy = config.parameters[POLICY_KEY].string_value if POLICY_KEY in config.parameters else ""
    threads = (
        config.parameters[THREADS_KEY].string_value if THREADS_KEY in config.parameters else ""
    )
    return Knobs(
        max_batch_size=config.max_batch_size,
        queue_delay_us=config.dynamic_batching.max_queue_delay_microseconds,
        batch_policy=(policy.strip().lower() or DEFAULT_BATCH_POLICY.value),
        instances=_instances(config),
        intra_op_threads=int(threads.strip() or 0),
    )


def _instances(config: ModelConfig) -> int:
    # As service.config._instance_devices counts them: `count` per listed GPU, at least 1.
    groups = config.instance_group or [model_config_pb2.ModelInstanceGroup(count=1)]
    return sum(max(g.count, 1) * max(len(g.gpus), 1) for g in groups)


def axis_values(config: ModelConfig, limits: Limits, p99_ms: float) -> dict[str, list[Any]]:
    """Sorted candidate values per axis (the current value always among them).

    A model without batching (max_batch_size 0) keeps it: batching needs a batch axis the graph
    may not have. Queue delays past half the p99 budget cannot help meet it, so they are left out.
    An instance group spread over several GPUs keeps its count (instances come in multiples of
    the GPUs listed there).
    """
    current = knobs_of(config)
    values: dict[str, set[Any]] = {axis: {getattr(current, axis)} for axis in AXES}
    if current.max_batch_size > 0:
        top = max(limits.max_batch_size, 1)
        values["max_batch_size"] |= {1 << i for i in range(top.bit_length()) if 1 << i <= top}
        values["queue_delay_us"] |= {d for d in DELAYS_US if d <= p99_ms * 1000 / 2}
        values["batch_policy"] |= {p.value for p in BatchPolicy}
    if not any(len(g.gpus) > 1 for g in config.instance_group):
        values["instances"] |= set(range(1, max(limits.instances, 1) + 1))
    values["intra_op_threads"] |= {0} | {
        1 << i
        for i in range(limits.intra_op_threads.bit_length())
        if 1 << i <= limits.intra_op_threads
    }
    order = {p.value: i for i, p in enumerate(BatchPolicy)}
    return {
        axis: sorted(v, key=(lambda p: order.get(p, 99)) if axis == "batch_policy" else None)
        for axis, v in values.items()
    }


def apply(base: ModelConfig, knobs: Knobs) -> ModelConfig:
    """A copy of `base` with the knobs set; fields whose value does not change stay untouched."""
    config = ModelConfig()
    config.CopyFrom(base)
    was = knobs_of(base)
    if knobs.max_batch_size != was.max_batch_size:
        limit = knobs.max_batch_size
        config.max_batch_size = limit
        batching = config.dynamic_batching
        kept = [s for s in batching.preferred_batch_size if s <= limit]
        del batching.preferred_batch_size[:]
        batching.preferred_batch_size.extend(kept)
        _cut_buckets(config, limit)
    if knobs.queue_delay_us != was.queue_delay_us:
        config.dynamic_batching.max_queue_delay_microseconds = knobs.queue_delay_us
    if knobs.batch_policy != was.batch_policy:
        config.parameters[POLICY_KEY].string_value = knobs.batch_policy
    if knobs.instances != was.instances:
        first = base.instance_group[0] if base.instance_group else None
        del config.instance_group[:]
        group = config.instance_group.add()
        if first is not None:
            group.CopyFrom(first)
            group.ClearField("count")
        per_gpu = max(len(group.gpus), 1)
        group.count = max(knobs.instances // per_gpu, 1)
    if knobs.intra_op_threads != was.intra_op_threads:
        if knobs.intra_op_threads:
            config.parameters[THREADS_KEY].string_value = str(knobs.intra_op_threads)
        else:
            del config.parameters[THREADS_KEY]
    return config


def _cut_buckets(config: ModelConfig, limit: int) -> None:
    if BUCKETS_KEY not in config.parameters:
        return
    raw = config.parameters[BUCKETS_KEY].string_value
    if raw.strip().lower() == "none" or not raw.strip():
        return
    sizes = [s.strip() for s in raw.split(",") if s.strip()]
    kept = [s for s in sizes if s.isdigit() and int(s) <= limit]
    if kept:
        config.parameters[BUCKETS_KEY].string_value = ",".join(kept)
    else:
        del config.parameters[BUCKETS_KEY]

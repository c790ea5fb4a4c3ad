"""How `convserve tune` searches: trials and their scores, the concurrency ladder, and coordinate
descent over the knobs (service/tune/space.py).

A trial is one candidate config, loaded on the server and measured:
  * throughput phase: closed-loop runs up a ladder of concurrencies (powers of two). The ladder
    starts one rung below where the best config so far did best (a good config rarely peaks far
    from the last one), climbs while p99 stays under the budget and throughput still grows by
    `min_gain`, and steps down instead when its first rung is already over the budget. Its score
    is the best throughput of a run with p99 under the budget and no errors.
  * latency phase: one run at a fixed rate (the target). Its score is that run's p99, if it had
    no errors and kept up with the rate.
Scores are (class, value) pairs compared class first: a trial that meets the goal beats one that
does not; among those that do not, the one closest to it (lower p99, more throughput) wins, so
the search moves toward the budget even from a config far from it.

Coordinate descent: from the current config, one axis at a time, step to the neighbouring value
on each side; keep stepping while the score improves by more than `min_gain` (measurements on a
busy machine are noisy: smaller gains are not worth a move), then go to the next axis; repeat
the axes until a pass moves nothing or time runs out. A config is measured at most once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from service.tune.space import AXES, Knobs

Score = tuple[int, float]
NO_SCORE: Score = (0, 0.0)
KEEP_UP = 0.95  # a rate run that completed fewer than this share of the rate fell behind


@dataclass(frozen=True)
class Run:
    """One load run of a trial (closed loop at `concurrency`, or fixed `rate`)."""

    concurrency: int
    rate: float  # requests/s; 0: closed loop
    requests: int
    throughput_rps: float
    p50_ms: float
    p99_ms: float
    errors: Mapping[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.requests > 0 and not self.errors and not math.isnan(self.p99_ms)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: a run without samples has null percentiles, not NaN."""
        out = {**asdict(self), "errors": dict(self.errors)}
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in out.items()}


@dataclass
class Trial:
    """One candidate config and what was measured with it."""

    index: int
    phase: str  # "throughput" | "latency"
    knobs: Knobs
    load_s: float = 0.0
    seconds: float = 0.0
    error: str = ""  # the server refused the config
    runs: list[Run] = field(default_factory=list)

    def best_under(self, p99_ms: float) -> Run | None:
        """The closed-loop run with the most throughput whose p99 met the budget."""
        meeting = [r for r in self.runs if not r.rate and r.ok and r.p99_ms <= p99_ms]
        return max(meeting, key=lambda r: r.throughput_rps, default=None)

    def rate_run(self) -> Run | None:
        return next((r for r in self.runs if r.rate), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "phase": self.phase,
            "knobs": self.knobs.as_dict(),
            "label": self.knobs.label(),
            "load_s": round(self.load_s, 3),
            "seconds": round(self.seconds, 3),
            "error": self.error,
            "runs": [r.as_dict() for r in self.runs],
        }


def throughput_score(trial: Trial, p99_ms: float) -> Score:
    best = trial.best_under(p99_ms)
    if best is not None:
        return (2, best.throughput_rps)
    measured = [r.p99_ms for r in trial.runs if r.ok]
    return (1, -min(measured)) if measured else NO_SCORE


def latency_score(trial: Trial, rate: float) -> Score:
    run = trial.rate_run()
    if run is None or run.requests == 0:
        return NO_SCORE
    if run.ok and run.throughput_rps >= KEEP_UP * rate:
        return (2, -run.p99_ms)
    return (1, run.throughput_rps)


def better(a: Score, b: Score, min_gain: float) -> bool:
    """Whether score `a` beats `b` by more than the noise allowance."""
    if a[0] != b[0]:
        return a[0] > b[0]
    if a[0] == NO_SCORE[0]:
        return False
    return a[1] > b[1] + min_gain * abs(b[1])


def ladder(
    run: Callable[[int], Run | None],
    *,
    start: int,
    top: int,
    p99_ms: float,
    max_runs: int,
    min_gain: float,
) -> list[Run]:
    """Closed-loop runs at concurrencies start, 2·start, ... (see the module docstring).

    `run(c)` returns None when there is no time left for a run."""

    def meets(r: Run) -> bool:
        return r.ok and r.p99_ms <= p99_ms

    runs: list[Run] = []
    best: Run | None = None
    c = max(1, min(start, top))
    while c <= top and len(runs) < max_runs:
        r = run(c)
        if r is None:
            return runs
        runs.append(r)
        if not meets(r):
            break
        if best is not None and r.throughput_rps < best.throughput_rps * (1 + min_gain):
            break  # saturated: more in flight only adds queueing
        best = r
        c *= 2
    if best is None:  # over the budget from the first rung: fewer in flight
        c = max(1, min(start, top)) // 2
        while c >= 1 and len(runs) < max_runs:
            r = run(c)
            if r is None:
                break
            runs.append(r)
            if meets(r):
                break
            c //= 2
    return runs


class OutOfTimeError(Exception):
    """No time left for another trial."""


def descend(
    start: Knobs,
    axes: Mapping[str, Sequence[Any]],
    evaluate: Callable[[Knobs], Score],
    min_gain: float,
) -> tuple[Knobs, Score] | None:
    """Coordinate descent from `start` (see the module docstring): the best knobs and score,
    or None when not even `start` could be measured. `evaluate` raises OutOfTimeError to stop."""
    scores: dict[Knobs, Score] = {}

    def score(knobs: Knobs) -> Score:
        if knobs not in scores:
            scores[knobs] = evaluate(knobs)
        return scores[knobs]

    try:
        best, best_score = start, score(start)
    except OutOfTimeError:
        return None
    try:
        moved = True
        while moved:
            moved = False
            for axis in AXES:
                values = list(axes[axis])
                here = values.index(getattr(best, axis))
                for step in (1, -1):
                    j, stepped = here + step, False
                    while 0 <= j < len(values):
                        candidate = replace(best, **{axis: values[j]})
                        s = score(candidate)
                        if not better(s, best_score, min_gain):
                            break
                        best, best_score, stepped = candidate, s, True
                        j += step
                    if stepped:
                        moved = True
                        break
    except OutOfTimeError:
        pass
    return best, best_score

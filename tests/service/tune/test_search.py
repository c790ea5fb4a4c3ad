"""service/tune/search.py: scores, the concurrency ladder and coordinate descent, on synthetic
measurements (the end-to-end search against a server is tests/service/test_tune.py)."""

from __future__ import annotations

import itertools
import math

import pytest

from service.tune.search import (
    NO_SCORE,
    OutOfTimeError,
    Run,
    Trial,
    better,
    descend,
    ladder,
    latency_score,
    throughput_score,
)
from service.tune.space import AXES, Knobs

AXES_VALUES = {
    "max_batch_size": [1, 2, 4, 8, 16, 32],
    "queue_delay_us": [0, 500, 1000, 2000, 5000],
    "batch_policy": ["delay", "eager"],
    "instances": [1, 2, 3, 4],
    "intra_op_threads": [0, 1, 2, 4],
}


def _run(c: int, rps: float, p99: float, rate: float = 0.0, errors=None) -> Run:
    return Run(c, rate, max(1, int(rps)), rps, p99 / 2, p99, errors or {})


def test_scores_rank_meeting_the_goal_first():
    knobs = Knobs(8, 0, "delay", 1, 0)
    meets = Trial(1, "throughput", knobs, runs=[_run(4, 500, 9), _run(8, 900, 12)])
    assert throughput_score(meets, 10) == (2, 500)
    assert meets.best_under(10).concurrency == 4
    over = Trial(2, "throughput", knobs, runs=[_run(1, 100, 30), _run(2, 150, 20)])
    assert throughput_score(over, 10) == (1, -20)  # closest to the budget
    failed = Trial(3, "throughput", knobs, runs=[_run(1, 0, math.nan, errors={"UNAVAILABLE": 1})])
    assert throughput_score(failed, 10) == NO_SCORE
    errors = Trial(4, "throughput", knobs, runs=[_run(4, 900, 5, errors={"INTERNAL": 2})])
    assert throughput_score(errors, 10) == NO_SCORE  # errors disqualify a run
    ranked = sorted([failed, over, meets], key=lambda t: throughput_score(t, 10))
    assert ranked == [failed, over, meets]

    keeps_up = Trial(5, "latency", knobs, runs=[_run(64, 99, 4, rate=100)])
    behind = Trial(6, "latency", knobs, runs=[_run(64, 60, 2, rate=100)])
    assert latency_score(keeps_up, 100) == (2, -4)
    assert latency_score(behind, 100) == (1, 60)
    assert better(latency_score(keeps_up, 100), latency_score(behind, 100), 0.03)


def test_better_needs_more_than_the_noise_allowance():
    assert better((2, 104), (2, 100), 0.03)
    assert not better((2, 102), (2, 100), 0.03)
    assert better((2, -9), (2, -10), 0.03)  # p99 9 ms beats 10 ms
    assert not better((2, -9.8), (2, -10), 0.03)
    assert better((2, 1), (1, -1), 0.03) and not better(NO_SCORE, NO_SCORE, 0.03)


def _server(capacity: float, base_ms: float):
    """A fake closed-loop server: throughput saturates at `capacity`, latency grows with c."""

    def run(c: int) -> Run:
        rps = min(capacity, c * 1000 / base_ms)
        return _run(c, rps, c * 1000 / rps * 1.5)

    return run


def test_ladder_climbs_until_the_budget_or_saturation():
    calls = []

    def run(c):
        calls.append(c)
        return _server(1000, 2.0)(c)

    runs = ladder(run, start=1, top=64, p99_ms=100, max_runs=10, min_gain=0.03)
    # 500, 1000, then 1000 again: saturated at c=4.
    assert calls == [1, 2, 4] and [r.concurrency for r in runs] == calls
    calls.clear()
    runs = ladder(run, start=8, top=64, p99_ms=10, max_runs=10, min_gain=0.03)
    assert calls == [8, 4]  # over budget at 8 (p99 12 ms): steps down to 4 (6 ms)
    assert runs[-1].p99_ms <= 10
    calls.clear()
    ladder(run, start=1, top=64, p99_ms=1e9, max_runs=2, min_gain=0.0)
    assert calls == [1, 2]  # bounded by count


def test_ladder_stops_when_time_runs_out():
    answers = iter([_run(4, 100, 5), None])
    runs = ladder(lambda c: next(answers), start=4, top=64, p99_ms=10, max_runs=9, min_gain=0.03)
    assert [r.concurrency for r in runs] == [4]


def _peak(best: Knobs):
    """A smooth score with one peak: each axis' distance from `best` costs throughput."""

    def evaluate(knobs: Knobs) -> tuple[int, float]:
        cost = sum(
            abs(AXES_VALUES[a].index(getattr(knobs, a)) - AXES_VALUES[a].index(getattr(best, a)))
            for a in AXES
        )
        return (2, 1000.0 / (1 + cost))

    return evaluate


@pytest.mark.parametrize("seed", range(5))
def test_descent_finds_the_peak_and_measures_each_config_once(seed):
    import random

    rng = random.Random(seed)
    pick = {a: rng.choice(AXES_VALUES[a]) for a in AXES}
    best = Knobs(**pick)
    start = Knobs(**{a: rng.choice(AXES_VALUES[a]) for a in AXES})
    seen: list[Knobs] = []
    score = _peak(best)

    def evaluate(knobs):
        seen.append(knobs)
        return score(knobs)

    found = descend(start, AXES_VALUES, evaluate, min_gain=0.0)
    assert found is not None and found[0] == best
    assert seen[0] == start and len(seen) == len(set(seen))
    full = math.prod(len(v) for v in AXES_VALUES.values())
    assert len(seen) < full / 10  # a search, not a grid


def test_descent_stops_when_out_of_time():
    budget = itertools.count()

    def evaluate(knobs):
        if next(budget) >= 3:
            raise OutOfTimeError
        return (2, float(knobs.max_batch_size))

    start = Knobs(1, 0, "delay", 1, 0)
    found = descend(start, AXES_VALUES, evaluate, min_gain=0.0)
    assert found == (Knobs(4, 0, "delay", 1, 0), (2, 4.0))

    def never(knobs):
        raise OutOfTimeError

    assert descend(start, AXES_VALUES, never, min_gain=0.0) is None


def test_descent_ignores_gains_within_the_noise():
    start = Knobs(8, 0, "delay", 1, 0)

    def evaluate(knobs):  # 2 % better one batch size up: not worth a move at 3 %
        return (2, 102.0 if knobs.max_batch_size == 16 else 100.0)

    assert descend(start, AXES_VALUES, evaluate, min_gain=0.03)[0] == start
    assert descend(start, AXES_VALUES, evaluate, min_gain=0.01)[0].max_batch_size == 16

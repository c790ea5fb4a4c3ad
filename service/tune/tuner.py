"""One `convserve tune` session: the two searches against a running server, within a time budget.

Phase 1 (throughput) gets THROUGHPUT_SHARE of the budget, phase 2 (p99 at the target rate) the
rest, including whatever phase 1 did not use. Each phase is a coordinate descent
(service/tune/search.py) and then a final round: its FINALISTS best trials are measured once
more at the load where they did best, and the one whose worse measurement is best wins. Before a
trial starts there must be time for it (the mean of the phase's trials so far), for the final
round and for restoring the model afterwards (its longest load so far); every run is bounded by
its warm-up, window and one request timeout. The model's own config.pbtxt is loaded back by the
caller (`restore`), whatever happens."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from statistics import fmean

import grpc

from service._proto.inference import model_config_pb2
from service.loadgen import KSERVE_INFER, Load, run_load, summarise
from service.tune.control import Control, TuneError
from service.tune.progress import Progress
from service.tune.search import (
    NO_SCORE,
    OutOfTimeError,
    Run,
    Score,
    Trial,
    descend,
    ladder,
    latency_score,
    throughput_score,
)
from service.tune.space import Knobs, Limits, apply, axis_values, knobs_of

THROUGHPUT_SHARE = 0.7
FIRST_RUNG = 4  # the first trial's ladder starts here (no best concurrency known yet)
LOAD_GUESS_S = 1.0  # a reload's time, before one has been timed
FINALISTS = 3  # trials measured again at the end of a phase
FINAL_SHARE = 0.3  # at most this share of a phase goes to its final round


@dataclass(frozen=True)
class Options:
    model: str
    p99_ms: float
    time_budget_s: float
    rate: float = 0.0  # requests/s for phase 2; 0: half the best throughput of phase 1
    run_s: float = 2.0  # measured seconds per run
    warmup_s: float = 0.5
    limits: Limits = field(default_factory=Limits)
    max_concurrency: int = 64
    runs_per_trial: int = 4
    min_gain: float = 0.03

    @property
    def request_timeout_s(self) -> float:
        # Far past the budget: such a request already failed the trial; don't wait on it long.
        return min(30.0, max(1.0, 20 * self.p99_ms / 1000))


@dataclass
class Outcome:
    original: model_config_pb2.ModelConfig
    trials: list[Trial] = field(default_factory=list)
    best_throughput: tuple[Trial, Run] | None = None
    best_latency: tuple[Trial, Run] | None = None
    rate: float = 0.0
    axes: dict[str, list[object]] = field(default_factory=dict)
    confirmed: dict[str, Run | None] = field(default_factory=dict)
    """Per goal: the winner measured once more at the same load (None: no time left)."""
    finals: dict[str, list[tuple[Trial, Run]]] = field(default_factory=dict)
    """Per goal: the final round, each finalist with its second run."""


class Tuner:
    def __init__(
        self,
        options: Options,
        control: Control,
        runner: asyncio.Runner,
        payloads: list[bytes],
        progress: Progress,
    ) -> None:
        self.options = options
        self.control = control
        self.runner = runner
        self.payloads = payloads
        self.progress = progress
        self.start = time.monotonic()
        self.end = self.start + options.time_budget_s
        self.outcome: Outcome | None = None
        self.changed = False  # the server runs a config other than its config.pbtxt
        self._on_server: Knobs | None = None
        self._deadline = self.end

    # -- the session -----------------------------------------------------------------------

    def tune(self, original: model_config_pb2.ModelConfig) -> Outcome:
        o = self.options
        outcome = self.outcome = Outcome(original=original)
        outcome.axes = axis_values(original, o.limits, o.p99_ms)
        start = self._on_server = knobs_of(original)
        phase_end = self.start + o.time_budget_s * THROUGHPUT_SHARE
        self._deadline = phase_end - self._final_reserve(phase_end - self.start)
        descend(start, outcome.axes, self._throughput_trial, o.min_gain)
        self._deadline = phase_end
        outcome.best_throughput = self._final_round("throughput")
        if outcome.best_throughput is not None and not o.rate:
            trusted = [outcome.best_throughput[1], outcome.confirmed.get("throughput")]
            outcome.rate = min(r.throughput_rps for r in trusted if r is not None and r.ok) / 2
        else:
            outcome.rate = o.rate
        if outcome.rate > 0:
            self._deadline = self.end - self._final_reserve(self.end - time.monotonic())
            origin = outcome.best_throughput[0].knobs if outcome.best_throughput else start
            descend(origin, outcome.axes, self._latency_trial, o.min_gain)
            self._deadline = self.end
            outcome.best_latency = self._final_round("latency")
        return outcome

    def _final_round(self, phase: str) -> tuple[Trial, Run] | None:
        """The phase's winner: its FINALISTS best trials measured once more at the same load;
        the one whose worse measurement is best wins (a config must be good twice, not lucky
        once). Without time for a second run, the best single measurement wins."""
        o = self.options
        assert self.outcome is not None
        rate = self.outcome.rate

        def score(trial: Trial) -> Score:
            if phase == "throughput":
                return throughput_score(trial, o.p99_ms)
            return latency_score(trial, rate)

        def best_run(trial: Trial) -> Run:
            run = trial.best_under(o.p99_ms) if phase == "throughput" else trial.rate_run()
            assert run is not None  # a finalist met the goal once
            return run

        met = [t for t in self._trials(phase) if not t.error and score(t)[0] == 2]
        finalists = sorted(met, key=score, reverse=True)[:FINALISTS]
        if not finalists:
            return None
        held: list[tuple[Score, Trial, Run]] = []
        for trial in finalists:
            again = self._confirm(trial, best_run(trial))
            if again is None:
                break  # out of time
            self.outcome.finals.setdefault(phase, []).append((trial, again))
            worse = min(score(trial), score(Trial(0, phase, trial.knobs, runs=[again])))
            if worse[0] == 2:
                held.append((worse, trial, again))
        if held:
            _, winner, again = max(held, key=lambda h: h[0])
            self.outcome.confirmed[phase] = again
        else:
            winner = finalists[0]
            finals = self.outcome.finals.get(phase, [])
            self.outcome.confirmed[phase] = finals[0][1] if finals else None
        return winner, best_run(winner)

    def restore(self) -> float:
        """Load the model's config.pbtxt back if a trial changed it; the seconds it took."""
        if not self.changed:
            return 0.0
        seconds = self.control.load(self.options.model, None)
        self.changed = False
        return seconds

    # -- trials ----------------------------------------------------------------------------

    def _throughput_trial(self, knobs: Knobs) -> Score:
        o = self.options
        trial = self._begin("throughput", knobs, self._estimate("throughput", runs=2))
        if not self._load(trial):
            return NO_SCORE
        incumbent = max(
            (t for t in self._trials("throughput") if t.best_under(o.p99_ms)),
            key=lambda t: throughput_score(t, o.p99_ms),
            default=None,
        )
        best = incumbent.best_under(o.p99_ms) if incumbent is not None else None
        first = max(1, best.concurrency // 2) if best is not None else FIRST_RUNG
        trial.runs = ladder(
            lambda c: self._run(trial, c, 0.0),
            start=first,
            top=o.max_concurrency,
            p99_ms=o.p99_ms,
            max_runs=o.runs_per_trial,
            min_gain=o.min_gain,
        )
        return self._finish(trial, throughput_score(trial, o.p99_ms))

    def _latency_trial(self, knobs: Knobs) -> Score:
        assert self.outcome is not None
        trial = self._begin("latency", knobs, self._estimate("latency", runs=1))
        if not self._load(trial):
            return NO_SCORE
        run = self._run(trial, self.options.max_concurrency, self.outcome.rate)
        trial.runs = [run] if run is not None else []
        return self._finish(trial, latency_score(trial, self.outcome.rate))

    def _begin(self, phase: str, knobs: Knobs, estimate_s: float) -> Trial:
        assert self.outcome is not None
        reserve = self._restore_reserve(changes=knobs != self._on_server)
        if time.monotonic() + estimate_s + reserve > self._deadline:
            raise OutOfTimeError
        trial = Trial(len(self.outcome.trials) + 1, phase, knobs)
        self.outcome.trials.append(trial)
        trial.seconds = time.monotonic()  # the start, until _finish
        self.progress.status(self._status(trial, "loading"))
        return trial

    def _load(self, trial: Trial) -> bool:
        assert self.outcome is not None
        if trial.knobs == self._on_server:
            return True
        self._on_server = None
        self.changed = True
        config = apply(self.outcome.original, trial.knobs)
        try:
            trial.load_s = self.control.load(self.options.model, config)
        except TuneError as exc:
            trial.error = str(exc)
            self._finish(trial, NO_SCORE)
            return False
        self._on_server = trial.knobs
        return True

    def _finish(self, trial: Trial, score: Score) -> Score:
        trial.seconds = time.monotonic() - trial.seconds
        out_of_time = not trial.runs and not trial.error
        if out_of_time:
            trial.error = "the time budget ran out before its first run"
        self.progress.trial(trial, self.options.p99_ms, self.outcome.rate if self.outcome else 0)
        if out_of_time:
            raise OutOfTimeError
        return score

    def _confirm(self, trial: Trial, run: Run) -> Run | None:
        """A winner measured once more, at the same load, after the search: on a busy machine
        one lucky run can win a search; a second one says how far to trust it."""
        o = self.options
        load_s = trial.load_s if trial.knobs != self._on_server else 0.0
        needed = load_s + o.warmup_s + o.run_s + self._restore_reserve(changes=True)
        if time.monotonic() + needed > self._deadline:
            return None
        if trial.knobs != self._on_server:
            assert self.outcome is not None
            self._on_server = None
            self.changed = True
            try:
                self.control.load(o.model, apply(self.outcome.original, trial.knobs))
            except TuneError:
                return None
            self._on_server = trial.knobs
        label = f"confirming trial {trial.index} {trial.knobs.label()}: "
        return self._measure(run.concurrency, run.rate, label)

    def _run(self, trial: Trial, concurrency: int, rate: float) -> Run | None:
        return self._measure(concurrency, rate, self._status(trial, ""))

    def _measure(self, concurrency: int, rate: float, label: str) -> Run | None:
        """One load run; None when it would not end before the deadline."""
        o = self.options
        if time.monotonic() + o.warmup_s + o.run_s + self._restore_reserve() > self._deadline:
            return None
        load = Load(
            concurrency=concurrency,
            channels=min(4, concurrency),
            rate=rate,
            duration=o.run_s,
            warmup=o.warmup_s,
            timeout=o.request_timeout_s,
            max_requests=int(50_000 * (o.run_s + o.warmup_s)),
        )
        what = f"c={concurrency}" if not rate else f"{rate:.0f} req/s"
        self.progress.status(f"{label}{what} ...")
        try:
            raw = self.runner.run(run_load(self.control.target, KSERVE_INFER, self.payloads, load))
        except grpc.aio.AioRpcError as exc:  # the first request, before the window, failed
            return Run(concurrency, rate, 0, 0.0, float("nan"), float("nan"), {exc.code().name: 1})
        s = summarise([raw], o.run_s)
        run = Run(
            concurrency, rate, s["requests"], s["throughput_rps"], s["p50_ms"], s["p99_ms"],
            s["errors"],
        )  # fmt: skip
        self.progress.status(
            f"{label}{what}: {run.throughput_rps:.0f} req/s, p99 {run.p99_ms:.1f} ms"
        )
        return run

    # -- bookkeeping -----------------------------------------------------------------------

    def _trials(self, phase: str) -> list[Trial]:
        return [t for t in (self.outcome.trials if self.outcome else []) if t.phase == phase]

    def _estimate(self, phase: str, runs: int) -> float:
        done = [t.seconds for t in self._trials(phase) if t.runs]
        if done:
            return fmean(done)
        o = self.options
        return runs * (o.warmup_s + o.run_s)

    def _final_reserve(self, phase_s: float) -> float:
        """Time kept at the end of a phase for its final round (at most FINAL_SHARE of it)."""
        o = self.options
        loads = [t.load_s for t in (self.outcome.trials if self.outcome else []) if t.load_s]
        per_finalist = max(loads, default=LOAD_GUESS_S) + o.warmup_s + o.run_s
        return min(FINALISTS * per_finalist, FINAL_SHARE * phase_s)

    def _restore_reserve(self, *, changes: bool = False) -> float:
        """Time to keep for loading config.pbtxt back: none while the server still runs it."""
        if not (self.changed or changes):
            return 0.0
        loads = [t.load_s for t in (self.outcome.trials if self.outcome else []) if t.load_s]
        return max(loads, default=LOAD_GUESS_S) + 0.5

    def _status(self, trial: Trial, doing: str) -> str:
        best = ""
        if self.outcome is not None:
            scored = [
                r.throughput_rps
                for t in self._trials("throughput")
                if (r := t.best_under(self.options.p99_ms)) is not None
            ]
            best = f" | best {max(scored):.0f} req/s" if scored else ""
        return f"trial {trial.index} {trial.phase} {trial.knobs.label()}{best}: {doing}"

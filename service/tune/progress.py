"""What `convserve tune` shows while it runs (on stderr): a progress line and a line per trial.

On a terminal the progress line (a bar of the time budget, the trial, what it is measuring) is
redrawn in place and each finished trial prints a line above it; elsewhere (a log, CI) only the
trial lines are written, so the output stays readable. No dependency: tqdm is not a serving one.
"""

from __future__ import annotations

import shutil
import time
from typing import TextIO

from service.tune.search import Trial

BAR = 20


class Progress:
    def __init__(self, stream: TextIO, budget_s: float, *, live: bool | None = None) -> None:
        self.stream = stream
        self.budget_s = budget_s
        self.start = time.monotonic()
        self.live = stream.isatty() if live is None else live
        self._shown = False

    def status(self, text: str) -> None:
        """Redraw the progress line (terminals only)."""
        if not self.live:
            return
        elapsed = time.monotonic() - self.start
        done = min(1.0, elapsed / self.budget_s) if self.budget_s > 0 else 1.0
        filled = round(done * BAR)
        line = (
            f"[{'#' * filled}{'-' * (BAR - filled)}] {elapsed:4.0f}/{self.budget_s:.0f} s  {text}"
        )
        width = shutil.get_terminal_size((100, 20)).columns - 1
        self.stream.write("\r" + line[:width].ljust(width))
        self.stream.flush()
        self._shown = True

    def log(self, line: str) -> None:
        """A line that stays."""
        self._clear()
        self.stream.write(line + "\n")
        self.stream.flush()

    def trial(self, trial: Trial, p99_ms: float, rate: float) -> None:
        self.log(describe(trial, p99_ms, rate))

    def close(self) -> None:
        self._clear()

    def _clear(self) -> None:
        if self._shown:
            width = shutil.get_terminal_size((100, 20)).columns - 1
            self.stream.write("\r" + " " * width + "\r")
            self._shown = False


def describe(trial: Trial, p99_ms: float, rate: float) -> str:
    """`trial 3 throughput b16 d500us eager i1 t-: 812 req/s at c=16 (p99 7.9 ms), 3 runs`."""
    head = f"trial {trial.index:>2} {trial.phase:<10} {trial.knobs.label()}: "
    if trial.error:
        return head + trial.error
    if trial.phase == "latency":
        run = trial.rate_run()
        if run is None:
            return head + "no run"
        if not run.ok:
            return head + f"errors {dict(run.errors)} at {rate:.0f} req/s"
        behind = "" if run.throughput_rps >= 0.95 * rate else " (fell behind)"
        return head + (
            f"p99 {run.p99_ms:.2f} ms at {run.throughput_rps:.0f} of {rate:.0f} req/s{behind}"
        )
    best = trial.best_under(p99_ms)
    runs = f"{len(trial.runs)} run{'s' if len(trial.runs) != 1 else ''}"
    if best is not None:
        return head + (
            f"{best.throughput_rps:.0f} req/s at c={best.concurrency} "
            f"(p99 {best.p99_ms:.2f} ms), {runs}"
        )
    measured = [r.p99_ms for r in trial.runs if r.ok]
    if measured:
        return head + f"over the p99 budget (lowest p99 {min(measured):.2f} ms), {runs}"
    errors: dict[str, int] = {}
    for r in trial.runs:
        for code, n in r.errors.items():
            errors[code] = errors.get(code, 0) + n
    return head + (f"every run failed: {errors}" if errors else "no run")

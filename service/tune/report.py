"""What `convserve tune` leaves behind: the winning config.pbtxt (or its diff), a JSON of every
trial, the plot, and the table printed at the end.

The config is the server's own ModelConfig for the model with only the tuned fields changed
(service/tune/space.apply), as protobuf text in Triton's schema, so convserve's parameters and
everything else in it survive. The JSON carries the options, the search space, every trial with
every run, the winners and the machine's load average before and after: on a shared machine the
figures mean little without it.
"""

from __future__ import annotations

import difflib
import json
import os
import time
from pathlib import Path
from typing import Any

from google.protobuf import text_format

from service.tune import plot
from service.tune.search import Run, Trial
from service.tune.space import apply
from service.tune.tuner import Options, Outcome


class Report:
    def __init__(self, options: Options, target: str, stem: Path) -> None:
        self.options = options
        self.target = target
        self.json_path = stem.with_name(stem.name + ".trials.json")
        self.plot_path = stem.with_name(stem.name + ".trials.svg")
        self.started = time.time()
        self.load_before = os.getloadavg()

    def winner(self, outcome: Outcome, goal: str) -> tuple[Trial, Run] | None:
        return outcome.best_throughput if goal == "throughput" else outcome.best_latency

    def write(self, outcome: Outcome, *, interrupted: bool, restored: bool) -> None:
        self.json_path.parent.mkdir(parents=True, exist_ok=True)
        o = self.options
        document = {
            "model": o.model,
            "server": self.target,
            "p99_budget_ms": o.p99_ms,
            "time_budget_s": o.time_budget_s,
            "elapsed_s": round(time.time() - self.started, 1),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
            "run_s": o.run_s,
            "warmup_s": o.warmup_s,
            "min_gain": o.min_gain,
            "max_concurrency": o.max_concurrency,
            "rate_rps": round(outcome.rate, 2),
            "axes": outcome.axes,
            "trials": [t.as_dict() for t in outcome.trials],
            "best_throughput": _winner(outcome, "throughput"),
            "best_latency": _winner(outcome, "latency"),
            "final_round": {
                phase: [{"trial": t.index, "again": r.as_dict()} for t, r in finals]
                for phase, finals in outcome.finals.items()
            },
            "interrupted": interrupted,
            "restored": restored,
            "machine": {
                "cpus": os.cpu_count(),
                "loadavg_before": [round(x, 2) for x in self.load_before],
                "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            },
        }
        self.json_path.write_text(json.dumps(document, indent=1, allow_nan=False))
        title = f"convserve tune: {o.model}, p99 budget {o.p99_ms:g} ms"
        if outcome.rate:
            title += f", target rate {outcome.rate:.0f} req/s"
        self.plot_path.write_text(
            plot.render(
                outcome.trials,
                title=title,
                p99_ms=o.p99_ms,
                best_throughput=outcome.best_throughput,
                best_latency=outcome.best_latency,
                again=outcome.confirmed,
            )
        )

    def artifacts(self) -> str:
        return f"trials: {self.json_path}; plot: {self.plot_path}"

    def table(self, outcome: Outcome) -> str:
        o = self.options
        rows = [("TRIAL", "PHASE", "CONFIG", "LOAD S", "REQ/S", "P99 MS", "AT")]
        for t in outcome.trials:
            run = t.rate_run() if t.phase == "latency" else t.best_under(o.p99_ms)
            at = "-"
            if run is not None:
                at = f"{run.rate:.0f}/s" if run.rate else f"c={run.concurrency}"
            rows.append(
                (
                    str(t.index),
                    t.phase,
                    t.knobs.label(),
                    f"{t.load_s:.1f}",
                    f"{run.throughput_rps:.0f}" if run else "-",
                    f"{run.p99_ms:.2f}" if run and run.ok else "-",
                    at if not t.error else t.error[:60],
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
        ]
        for goal, best in (
            ("throughput", outcome.best_throughput),
            ("latency", outcome.best_latency),
        ):
            lines.append(self._headline(outcome, goal, best))
        return "\n".join(lines)

    def _headline(self, outcome: Outcome, goal: str, best: tuple[Trial, Run] | None) -> str:
        o = self.options
        if goal == "throughput":
            what = f"best throughput with p99 under {o.p99_ms:g} ms"
            if best is None:
                return f"{what}: none"
            t, r = best
            return (
                f"{what}: trial {t.index} ({t.knobs.label()}): {r.throughput_rps:.0f} req/s "
                f"at c={r.concurrency} (p99 {r.p99_ms:.2f} ms)" + self._again(outcome, goal)
            )
        what = f"best p99 at {outcome.rate:.0f} req/s"
        if not outcome.rate:
            return f"{what}: not searched (no throughput winner and no --rate)"
        if best is None:
            return f"{what}: none kept up with the rate without errors"
        t, r = best
        return f"{what}: trial {t.index} ({t.knobs.label()}): p99 {r.p99_ms:.2f} ms" + self._again(
            outcome, goal
        )

    def _again(self, outcome: Outcome, goal: str) -> str:
        """How the winner did when measured once more."""
        if goal not in outcome.confirmed:
            return ""
        again = outcome.confirmed[goal]
        if again is None:
            return "; no time was left to measure it again"
        if not again.ok:
            return f"; measured again: errors {dict(again.errors)} (a noisy machine?)"
        figures = f"{again.throughput_rps:.0f} req/s, p99 {again.p99_ms:.2f} ms"
        held = again.p99_ms <= self.options.p99_ms if goal == "throughput" else True
        return f"; measured again: {figures}" + ("" if held else " (over the budget this time)")

    def no_winner(self, outcome: Outcome, goal: str) -> str:
        o = self.options
        measured = [(r.p99_ms, t) for t in outcome.trials for r in t.runs if r.ok]
        if goal == "latency" and outcome.rate:
            return f"no configuration kept up with {outcome.rate:.0f} req/s without errors"
        if not outcome.trials:
            return (
                f"--time-budget {o.time_budget_s:g} s is too short for a single trial "
                f"(runs of {o.warmup_s + o.run_s:g} s); give it more time"
            )
        if not measured:
            return f"no configuration could be measured (every run failed); {self.artifacts()}"
        p99, t = min(measured, key=lambda m: m[0])
        return (
            f"no configuration kept p99 under {o.p99_ms:g} ms: the lowest p99 measured was "
            f"{p99:.2f} ms (trial {t.index}, {t.knobs.label()}); raise --p99-ms, or free the "
            f"machine; {self.artifacts()}"
        )

    def config_text(self, outcome: Outcome, goal: str) -> str:
        best = self.winner(outcome, goal)
        assert best is not None
        trial = best[0]
        config = apply(outcome.original, trial.knobs)
        when = time.strftime("%Y-%m-%d", time.localtime(self.started))
        headline = self._headline(outcome, goal, best)
        return (
            f"# convserve tune {self.options.model} ({when}, server {self.target}): {headline}.\n"
            f"# Every trial: {self.json_path.name}\n" + text_format.MessageToString(config)
        )

    def diff(self, outcome: Outcome, goal: str) -> str:
        best = self.winner(outcome, goal)
        assert best is not None
        before = text_format.MessageToString(outcome.original)
        after = text_format.MessageToString(apply(outcome.original, best[0].knobs))
        if before == after:
            return "(no change: the current config is the best found)\n"
        name = self.options.model
        return "".join(
            difflib.unified_diff(
                before.splitlines(keepends=True),
                after.splitlines(keepends=True),
                fromfile=f"{name}/config.pbtxt (on the server)",
                tofile=f"{name}/config.pbtxt (tuned for {goal})",
            )
        )


def _winner(outcome: Outcome, goal: str) -> dict[str, Any] | None:
    best = outcome.best_throughput if goal == "throughput" else outcome.best_latency
    if best is None:
        return None
    trial, run = best
    again = outcome.confirmed.get(goal)
    return {
        "trial": trial.index,
        "knobs": trial.knobs.as_dict(),
        "run": run.as_dict(),
        "confirm": again.as_dict() if again is not None else None,
    }

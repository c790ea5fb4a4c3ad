"""service/tune/plot.py and progress.py: the SVG is well-formed and marks the winners; the
progress output is one line per trial off a terminal, redrawn in place on one."""

from __future__ import annotations

import io
import math
import xml.etree.ElementTree as ET

from service.tune.plot import render
from service.tune.progress import Progress, describe
from service.tune.search import Run, Trial
from service.tune.space import Knobs

SVG = "{http://www.w3.org/2000/svg}"


def _trials(rng):
    trials = []
    for i in range(1, 6):
        knobs = Knobs(2**i, 500 * i, "eager" if i % 2 else "delay", 1, 0)
        runs = [
            Run(c, 0.0, 100, float(rng.uniform(50, 2000)), 1.0, float(rng.uniform(0.3, 80)))
            for c in (2, 4, 8)
        ]
        trials.append(Trial(i, "throughput", knobs, load_s=0.2, runs=runs))
    failed = Run(1, 0.0, 0, 0.0, math.nan, math.nan, {"UNAVAILABLE": 1})
    trials.append(Trial(6, "throughput", Knobs(64, 0, "delay", 4, 4), runs=[failed]))
    trials.append(Trial(7, "latency", trials[1].knobs, runs=[Run(64, 300.0, 100, 298.0, 2, 4.5)]))
    return trials


def test_plot_is_svg_with_every_run_and_the_winners(rng):
    trials = _trials(rng)
    best = (trials[2], trials[2].runs[1])
    svg = render(trials, title="t <&>", p99_ms=10.0, best_throughput=best,
                 best_latency=(trials[-1], trials[-1].runs[0]))  # fmt: skip
    root = ET.fromstring(svg)  # well-formed, title escaped
    assert root.tag == f"{SVG}svg"
    texts = [t.text or "" for t in root.iter(f"{SVG}text")]
    assert "t <&>" in texts and "p99 budget 10 ms" in texts
    assert any(t.startswith("best throughput: trial 3 (b8 d1500us eager") for t in texts)
    assert any(t.startswith("best p99 at rate: trial 7") for t in texts)
    dots = [c for c in root.iter(f"{SVG}circle") if c.get("r") == "3.5"]
    assert len(dots) == 15  # every closed-loop run with samples; the failed one has none
    assert len([p for p in root.iter(f"{SVG}path")]) == 2  # the rate run, and its legend


def test_plot_joins_a_winner_to_its_second_measurement(rng):
    trials = _trials(rng)
    best = (trials[2], trials[2].runs[1])
    again = Run(best[1].concurrency, 0.0, 100, 3000.0, 1.0, 120.0)  # beyond both axes' range
    svg = render(trials, title="t", p99_ms=10.0, best_throughput=best, best_latency=None,
                 again={"throughput": again, "latency": None})  # fmt: skip
    root = ET.fromstring(svg)
    texts = [t.text or "" for t in root.iter(f"{SVG}text")]
    assert any(t.endswith("; again: 3000 req/s, p99 120.00 ms") for t in texts)
    assert "1000" in texts  # the x axis grew to hold the second measurement
    assert len([p for p in root.iter(f"{SVG}path")]) == 3  # + the diamond


def test_plot_without_winners(rng):
    svg = render(_trials(rng)[:2], title="x", p99_ms=0.01, best_throughput=None,
                 best_latency=None)  # fmt: skip
    assert "best throughput" not in svg
    ET.fromstring(svg)


def test_progress_off_a_terminal_writes_only_trial_lines(rng):
    out = io.StringIO()
    progress = Progress(out, 60, live=False)
    progress.status("measuring")
    trial = _trials(rng)[0]
    progress.trial(trial, 1e9, 0)
    progress.close()
    assert out.getvalue() == describe(trial, 1e9, 0) + "\n"
    assert out.getvalue().startswith("trial  1 throughput b2 d500us eager i1 t-: ")


def test_progress_on_a_terminal_redraws_a_bar():
    out = io.StringIO()
    progress = Progress(out, 60, live=True)
    progress.status("trial 1 measuring")
    assert out.getvalue().startswith("\r[") and "/60 s  trial 1 measuring" in out.getvalue()
    progress.log("done")
    assert out.getvalue().endswith("\rdone\n")


def test_trial_lines_say_what_happened(rng):
    knobs = Knobs(8, 0, "delay", 1, 0)
    refused = Trial(1, "throughput", knobs, error="INVALID_ARGUMENT: bad")
    assert describe(refused, 10, 0).endswith(": INVALID_ARGUMENT: bad")
    over = Trial(2, "throughput", knobs, runs=[Run(1, 0.0, 10, 10.0, 20.0, 30.0)])
    assert "over the p99 budget (lowest p99 30.00 ms)" in describe(over, 10, 0)
    behind = Trial(3, "latency", knobs, runs=[Run(64, 100.0, 10, 50.0, 2.0, 3.0)])
    assert "(fell behind)" in describe(behind, 10, 100.0)

"""benchmarks/before_after.py's verdict: the median over rounds of the paired (same-round) ratio
after / before, and "worse by more than 5 %" in the right direction for throughput (higher is
better) and latency / CPU (lower)."""

from __future__ import annotations

import statistics
from dataclasses import asdict
from typing import Any

import numpy as np
import pytest

from benchmarks.before_after import BEFORE, FULL, TOLERANCE, command, render, summary


def test_summary_and_verdict() -> None:
    rng = np.random.default_rng()
    runs: list[dict[str, Any]] = []
    truth = {}
    for api, c in (("kserve", 1), ("kserve", 16), ("classify-png", 16)):
        change = float(rng.uniform(0.85, 1.15))
        truth[(api, c)] = change
        for side in ("before", "after"):
            for round_ in range(3):
                rps = float(rng.uniform(900, 1100)) * (change if side == "after" else 1.0)
                runs.append(
                    {
                        "side": side,
                        "round": round_,
                        "model": "m",
                        "api": api,
                        "concurrency": c,
                        "throughput_rps": rps,
                        "p50_ms": 1000 / rps,
                        "p99_ms": 3000 / rps,
                        "server_cpu_us_per_request": 1e6 / rps,
                    }
                )
    doc = {
        "runs": runs,
        "notes": [],
        "before": "abc1234",
        "environment": {"commit": "x"},
        "plan": {"name": "full", "rounds": 3, "duration": 8.0},
    }
    rows = summary(doc)
    for row in rows:
        pick = [r for r in runs if (r["api"], r["concurrency"]) == (row["api"], row["concurrency"])]
        by_side = {
            s: {r["round"]: r["throughput_rps"] for r in pick if r["side"] == s}
            for s in ("before", "after")
        }
        paired = statistics.median(by_side["after"][k] / by_side["before"][k] for k in range(3))
        assert row["throughput_rps_ratio"] == pytest.approx(paired)
        assert row["throughput_rps"]["before"] == pytest.approx(
            statistics.median(by_side["before"].values())
        )
    table = "\n".join(render(doc))
    for row in rows:
        line = next(
            x for x in table.splitlines() if f"| {row['api']} | {row['concurrency']} |" in x
        )
        slower = row["throughput_rps_ratio"] < 1 - TOLERANCE
        assert ("throughput_rps" in line.rsplit("|", 2)[1]) == slower
        costlier = row["server_cpu_us_per_request_ratio"] > 1 + TOLERANCE
        assert ("server_cpu_us_per_request" in line.rsplit("|", 2)[1]) == costlier


def test_drift_between_rounds_cancels() -> None:
    """The machine runs 0.7x, 1.0x, 1.3x as fast in three rounds; after is 3 % slower than before
    within every round. The paired ratio says 0.97 (not worse by >5 %); the ratio of the two
    medians would depend on which side ran in which round."""
    speed = (0.7, 1.0, 1.3)
    runs: list[dict[str, Any]] = []
    for round_, s in enumerate(speed):
        for side, rps in (("before", 1000 * s), ("after", 970 * s)):
            runs.append(
                {
                    "side": side,
                    "round": round_,
                    "model": "m",
                    "api": "kserve",
                    "concurrency": 16,
                    "throughput_rps": rps,
                    "p50_ms": 10 / s,
                    "p99_ms": 20 / s,
                    "server_cpu_us_per_request": 900 / s,
                }
            )
    # A round where "after" met a slow machine and "before" a fast one would flag a change that
    # is not there; pairing by round does not see it.
    runs[-1]["throughput_rps"] = 970 * 0.7
    row = summary({"runs": runs})[0]
    assert row["throughput_rps_ratio"] == pytest.approx(0.97)
    assert row["throughput_rps_ratios"][0] == pytest.approx(0.7 * 0.97 / 1.3)
    assert row["p50_ms_ratio"] == pytest.approx(1.0)


def test_the_table_says_how_to_rerun_it() -> None:
    full = asdict(FULL)
    assert command({"plan": full, "before": BEFORE}) == "--full"  # #10's run: the defaults
    lenet = [f for f in full["figures"] if f["model"] == "lenet5_fashion"]
    doc = {
        "plan": {**full, "rounds": 5, "figures": lenet},
        "before": "1d1dd67",
        "title": "a change",
        "out": "benchmarks/results/change",
    }
    assert command(doc) == (
        '--full --rounds 5 --before 1d1dd67 --models lenet5_fashion --title "a change" '
        "--out benchmarks/results/change"
    )

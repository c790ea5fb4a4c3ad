"""benchmarks/before_after.py's verdict: medians over rounds, after / before, and "worse by more
than 5 %" in the right direction for throughput (higher is better) and latency / CPU (lower)."""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np
import pytest

from benchmarks.before_after import TOLERANCE, render, summary


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
        med = {
            s: statistics.median(r["throughput_rps"] for r in pick if r["side"] == s)
            for s in ("before", "after")
        }
        assert row["throughput_rps_ratio"] == pytest.approx(med["after"] / med["before"])
    table = "\n".join(render(doc))
    for row in rows:
        line = next(
            x for x in table.splitlines() if f"| {row['api']} | {row['concurrency']} |" in x
        )
        slower = row["throughput_rps_ratio"] < 1 - TOLERANCE
        assert ("throughput_rps" in line.rsplit("|", 2)[1]) == slower
        costlier = row["server_cpu_us_per_request_ratio"] > 1 + TOLERANCE
        assert ("server_cpu_us_per_request" in line.rsplit("|", 2)[1]) == costlier

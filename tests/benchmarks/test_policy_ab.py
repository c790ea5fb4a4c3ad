"""benchmarks/policy_ab.py's table: per-round paired ratios eager / delay, each side's median."""

from __future__ import annotations

from typing import Any

from benchmarks.policy_ab import CONCURRENCY, render


def test_paired_ratio_cancels_drift_between_rounds() -> None:
    speed = (0.6, 1.0, 1.4)  # the machine's speed in each round
    runs: list[dict[str, Any]] = []
    for round_, s in enumerate(speed):
        for c in CONCURRENCY:
            for side, rps in (("eager", 1100.0 * s), ("delay", 1000.0 * s)):
                runs.append(
                    {
                        "side": side,
                        "round": round_,
                        "concurrency": c,
                        "throughput_rps": rps,
                        "p50_ms": c / rps * 1000,
                        "server_cpu_us_per_request": 1e6 / rps,
                    }
                )
    runs[0]["throughput_rps"] = None  # a failed measurement is left out, not counted as 0
    doc = {"model": "m", "rounds": 3, "environment": {"commit": "abc"}, "others_cores": 0.0,
           "runs": runs}  # fmt: skip
    lines = render(doc)
    row = {int(x.split("|")[1]): x for x in lines if x.startswith("| ") and x[2].isdigit()}
    assert set(row) == set(CONCURRENCY)
    assert "| 1.10 (1.10–1.10) |" in row[16]
    assert "| 1100.0 | 1000.0 |" in row[16]  # medians: the middle round
    assert "| 1.10 (1.10–1.10) |" in row[1]  # two rounds left at c=1, still 1.10

"""benchmarks/targets_ab.py's table: #11's targets computed per round, median over rounds."""

from __future__ import annotations

from typing import Any

from benchmarks.targets_ab import CONCURRENCY, SIDES, render


def _doc(runs: list[dict[str, Any]], sides: list[str], skipped: str = "") -> dict[str, Any]:
    return {"model": "m", "rounds": 3, "sides": sides, "skipped": skipped,
            "environment": {"commit": "abc"}, "others_cores": 0.0, "runs": runs}  # fmt: skip


def _runs(sides: tuple[str, ...]) -> list[dict[str, Any]]:
    base = {"convserve": 1000.0, "pytriton": 800.0, "transport": 2000.0}
    speed = (0.6, 1.0, 1.4)  # the machine's speed in each round
    runs = []
    for round_, s in enumerate(speed):
        for side in sides:
            for c in CONCURRENCY:
                rps = base[side] * s * (1.0 if c == 16 else 0.5)  # peak at c=16
                runs.append(
                    {
                        "side": side,
                        "round": round_,
                        "concurrency": c,
                        "throughput_rps": rps,
                        "p50_ms": (0.9 if side == "convserve" else 0.5) / s,
                        "p99_ms": 2.0,
                        "server_cpu_us_per_request": 1e6 / rps,
                    }
                )
    return runs


def _rows(lines: list[str]) -> dict[str, str]:
    return {x.split("|")[1].strip(): x for x in lines if x.startswith("| ") and "," in x[:40]}


def test_targets_are_paired_within_rounds_and_judged() -> None:
    lines = render(_doc(_runs(SIDES), list(SIDES)))
    rows = _rows(lines)
    assert "| 1.25 (1.25–1.25) | yes |" in rows["peak req/s, convserve / PyTriton ≥ 1.2"]
    assert "| 0.50 (0.50–0.50) | no |" in rows["peak req/s, convserve / transport ≥ 0.75"]
    # 0.4 ms / speed: 0.67, 0.40, 0.29 -> median 0.40, met
    assert "| 0.40 (0.29–0.67) | yes |" in rows["c=1 p50, convserve − transport (ms) ≤ 0.5"]
    assert (
        "| 2.00 (2.00–2.00) | no |" in rows["CPU per request at c=16, convserve / transport ≤ 1.3"]
    )
    assert "| convserve | 16 | 1000.0 |" in "\n".join(lines)  # each side's median: the middle round


def test_a_missing_peer_or_failed_figure_is_not_measured_not_zero() -> None:
    sides = ("convserve", "transport")
    runs = _runs(sides)
    for r in runs:
        if r["side"] == "transport" and r["concurrency"] == 1:
            r["p50_ms"] = float("nan")  # a failed measurement
    lines = render(_doc(runs, list(sides), skipped="PyTriton (not built)"))
    rows = _rows(lines)
    assert "not measured" in rows["peak req/s, convserve / PyTriton ≥ 1.2"]
    assert "not measured" in rows["c=1 p50, convserve − transport (ms) ≤ 0.5"]
    assert "| 0.50 (0.50–0.50) | no |" in rows["peak req/s, convserve / transport ≥ 0.75"]
    assert lines[-1] == "Not run: PyTriton (not built)."

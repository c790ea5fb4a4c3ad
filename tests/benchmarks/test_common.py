"""benchmarks/common.py: the interleaving every A/B script uses, and where results go."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.common import interleaved, save_results


def _order(sides: list[str], rounds: int) -> list[tuple[int, str]]:
    def measure(side: str, round_: int) -> list[dict[str, Any]]:
        return [{"side": side, "round": round_}]

    runs, others = interleaved(sides, rounds, measure)
    assert others >= 0.0  # cores other processes used, read from /proc
    return [(r["round"], r["side"]) for r in runs]


def test_the_order_rotates_so_drift_falls_on_every_side() -> None:
    assert _order(["a", "b"], 3) == [(0, "a"), (0, "b"), (1, "b"), (1, "a"), (2, "a"), (2, "b")]
    order = _order(["a", "b", "c"], 3)
    assert [s for _, s in order] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    firsts = {s for k, s in order if (k, s) == next(o for o in order if o[0] == k)}
    assert firsts == {"a", "b", "c"}  # each side goes first once


def test_results_are_written_as_json_and_table(tmp_path: Path) -> None:
    doc = {"x": 1}
    save_results(tmp_path / "out", "thing", doc, lambda d: ["# table", f"x = {d['x']}"])
    assert json.loads((tmp_path / "out" / "thing.json").read_text()) == doc
    assert (tmp_path / "out" / "thing.md").read_text() == "# table\nx = 1\n"

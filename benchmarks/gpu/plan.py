"""Pack a payload folder into call bundles and write the sequence of device calls that brings it.

    .venv/bin/python -m benchmarks.gpu.plan .gpu/payload --out .gpu [--part-size BYTES]
    .venv/bin/python -m benchmarks.gpu.plan --check [.gpu]   # do the calls still fit the tree?

Writes .gpu/parts/ (the parts), .gpu/bundles/NN/ (hard links to them, one folder per call, each
with the manifest) and .gpu/plan.json + .gpu/plan.md: the size of every bundle plus the working
tree (each ≤ 64 MiB), and the calls to make, in order — every call but the last stages its
bundle (benchmarks/gpu/stage.sh); the last carries the last bundle and runs benchmarks/gpu/run.sh.
The calls must follow each other while the machine is still warm: a machine given back loses the
staged parts, and stage.sh's output says which bundles are staged and which are missing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.gpu.parts import (
    CALL_LIMIT,
    DEFAULT_PART_SIZE,
    MANIFEST,
    RESERVE,
    MiB,
    effective_part_size,
    manifest_of,
    plan_bundles,
    split,
    tree_bytes,
    write_bundles,
)

STAGE_TIMEOUT_S = 120
RUN_BUDGET_S = 420  # run.sh's own deadline; lower it to what the session's device time allows
RUN_TIMEOUT_S = 600  # the device tool's limit for one command: the budget plus set-up and margin


def pack_payload(
    payload: Path, out: Path, part_size: int = DEFAULT_PART_SIZE, repo: Path = Path(".")
) -> dict[str, Any]:
    """Split, bundle and plan; the plan (also written to out/plan.json and out/plan.md)."""
    tree = tree_bytes(repo)
    size = effective_part_size(part_size, tree)
    capacity = CALL_LIMIT - tree - RESERVE
    shutil.rmtree(out / "parts", ignore_errors=True)
    entries = split(payload, out / "parts", size)
    count = plan_bundles(entries, capacity)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True
    ).stdout.strip()
    manifest = manifest_of(
        entries,
        count,
        commit=commit,
        created=time.strftime("%Y-%m-%d %H:%M:%S"),
        part_size=size,
        tree_bytes=tree,
        call_limit=CALL_LIMIT,
    )
    dirs = write_bundles(out / "parts", out / "bundles", manifest)
    bundles = []
    for number, folder in enumerate(dirs, start=1):
        carried = sum(p.stat().st_size for p in folder.iterdir())
        bundles.append(
            {
                "bundle": number,
                "carry": _carry_path(folder, repo),
                "parts": sorted(p.name for p in folder.iterdir() if p.name != MANIFEST),
                "bundle_bytes": carried,
                "call_bytes": carried + tree,
            }
        )
        if carried + tree > CALL_LIMIT:
            raise AssertionError(f"bundle {number}: {carried + tree} B exceed one call")
    last = len(bundles)
    calls = [
        {
            "call": b["bundle"],
            "carry": [b["carry"]],
            "command": f"benchmarks/gpu/run.sh --budget {RUN_BUDGET_S}"
            if b["bundle"] == last
            else "benchmarks/gpu/stage.sh",
            "timeout_s": RUN_TIMEOUT_S if b["bundle"] == last else STAGE_TIMEOUT_S,
        }
        for b in bundles
    ]
    plan = {
        "pack": manifest["id"],
        "commit": commit,
        "created": manifest["created"],
        "tree_bytes": tree,
        "part_size": size,
        "call_limit": CALL_LIMIT,
        "files": [{"path": e.path, "bytes": e.size, "parts": len(e.parts)} for e in entries],
        "payload_bytes": sum(e.size for e in entries),
        "bundles": bundles,
        "calls": calls,
    }
    (out / "plan.json").write_text(json.dumps(plan, indent=1) + "\n")
    (out / "plan.md").write_text(render(plan))
    return plan


def _carry_path(folder: Path, repo: Path) -> str:
    """The device tool's `carry` names paths relative to the repository root."""
    folder, root = folder.resolve(), repo.resolve()
    if not folder.is_relative_to(root):
        raise ValueError(f"{folder} is outside {root}: a call can only carry paths inside it")
    return folder.relative_to(root).as_posix()


def render(plan: dict[str, Any]) -> str:
    mib = lambda n: f"{n / MiB:.1f}"  # noqa: E731
    lines = [
        f"# GPU run: bundle plan (pack {plan['pack']}, commit {plan['commit']}, {plan['created']})",
        "",
        f"Payload {mib(plan['payload_bytes'])} MiB in {len(plan['files'])} files, "
        f"{sum(f['parts'] for f in plan['files'])} parts of at most {mib(plan['part_size'])} MiB; "
        f"working tree {mib(plan['tree_bytes'])} MiB; {len(plan['bundles'])} calls of at most "
        f"{mib(plan['call_limit'])} MiB each.",
        "",
        "| file | MiB | parts |",
        "|---|---:|---:|",
        *(f"| {f['path']} | {mib(f['bytes'])} | {f['parts']} |" for f in plan["files"]),
        "",
        "| call | carry | command | timeout_s | bundle MiB | call MiB (with tree) |",
        "|---:|---|---|---:|---:|---:|",
    ]
    for call, bundle in zip(plan["calls"], plan["bundles"], strict=True):
        lines.append(
            f"| {call['call']} | `{call['carry'][0]}` | `{call['command']}` | "
            f"{call['timeout_s']} | {mib(bundle['bundle_bytes'])} | {mib(bundle['call_bytes'])} |"
        )
    lines += [
        "",
        "Make the calls back to back: the machine stays warm only 30 s after a call, and a "
        "machine given back loses what was staged (stage.sh prints which bundles are staged and "
        "which are missing; run.sh refuses until all are there).",
        "",
        f"Device time: machine start (1-2 min) + {len(plan['calls']) - 1} stage calls + run.sh "
        "(--budget seconds, plus about a minute to unpack and install). Before the last call, read "
        "`status`: pass `--budget` ≈ budget_left_s − 150 (at most 480) and timeout_s = budget + "
        "120. Results come back from $OUT: copy them into benchmarks/results/gpu/.",
        "",
    ]
    return "\n".join(lines)


def check(out: Path, repo: Path = Path(".")) -> list[str]:
    """The calls of out/plan.json that no longer fit beside the working tree as it is now."""
    plan = json.loads((out / "plan.json").read_text())
    tree = tree_bytes(repo)
    return [
        f"call {b['bundle']}: {(b['bundle_bytes'] + tree) / MiB:.1f} MiB with the tree "
        f"({tree / MiB:.1f} MiB now, {plan['tree_bytes'] / MiB:.1f} when planned)"
        for b in plan["bundles"]
        if b["bundle_bytes"] + tree > CALL_LIMIT
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--check"]:  # before a GPU session: do the planned calls still fit?
        too_big = check(Path(argv[1]) if len(argv) > 1 else Path(".gpu"))
        for line in too_big:
            print(f"plan: {line} > 64 MiB: re-run benchmarks/gpu/prepare.sh", file=sys.stderr)
        print("plan: every call fits" if not too_big else "plan: out of date")
        return 1 if too_big else 0
    parser.add_argument("payload", type=Path)
    parser.add_argument("--out", type=Path, default=Path(".gpu"))
    parser.add_argument("--part-size", type=int, default=DEFAULT_PART_SIZE, help="bytes")
    parser.add_argument("--repo", type=Path, default=Path("."), help="working tree of the calls")
    args = parser.parse_args(argv)
    plan = pack_payload(args.payload, args.out, args.part_size, args.repo)
    print(render(plan))
    return 0


if __name__ == "__main__":
    sys.exit(main())

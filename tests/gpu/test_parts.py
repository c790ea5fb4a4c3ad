"""benchmarks/gpu/parts.py and plan.py: split, bundle, stage, reassemble; checksums enforced;
every planned call within the device tool's 64 MiB."""

from __future__ import annotations

import json
import lzma
import subprocess
from pathlib import Path

import numpy as np
import pytest

from benchmarks.gpu import parts
from benchmarks.gpu.plan import check, pack_payload

KiB = 1024


def random_payload(root: Path, sizes: dict[str, int]) -> dict[str, bytes]:
    rng = np.random.default_rng()
    written = {}
    for rel, size in sizes.items():
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        written[rel] = data
    return written


def pack(tmp_path: Path, sizes: dict[str, int], part_size: int, capacity: int) -> Path:
    """Split and bundle by hand (small sizes); the bundles folder."""
    payload = tmp_path / "payload"
    random_payload(payload, sizes)
    entries = parts.split(payload, tmp_path / "parts", part_size)
    count = parts.plan_bundles(entries, capacity)
    manifest = parts.manifest_of(entries, count)
    parts.write_bundles(tmp_path / "parts", tmp_path / "bundles", manifest)
    return tmp_path / "bundles"


SIZES = {"wheels/big.whl": 10 * KiB + 17, "models/m/1/model.onnx": 3 * KiB, "tiny.txt": 5}


def test_round_trip_through_bundles(tmp_path: Path) -> None:
    bundles = pack(tmp_path, SIZES, part_size=2 * KiB, capacity=4 * KiB)
    stage = tmp_path / "stage"
    dirs = sorted(bundles.iterdir())
    for d in dirs:  # one call per bundle
        state = parts.stage([d], stage)
    assert state["missing"] == [] and state["complete"] == list(range(1, len(dirs) + 1))
    payload = parts.assemble(stage)
    for rel in SIZES:
        assert (payload / rel).read_bytes() == (tmp_path / "payload" / rel).read_bytes()
    manifest = json.loads((stage / parts.MANIFEST).read_text())
    for entry in manifest["files"]:
        assert all(p["size"] <= 2 * KiB for p in entry["parts"])
        assert sum(p["size"] for p in entry["parts"]) == entry["size"]
    for d in dirs:
        carried = sum(p.stat().st_size for p in d.iterdir() if p.name != parts.MANIFEST)
        assert carried <= 4 * KiB


def test_compressed_files_are_unpacked_after_assembly(tmp_path: Path) -> None:
    payload = tmp_path / "payload"
    text = b"perf_analyzer stands in here " * 4096
    (payload / "tools").mkdir(parents=True)
    (payload / "tools" / "tool.xz").write_bytes(lzma.compress(text))
    entries = parts.split(payload, tmp_path / "parts", 4 * KiB)
    manifest = parts.manifest_of(entries, parts.plan_bundles(entries, 8 * KiB))
    bundles = parts.write_bundles(tmp_path / "parts", tmp_path / "bundles", manifest)
    parts.stage(bundles, tmp_path / "stage")
    unpacked = parts.unpack(parts.assemble(tmp_path / "stage"))
    assert unpacked == [tmp_path / "stage" / "payload" / "tools" / "tool"]
    assert unpacked[0].read_bytes() == text
    assert parts.unpack(tmp_path / "stage" / "payload") == unpacked  # a rerun: already there


def test_a_missing_bundle_is_named(tmp_path: Path) -> None:
    bundles = pack(tmp_path, SIZES, part_size=2 * KiB, capacity=4 * KiB)
    dirs = sorted(bundles.iterdir())
    assert len(dirs) >= 3
    state = parts.stage([dirs[0], dirs[2]], tmp_path / "stage")
    assert state["missing"] == [2, *range(4, len(dirs) + 1)]
    with pytest.raises(parts.PartsError, match=r"bundles 2(, \d+)* of \d+ are not staged"):
        parts.assemble(tmp_path / "stage")
    assert not (tmp_path / "stage" / "payload" / "wheels" / "big.whl").exists()


def test_a_corrupt_part_is_refused_at_assembly(tmp_path: Path) -> None:
    bundles = pack(tmp_path, SIZES, part_size=2 * KiB, capacity=4 * KiB)
    stage = tmp_path / "stage"
    parts.stage(sorted(bundles.iterdir()), stage)
    victim = next(p for p in sorted((stage / "parts").iterdir()) if "big.whl" in p.name)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one flipped byte
    victim.write_bytes(bytes(data))
    with pytest.raises(parts.PartsError, match=rf"part {victim.name} of wheels/big.whl is corrupt"):
        parts.assemble(stage)
    assert not (stage / "payload" / "wheels" / "big.whl").exists()
    assert not list((stage / "payload").rglob("*.partial"))


def test_a_corrupt_bundle_is_refused_when_staged(tmp_path: Path) -> None:
    bundles = pack(tmp_path, SIZES, part_size=2 * KiB, capacity=4 * KiB)
    first = sorted(bundles.iterdir())[0]
    victim = next(p for p in first.iterdir() if p.name != parts.MANIFEST)
    victim.unlink()  # a hard link: break it before editing, the parts folder stays intact
    victim.write_bytes(b"x" * 7)
    with pytest.raises(parts.PartsError, match="sha256 mismatch after copying"):
        parts.stage([first], tmp_path / "stage")
    assert not (tmp_path / "stage" / "parts" / victim.name).exists()


def test_a_new_pack_replaces_what_was_staged(tmp_path: Path) -> None:
    old = pack(tmp_path / "a", SIZES, part_size=2 * KiB, capacity=4 * KiB)
    new = pack(tmp_path / "b", {"other.bin": 3 * KiB}, part_size=2 * KiB, capacity=4 * KiB)
    stage = tmp_path / "stage"
    parts.stage(sorted(old.iterdir()), stage)
    state = parts.stage(sorted(new.iterdir()), stage)
    assert state["missing"] == []
    assert all("other.bin" in p.name for p in (stage / "parts").iterdir())
    payload = parts.assemble(stage)
    assert [p.name for p in payload.rglob("*") if p.is_file()] == ["other.bin"]


def test_bundles_are_packed_first_fit_decreasing() -> None:
    entries = [
        parts.Entry(name, size, "", [parts.Part(name, size, "")])
        for name, size in (("a", 60), ("b", 50), ("c", 40), ("d", 30), ("e", 20))
    ]
    assert parts.plan_bundles(entries, 100) == 2  # 60+40, 50+30+20
    loads: dict[int, int] = {}
    for e in entries:
        loads[e.parts[0].bundle] = loads.get(e.parts[0].bundle, 0) + e.size
    assert sorted(loads.values()) == [100, 100]
    too_big = [parts.Entry("z", 101, "", [parts.Part("z", 101, "")])]
    with pytest.raises(parts.PartsError, match="exceeds a bundle"):
        parts.plan_bundles(too_big, 100)


def test_part_size_leaves_room_for_the_working_tree() -> None:
    assert parts.effective_part_size(60 * parts.MiB, 2 * parts.MiB) == 60 * parts.MiB
    lowered = parts.effective_part_size(60 * parts.MiB, 10 * parts.MiB)
    assert lowered == parts.CALL_LIMIT - 10 * parts.MiB - parts.RESERVE
    with pytest.raises(parts.PartsError, match=r"working tree is 61\.0 MiB"):
        parts.effective_part_size(60 * parts.MiB, 61 * parts.MiB)


def test_every_planned_call_fits_64_mib(tmp_path: Path) -> None:
    """The real limit, a real git tree: 140 MiB of payload beside a 5 MiB working tree."""
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    (repo / ".gitignore").write_text("/.gpu/\n")
    random_payload(repo, {"tracked.bin": 5 * parts.MiB})
    sizes = {"wheels/ort.whl": 100 * parts.MiB + 3, "models/r/1/model.onnx": 39 * parts.MiB}
    random_payload(repo / ".gpu" / "payload", sizes)
    plan = pack_payload(repo / ".gpu" / "payload", repo / ".gpu", repo=repo)
    tree = plan["tree_bytes"]
    assert 5 * parts.MiB <= tree < 5 * parts.MiB + 4 * KiB  # .gpu/ is ignored, not counted
    assert plan["part_size"] == parts.CALL_LIMIT - tree - parts.RESERVE  # < 60 MiB: lowered
    assert len(plan["calls"]) == 3  # 100 MiB → 57 + 43, then 39: no two of those share a call
    for bundle in plan["bundles"]:
        folder = repo / bundle["carry"]
        carried = sum(p.stat().st_size for p in folder.iterdir())
        assert carried == bundle["bundle_bytes"]
        assert carried + tree <= 64 * parts.MiB
    assert [c["command"] for c in plan["calls"]] == [
        "benchmarks/gpu/stage.sh",
        "benchmarks/gpu/stage.sh",
        "benchmarks/gpu/run.sh --budget 420",
    ]
    assert all(c["carry"][0].startswith(".gpu/bundles/") for c in plan["calls"])
    assert check(repo / ".gpu", repo) == []
    (repo / "grown.bin").write_bytes(b"x" * (3 * parts.MiB))  # untracked, not ignored: it travels
    assert [line.split(":")[0] for line in check(repo / ".gpu", repo)] == ["call 1"]  # the full one
    last_call = "| 3 | `.gpu/bundles/03` | `benchmarks/gpu/run.sh --budget 420` | 600 |"
    assert last_call in (repo / ".gpu" / "plan.md").read_text()

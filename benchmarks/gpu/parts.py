"""Files too big for one transfer: split into parts with sha256 sums, grouped into call bundles,
staged on the far side one bundle at a time, reassembled there with every checksum verified.

    python3 -m benchmarks.gpu.plan PAYLOAD_DIR --out .gpu           # here, by prepare.sh
    python3 benchmarks/gpu/parts.py stage --into /tmp/convserve-gpu  # on the GPU host, per call
    python3 benchmarks/gpu/parts.py assemble --stage /tmp/convserve-gpu

A GPU host without network access receives files only through the device tool's calls: each call
carries the working tree plus at most 64 MiB in all. Packing (benchmarks/gpu/plan.py) cuts every
file of PAYLOAD_DIR into parts of at most `--part-size` bytes, lowered so that one part and the
working tree always fit a call, and packs the parts first-fit-decreasing into bundles
(.gpu/bundles/NN/), each with a copy of the manifest (every file's and every part's size and
sha256). A call carrying one bundle runs `stage`, which copies the bundle's parts into the staging
folder and checks each against the manifest at once, so a bad transfer shows in the call that made
it. `assemble` joins the parts and checks both the parts and the whole file; it refuses (exit 1,
naming the file) on any missing part or mismatch and leaves the bad output out; then files sent
xz-compressed (`X.xz`) are unpacked next to themselves.

Standard library only: it runs under the GPU host's own Python before anything is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MiB = 1 << 20
CALL_LIMIT = 64 * MiB  # the device tool's limit: working tree + carried paths, per call
DEFAULT_PART_SIZE = 60 * MiB
RESERVE = 2 * MiB  # the bundle's manifest copy and files the tree gains between pack and call
MANIFEST = "manifest.json"
FORMAT = "convserve-gpu-parts/1"


class PartsError(Exception):
    """A missing, truncated or corrupt part or file; the message says which and what to do."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Part:
    name: str  # file name inside a bundle and in the staging folder's parts/
    size: int
    sha256: str
    bundle: int = 0


@dataclass
class Entry:
    path: str  # relative to the payload root, '/'-separated
    size: int
    sha256: str
    parts: list[Part] = field(default_factory=list)


def tree_bytes(repo: Path) -> int:
    """Bytes of what a device call sends besides carried paths: tracked files and untracked files
    that git does not ignore (the device tool's definition of the working tree)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo,
        check=True,
        capture_output=True,
    ).stdout
    total = 0
    for name in {n for n in listed.decode().split("\0") if n}:
        path = repo / name
        if path.is_file() and not path.is_symlink():
            total += path.stat().st_size
    return total


def effective_part_size(part_size: int, tree: int, call_limit: int = CALL_LIMIT) -> int:
    """The part size actually used: at most what a call can carry beside the working tree."""
    room = call_limit - tree - RESERVE
    if room < 4 * MiB:
        raise PartsError(
            f"the working tree is {tree / MiB:.1f} MiB: less than 4 MiB of a "
            f"{call_limit / MiB:.0f} MiB call is left for parts; ignore or remove large files"
        )
    return min(part_size, room)


def split(payload: Path, parts_dir: Path, part_size: int) -> list[Entry]:
    """Cut every file under `payload` into parts of at most `part_size` bytes in `parts_dir`."""
    parts_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for index, path in enumerate(sorted(p for p in payload.rglob("*") if p.is_file())):
        rel = path.relative_to(payload).as_posix()
        entry = Entry(rel, path.stat().st_size, sha256_file(path))
        count = max(1, -(-entry.size // part_size))
        with path.open("rb") as src:
            for i in range(count):
                name = f"{index:03d}-{path.name}.{i + 1:03d}of{count:03d}"
                data = src.read(part_size)
                (parts_dir / name).write_bytes(data)
                entry.parts.append(Part(name, len(data), hashlib.sha256(data).hexdigest()))
        entries.append(entry)
    return entries


def plan_bundles(entries: list[Entry], capacity: int) -> int:
    """Assign every part a bundle (1, 2, ...), first-fit decreasing; the number of bundles."""
    loads: list[int] = []
    parts = sorted((p for e in entries for p in e.parts), key=lambda p: (-p.size, p.name))
    for part in parts:
        if part.size > capacity:
            raise PartsError(f"part {part.name} ({part.size} B) exceeds a bundle ({capacity} B)")
        for i, load in enumerate(loads):
            if load + part.size <= capacity:
                loads[i] += part.size
                part.bundle = i + 1
                break
        else:
            loads.append(part.size)
            part.bundle = len(loads)
    return len(loads)


def manifest_of(entries: list[Entry], bundles: int, **info: Any) -> dict[str, Any]:
    body = {
        "format": FORMAT,
        **info,
        "bundles": bundles,
        "files": [
            {
                "path": e.path,
                "size": e.size,
                "sha256": e.sha256,
                "parts": [vars(p) for p in e.parts],
            }
            for e in entries
        ],
    }
    body["id"] = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
    return body


def load_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PartsError(f"cannot read the parts manifest {path}: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise PartsError(f"{path} is not a {FORMAT} manifest")
    return manifest


def _parts(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for f in manifest["files"] for p in f["parts"]}


def write_bundles(parts_dir: Path, bundles_dir: Path, manifest: dict[str, Any]) -> list[Path]:
    """.gpu/bundles/NN/: hard links to the parts (no second copy on disk) and the manifest."""
    shutil.rmtree(bundles_dir, ignore_errors=True)
    dirs = [bundles_dir / f"{n:02d}" for n in range(1, manifest["bundles"] + 1)]
    for d in dirs:
        d.mkdir(parents=True)
        (d / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    for part in _parts(manifest).values():
        target = dirs[part["bundle"] - 1] / part["name"]
        try:
            os.link(parts_dir / part["name"], target)
        except OSError:
            shutil.copyfile(parts_dir / part["name"], target)
    return dirs


def stage(bundle_dirs: list[Path], into: Path) -> dict[str, Any]:
    """Copy bundles' parts into `into`/parts, each verified; what is staged and what is missing.

    A manifest with another id than the one already staged means a new `pack`: the old parts and
    payload are dropped first.
    """
    manifests = [load_manifest(d / MANIFEST) for d in bundle_dirs]
    ids = {m["id"] for m in manifests}
    if len(ids) > 1:
        raise PartsError(f"bundles from different packs ({', '.join(sorted(ids))}); re-run pack")
    parts_dir = into / "parts"
    staged_manifest = into / MANIFEST
    if manifests:
        if staged_manifest.is_file() and load_manifest(staged_manifest)["id"] not in ids:
            print(f"stage: new pack {manifests[0]['id']}: dropping the parts staged before")
            shutil.rmtree(parts_dir, ignore_errors=True)
            shutil.rmtree(into / "payload", ignore_errors=True)
        parts_dir.mkdir(parents=True, exist_ok=True)
        staged_manifest.write_text(json.dumps(manifests[0], indent=1) + "\n")
    elif not staged_manifest.is_file():
        raise PartsError(f"no bundle given and nothing staged in {into}")
    manifest = load_manifest(staged_manifest)
    known = _parts(manifest)
    for bundle in bundle_dirs:
        for source in sorted(p for p in bundle.iterdir() if p.name != MANIFEST):
            want = known.get(source.name)
            if want is None:
                raise PartsError(f"{source}: not a part of pack {manifest['id']}")
            target = parts_dir / source.name
            if not _part_ok(target, want):
                shutil.copyfile(source, target)
            if not _part_ok(target, want):
                target.unlink()
                raise PartsError(f"{source}: sha256 mismatch after copying; bring it again")
    have = {n for n, p in known.items() if (parts_dir / n).is_file()}
    bundles = range(1, manifest["bundles"] + 1)
    done = [b for b in bundles if all(n in have for n, p in known.items() if p["bundle"] == b)]
    return {
        "id": manifest["id"],
        "bundles": manifest["bundles"],
        "complete": done,
        "missing": [b for b in bundles if b not in done],
    }


def _part_ok(path: Path, want: dict[str, Any]) -> bool:
    if not path.is_file() or path.stat().st_size != want["size"]:
        return False
    return sha256_file(path) == want["sha256"]


def assemble(stage_dir: Path) -> Path:
    """Join the staged parts into stage_dir/payload, verifying every part and every file."""
    manifest = load_manifest(stage_dir / MANIFEST)
    parts_dir, payload = stage_dir / "parts", stage_dir / "payload"
    missing = sorted(
        {
            p["bundle"]
            for f in manifest["files"]
            for p in f["parts"]
            if not (parts_dir / p["name"]).is_file()
        }
    )
    if missing:
        raise PartsError(
            f"bundles {', '.join(map(str, missing))} of {manifest['bundles']} are not staged "
            "(the machine went back between calls?): stage them, then run again"
        )
    for entry in manifest["files"]:
        out = payload / entry["path"]
        if _part_ok(out, entry):
            continue  # assembled by an earlier run
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".partial")
        whole = hashlib.sha256()
        with tmp.open("wb") as dst:
            for part in entry["parts"]:
                data = (parts_dir / part["name"]).read_bytes()
                got = hashlib.sha256(data).hexdigest()
                if got != part["sha256"] or len(data) != part["size"]:
                    tmp.unlink()
                    raise PartsError(
                        f"part {part['name']} of {entry['path']} is corrupt (sha256 {got[:12]}…, "
                        f"expected {part['sha256'][:12]}…): bring bundle {part['bundle']} again"
                    )
                whole.update(data)
                dst.write(data)
        if whole.hexdigest() != entry["sha256"]:
            tmp.unlink()
            raise PartsError(f"{entry['path']}: sha256 of the joined parts differs from the file's")
        tmp.replace(out)
    return payload


def unpack(payload: Path) -> list[Path]:
    """Decompress every `X.xz` of the payload into `X` (once; lzma verifies its own CRC)."""
    made = []
    for packed in sorted(payload.rglob("*.xz")):
        out = packed.with_suffix("")
        if not out.exists():
            tmp = out.with_name(out.name + ".partial")
            with lzma.open(packed) as src, tmp.open("wb") as dst:
                shutil.copyfileobj(src, dst, 4 * MiB)
            tmp.replace(out)
        made.append(out)
    return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    st = sub.add_parser("stage", help="copy bundles' parts into the staging folder")
    st.add_argument("bundles", type=Path, nargs="*", help="default: every .gpu/bundles/NN here")
    st.add_argument("--into", type=Path, default=Path("/tmp/convserve-gpu"))
    asm = sub.add_parser("assemble", help="join and verify the staged parts")
    asm.add_argument("--stage", type=Path, default=Path("/tmp/convserve-gpu"))
    args = parser.parse_args(argv)
    try:
        if args.command == "stage":
            found = args.bundles or sorted(Path(".gpu/bundles").glob("[0-9][0-9]"))
            state = stage([b for b in found if (b / MANIFEST).is_file()], args.into)
            print(
                f"stage: pack {state['id']}: bundles staged {state['complete'] or 'none'}, "
                f"missing {state['missing'] or 'none'} of {state['bundles']}"
            )
        else:
            payload = assemble(args.stage)
            unpacked = unpack(payload)
            print(f"assemble: payload verified in {payload}; {len(unpacked)} files unpacked")
    except PartsError as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

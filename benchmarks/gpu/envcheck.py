"""Can convserve, its tests and the benchmark run with what this host has plus the wheels brought?

    PYTHONPATH=$STAGE/site python3 benchmarks/gpu/envcheck.py convserve-0.1.0-py3-none-any.whl

Walks the requirement closure of convserve's wheel (its Requires-Dist, no extras) and of the test
runner (pytest with the plugins pyproject's options need), each distribution found on sys.path —
the carried wheels first, then the host's own packages — and its version checked against every
specifier that asks for it. Then `import onnxruntime` must be the carried GPU build and list the
CUDA execution provider. Prints one line per distribution (version, carried or host) and every
problem; exit 1 when there is any. `--json PATH` also writes the findings (the benchmark reports
them).
"""

from __future__ import annotations

import argparse
import email
import importlib.metadata as md
import json
import os
import re
import sys
import zipfile
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.version import Version

TEST_RUNNER = ("pytest", "pytest-asyncio", "pytest-timeout")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_requirements(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as whl:
        meta = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
        message = email.message_from_bytes(whl.read(meta))
    return message.get_all("Requires-Dist") or []


def closure(roots: list[tuple[str, str]]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """(requirement, wanted by) pairs → found distributions by name, and the problems."""
    site = os.environ.get("PYTHONPATH", "").split(os.pathsep)[0]
    found: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    todo = list(roots)
    while todo:
        text, wanted_by = todo.pop()
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = _norm(req.name)
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            problems.append(f"{req.name}: missing (wanted by {wanted_by}: {text})")
            continue
        version = Version(dist.version)
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            problems.append(f"{req.name} {version} does not satisfy {req.specifier} ({wanted_by})")
        if name in found:
            continue
        where = str(getattr(dist, "_path", ""))
        found[name] = {
            "version": dist.version,
            "from": "carried" if site and where.startswith(site) else "host",
        }
        todo += [(r, name) for r in dist.requires or []]
    return found, problems


def check_onnxruntime() -> tuple[dict[str, Any], list[str]]:
    import onnxruntime as ort

    info = {
        "version": ort.__version__,
        "file": ort.__file__,
        "providers": ort.get_available_providers(),
        "gpu_build": md.version("onnxruntime-gpu") if _has("onnxruntime-gpu") else None,
    }
    problems = []
    if info["gpu_build"] is None or info["gpu_build"] != ort.__version__:
        problems.append(
            f"`import onnxruntime` is {ort.__file__} ({ort.__version__}), not the "
            f"carried onnxruntime-gpu ({info['gpu_build']})"
        )
    if "CUDAExecutionProvider" not in info["providers"]:
        problems.append(f"onnxruntime lists no CUDAExecutionProvider: {info['providers']}")
    return info, problems


def _has(name: str) -> bool:
    try:
        md.distribution(name)
    except md.PackageNotFoundError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path, help="convserve's wheel")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    roots = [(r, "convserve") for r in wheel_requirements(args.wheel)]
    roots += [(name, "the tests") for name in TEST_RUNNER]
    found, problems = closure(roots)
    ort_info, ort_problems = check_onnxruntime()
    problems += ort_problems
    for name, d in sorted(found.items()):
        print(f"  {name:28} {d['version']:14} {d['from']}")
    print(
        f"  onnxruntime: {ort_info['version']} from {ort_info['file']}; "
        f"providers {', '.join(ort_info['providers'])}"
    )
    for problem in problems:
        print(f"envcheck: {problem}", file=sys.stderr)
    if args.json:
        report = {
            "python": sys.version.split()[0],
            "distributions": found,
            "onnxruntime": ort_info,
            "problems": problems,
        }
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

"""Print a wheel's runtime requirements (no extras) as a pip requirements file.

Used by the images' builder stage so the runtime stage installs exactly the serving dependencies
the wheel declares, never an extra ([train] pulls torch):

    python wheel_requirements.py dist/convserve-0.1.0-py3-none-any.whl \
        --replace onnxruntime-gpu=onnxruntime > requirements.txt

``--replace OLD=NEW`` swaps a distribution and keeps its version specifier. The CPU image uses it to
install ``onnxruntime`` (CPU build, about a tenth of the size) in place of ``onnxruntime-gpu``: both
provide the same ``onnxruntime`` module, and the CUDA provider is useless without CUDA libraries.

Standard library only: it runs in a bare python image before anything is installed.
"""

from __future__ import annotations

import argparse
import re
import sys
import zipfile
from email.parser import Parser

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXTRA_MARKER = re.compile(r"\bextra\s*==")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_requirements(wheel: str, replace: dict[str, str]) -> list[str]:
    """Requires-Dist entries of ``wheel`` that no extra guards, with distributions swapped."""
    with zipfile.ZipFile(wheel) as zf:
        metadata_files = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        if len(metadata_files) != 1:
            raise SystemExit(f"{wheel}: expected one .dist-info/METADATA, found {metadata_files}")
        metadata = Parser().parsestr(zf.read(metadata_files[0]).decode("utf-8"))
    replace = {_canonical(k): v for k, v in replace.items()}
    out = []
    for req in metadata.get_all("Requires-Dist") or []:
        if ";" in req and _EXTRA_MARKER.search(req.split(";", 1)[1]):
            continue
        m = _NAME.match(req)
        if m is None:
            raise SystemExit(f"{wheel}: cannot parse requirement {req!r}")
        new = replace.get(_canonical(m.group(1)))
        out.append(req if new is None else new + req[m.end() :])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel")
    parser.add_argument("--replace", action="append", default=[], metavar="OLD=NEW")
    args = parser.parse_args(argv)
    replace = dict(item.split("=", 1) for item in args.replace)
    for line in runtime_requirements(args.wheel, replace):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Generate Python, gRPC and typed (.pyi) stubs from protos/ into service/_proto/.

Run by the build (setup.py's build_py) and by `make protos`. Generated files are never edited by
hand and never committed. protoc emits imports rooted at the proto include path
(`from inference import model_config_pb2`); they are rewritten to the package path
(`from service._proto.inference import ...`) so the stubs import without touching sys.path.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "service" / "_proto"
PACKAGES = ("inference", "convserve")
_IMPORT = re.compile(r"^(from|import) (inference|convserve)(\.| )", re.MULTILINE)


def _rewrite_imports(path: Path) -> None:
    text = path.read_text()
    new = _IMPORT.sub(lambda m: f"{m.group(1)} service._proto.{m.group(2)}{m.group(3)}", text)
    if new != text:
        path.write_text(new)


def generate() -> None:
    from grpc_tools import protoc  # build-time dependency only

    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={OUT}",
        f"--grpc_python_out={OUT}",
    ]
    try:
        import mypy_protobuf  # noqa: F401

        args += [f"--mypy_out={OUT}", f"--mypy_grpc_out={OUT}"]
    except ImportError:
        print("mypy-protobuf not installed: generating without .pyi stubs", file=sys.stderr)
    # protoc finds the mypy plugins on PATH; they live beside this interpreter.
    bindir = str(Path(sys.executable).parent)
    os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    OUT.mkdir(parents=True, exist_ok=True)
    if protoc.main([*args, *sources]) != 0:
        raise SystemExit("protoc failed")
    for d in [OUT, *(p for p in OUT.rglob("*") if p.is_dir())]:
        init = d / "__init__.py"
        if not init.exists():
            init.write_text("")
    for f in [*OUT.rglob("*.py"), *OUT.rglob("*.pyi")]:
        _rewrite_imports(f)


if __name__ == "__main__":
    generate()
    print(f"generated stubs in {OUT.relative_to(ROOT)}")

"""The two halves meet in the model repository, never in an import (DESIGN.md, STYLE.md).

* service/ never imports torch, nor anything from export/;
* export/ imports from service/ only `service.layout` (the repository's on-disk rules) and
  `service.session_options` (the ONNX Runtime options its parity check shares with the server);
* those two import nothing else of convserve: layout the standard library only, session_options
  the standard library and onnxruntime.

Checked on the source (every import statement, at any depth), so an import inside a function
counts too.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = {"service.layout", "service.session_options"}


def imports(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            if node.module == "service":  # from service import layout
                yield from (f"service.{alias.name}" for alias in node.names)


def sources(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "_proto" not in p.parts)


@pytest.mark.parametrize("path", sources("service"), ids=lambda p: str(p.relative_to(ROOT)))
def test_service_never_imports_torch_or_export(path: Path) -> None:
    bad = [m for m in imports(path) if m.split(".")[0] in ("torch", "torchvision", "export")]
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


@pytest.mark.parametrize("path", sources("export"), ids=lambda p: str(p.relative_to(ROOT)))
def test_export_imports_only_the_shared_modules_of_service(path: Path) -> None:
    used = {m for m in imports(path) if m == "service" or m.startswith("service.")}
    assert used <= SHARED | {"service"}, f"{path.relative_to(ROOT)} imports {sorted(used)}"


@pytest.mark.parametrize(
    ("module", "allowed"), [("layout", set()), ("session_options", {"onnxruntime"})]
)
def test_the_shared_modules_stand_alone(module: str, allowed: set[str]) -> None:
    roots = {m.split(".")[0] for m in imports(ROOT / "service" / f"{module}.py")}
    foreign = roots - set(sys.stdlib_module_names) - allowed - {"__future__"}
    assert not foreign, f"service/{module}.py imports {sorted(foreign)}"

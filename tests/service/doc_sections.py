"""Generated sections of the docs, kept honest by tests.

A section is the text between `<!-- begin generated: NAME -->` and `<!-- end generated: NAME -->`
in a Markdown file. A test renders what the section must say (from Settings, from the error
matrix...) and `check_section` compares; with CONVSERVE_UPDATE_DOCS=1 it rewrites the section
instead, so after a deliberate change:

    CONVSERVE_UPDATE_DOCS=1 .venv/bin/python -m pytest tests/service/test_limits_doc.py \
        tests/service/test_bad_input_matrix.py
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
UPDATE_ENV = "CONVSERVE_UPDATE_DOCS"


def updating() -> bool:
    return os.environ.get(UPDATE_ENV, "") not in ("", "0")


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- begin generated: {name} -->", f"<!-- end generated: {name} -->"


def section(path: Path, name: str) -> str:
    """The text of a generated section (without its markers)."""
    begin, end = _markers(name)
    text = path.read_text()
    found = re.search(re.escape(begin) + r"\n(.*?)" + re.escape(end), text, re.S)
    assert found, f"{path} has no section {begin} ... {end}"
    return found.group(1)


def check_section(path: Path, name: str, content: str) -> None:
    """Assert the section equals `content`, or rewrite it when CONVSERVE_UPDATE_DOCS is set."""
    content = content if content.endswith("\n") else content + "\n"
    if updating():
        begin, end = _markers(name)
        text = path.read_text()
        pattern = re.compile(re.escape(begin) + r"\n.*?" + re.escape(end), re.S)
        assert pattern.search(text), f"{path} has no section {begin} ... {end}"
        path.write_text(pattern.sub(lambda _: f"{begin}\n{content}{end}", text))
        return
    current = section(path, name)
    if current != content:
        diff = "\n".join(
            difflib.unified_diff(
                current.splitlines(), content.splitlines(), "documented", "actual", lineterm=""
            )
        )
        raise AssertionError(
            f"{path.relative_to(ROOT)} section {name!r} is out of date; regenerate it with "
            f"{UPDATE_ENV}=1 (see tests/service/doc_sections.py):\n{diff}"
        )


def cell(text: str) -> str:
    """Text made safe for a Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def parse_table(text: str) -> list[list[str]]:
    """The body rows of the first Markdown table in `text`, cells unescaped."""
    rows = []
    for line in text.splitlines():
        if not line.startswith("|") or line.startswith("|---"):
            continue
        cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
        rows.append([c.strip().replace("\\|", "|") for c in cells])
    return rows[1:]  # without the header

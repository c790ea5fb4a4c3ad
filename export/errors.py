"""The one exception the export half shows a user: :class:`ExportError`.

Training, export, the repository writer and ``build-defaults`` raise it for anything the user can
fix — an unknown architecture, a missing or corrupt data set, a checkpoint of another architecture,
an unwritable output path, a failed parity check — with a one-line message that names the problem
and the fix. The CLI prints ``error: <message>`` and exits non-zero; a traceback means a bug.

Foreign errors are translated where they are caught, keeping the original as ``__cause__``:
``export.data``'s ``DatasetError`` and ``export.models``' ``UnknownArchitectureError`` become an
``ExportError`` through :func:`as_export_error`.
"""

from __future__ import annotations


class ExportError(Exception):
    """A user-fixable problem in training or export; ``str()`` is one line."""

    def __init__(self, message: str) -> None:
        # Multi-line messages from foreign errors (onnx checker, OSError) are folded to one line.
        super().__init__(" ".join(str(message).split()))


def as_export_error(exc: BaseException, context: str = "") -> ExportError:
    """``exc`` as an :class:`ExportError` (itself if it already is one), optionally prefixed."""
    if isinstance(exc, ExportError) and not context:
        return exc
    message = str(exc)
    if isinstance(exc, KeyError) and hasattr(exc, "known"):
        # UnknownArchitectureError: its __str__ already lists the known names.
        message = f"{message} (see `convserve zoo`)"
    return ExportError(f"{context}: {message}" if context else message)

"""The one exception the data layer raises.

Every problem with a data set — a missing or corrupt file, an empty image folder, a missing
external tool needed to build the speech corpus — is a :class:`DatasetError` whose message names
the file (or tool) and says how to fix it. Foreign exceptions (``OSError``, ``gzip.BadGzipFile``,
``subprocess.TimeoutExpired``, ``PIL.UnidentifiedImageError``) are translated at the point where
the file or tool is touched, with the original kept as ``__cause__``.
"""

from __future__ import annotations


class DatasetError(Exception):
    """A data set is missing, corrupt, empty, or cannot be built on this machine."""

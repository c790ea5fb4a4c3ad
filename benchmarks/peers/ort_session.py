"""The ONNX Runtime session every peer server builds: convserve's own options, not a copy.

The peers run in their own virtual environments (.cache/bench-venvs/<peer>, plain `onnxruntime`)
where convserve is not installed, so service/session_options.py — which imports only onnxruntime
— is loaded here by its path. tests/service/test_session_options.py checks that a session built
through this module has the server's options.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

OPTIONS_FILE = Path(__file__).resolve().parents[2] / "service" / "session_options.py"


def _options_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("convserve_session_options", OPTIONS_FILE)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {OPTIONS_FILE}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


session_options = _options_module()
cpu_session = session_options.cpu_session

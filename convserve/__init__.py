"""convserve: classic CNNs trained, exported to ONNX and served over gRPC.

This package is only the command-line front door. It mounts the serving commands from
``service.cli`` and the training commands from ``export.cli``; the two halves never import each
other, and the serving commands work without torch installed.
"""

__version__ = "0.1.0"

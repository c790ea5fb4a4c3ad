"""Triton's auto-complete: a ModelConfig derived from model.onnx when config.pbtxt is missing.

A dynamic first dimension on every input and output means the model batches (max_batch_size
AUTOCOMPLETE_MAX_BATCH_SIZE, dynamic batching on); otherwise max_batch_size is 0. Inputs and
outputs keep the graph's names, datatypes and fixed dimensions (-1 for symbolic ones).
"""

from __future__ import annotations

import logging
from pathlib import Path

from service import datatypes
from service._proto.inference.model_config_pb2 import ModelConfig
from service.errors import ModelLoadError, brief

logger = logging.getLogger(__name__)

# Triton's auto-complete uses this when the ONNX batch dimension is dynamic.
AUTOCOMPLETE_MAX_BATCH_SIZE = 32


def autocomplete_config(model_file: Path, name: str) -> ModelConfig:
    """The config Triton's auto-complete would derive from the graph (see the module doc)."""
    import onnxruntime as ort  # heavy import, only needed on this path

    try:
        session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises several unrelated types for a bad file
        raise ModelLoadError(f"{model_file}: cannot read ONNX model: {brief(exc, 300)}") from None
    args = [*session.get_inputs(), *session.get_outputs()]
    batching = all(a.shape and not isinstance(a.shape[0], int) for a in args)
    config = ModelConfig(name=name, platform="onnxruntime_onnx")
    config.max_batch_size = AUTOCOMPLETE_MAX_BATCH_SIZE if batching else 0
    for arg, is_input in [(a, True) for a in session.get_inputs()] + [
        (a, False) for a in session.get_outputs()
    ]:
        datatype = datatypes.by_onnx_type(arg.type)
        if datatype is None:
            raise ModelLoadError(f"{model_file}: {arg.name} has unsupported type {arg.type}")
        shape = arg.shape[1:] if batching else arg.shape
        dims = [d if isinstance(d, int) and d > 0 else -1 for d in shape]
        tensor = config.input.add() if is_input else config.output.add()
        tensor.name = arg.name
        tensor.data_type = datatype.config_enum  # type: ignore[assignment]
        tensor.dims.extend(dims)
    if batching:
        config.dynamic_batching.SetInParent()
    logger.info("%s: no config.pbtxt, derived one from the ONNX graph", model_file.parent.parent)
    return config

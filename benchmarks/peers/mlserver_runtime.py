"""A minimal MLServer runtime that runs an ONNX model in ONNX Runtime (for the peer comparison).

MLServer ships no ONNX runtime package, so this is the custom runtime a user would write, in
MLServer's own idiom (mlserver-sklearn, mlserver-xgboost): decode the first input with NumpyCodec,
run the model, encode each output with NumpyCodec. Adaptive batching (max_batch_size,
max_batch_time in model-settings.json) is MLServer's; the session has convserve's CPU options.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ort_session import cpu_session


class OnnxRuntimeModel(MLModel):
    async def load(self) -> bool:
        uri = await get_model_uri(self._settings)
        extra = (self._settings.parameters.extra if self._settings.parameters else None) or {}
        self._session = cpu_session(uri, int(extra.get("intra_op_threads", 0)))
        self._input = self._session.get_inputs()[0].name
        self._outputs = [o.name for o in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0])
        results = self._session.run(self._outputs, {self._input: x})
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[
                NumpyCodec.encode_output(name, array)
                for name, array in zip(self._outputs, results, strict=True)
            ],
        )

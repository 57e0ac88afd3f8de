"""MLServer 1.6.1 serving the same SavedModel through a custom ``MLModel`` (MLServer ships no
TensorFlow runtime); adaptive batching is configured in model-settings.json by the runner."""

from __future__ import annotations

import tensorflow as tf
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class SavedModel(MLModel):
    async def load(self) -> bool:
        uri = self.settings.parameters.uri
        self._predict = tf.saved_model.load(uri).signatures["serving_default"]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0])
        y = self._predict(x=tf.constant(x))["y"].numpy()
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("y", y)])

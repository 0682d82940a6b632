"""The MLServer peer's runtime: the zoo model as an MLServer custom runtime (imported by MLServer's workers by its
dotted name, `mlserver_runtime.TorchRuntime`; scripts/bench/peers/mlserver_server.py writes the settings naming it)."""

from __future__ import annotations

import torch
from _model import load_model
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class TorchRuntime(MLModel):
    async def load(self) -> bool:
        extra = (self.settings.parameters.extra if self.settings.parameters else None) or {}
        self._device = extra.get("device", "cpu")
        self._model = load_model(extra.get("zoo", self.name), extra.get("options"), self._device)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0])
        with torch.inference_mode():
            out = self._model(torch.from_numpy(x).to(self._device))[0].cpu().numpy()
        return InferenceResponse(model_name=self.name, id=payload.id, outputs=[NumpyCodec.encode_output("output", out)])

"""The KServe peer: KServe's ModelServer (the Python server of KServe's custom predictors) serving the same zoo model
through the Open Inference Protocol, HTTP (`--port`) and gRPC (`--grpc-port`). It has no batcher: one forward per
request, as a KServe custom predictor runs unless the deployment adds the batcher sidecar.

    .venv-peers/kserve/bin/python scripts/bench/peers/kserve_server.py --port 8000 --grpc-port 8001 --model mlp

Runs in its own venv (peer_envs.py). An `InferResponse` needs a string id: a request without one gets a fresh one.
Stops on SIGINT.
"""

from __future__ import annotations

import uuid
from typing import Any

import torch
from _model import load_model, peer_arg_parser
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer


class TorchModel(Model):
    def __init__(self, name: str, options: str | None, device: str) -> None:
        super().__init__(name)
        self.options, self.device = options, device
        self.load()

    def load(self) -> bool:
        self.model = load_model(self.name, self.options, self.device)
        self.ready = True
        return True

    async def predict(
        self, payload: InferRequest, headers: dict[str, str] | None = None, response_headers: Any = None
    ) -> InferResponse:
        x = payload.inputs[0].as_numpy()
        with torch.inference_mode():
            out = self.model(torch.from_numpy(x).to(self.device))[0].cpu().numpy()
        output = InferOutput(name="output", shape=list(out.shape), datatype="FP32")
        output.set_data_from_numpy(out, binary_data=False)
        return InferResponse(response_id=payload.id or str(uuid.uuid4()), model_name=self.name, infer_outputs=[output])


def main() -> None:
    ap = peer_arg_parser(__doc__.splitlines()[0], batching=False)
    ap.add_argument("--grpc-port", type=int, required=True)
    args = ap.parse_args()
    model = TorchModel(args.model, args.options, args.device)
    ModelServer(http_port=args.port, grpc_port=args.grpc_port, workers=1, enable_docs_url=False).start([model])


if __name__ == "__main__":
    main()

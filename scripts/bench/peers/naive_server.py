"""The naive peer: a plain FastAPI + uvicorn endpoint that runs one forward per request (what most people write first).

Same model and weights as morphserve (`morphserve.graph.load_zoo`), same request and response JSON as morphserve's
`POST /v1/models/{model}/infer`: `{"inputs": nested list}` in, `{"model", "model_version", "outputs"}` out.
A sync route, so FastAPI runs each forward in its thread pool; no batching.

    python scripts/bench/peers/naive_server.py --port 8001 --model mlp [--options '{"width": 1.0}'] [--device cpu]
        [--dtype float16]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import uvicorn
from _model import load_model, peer_arg_parser
from fastapi import FastAPI
from pydantic import BaseModel


class InferRequest(BaseModel):
    inputs: list[Any]


def build_app(name: str, options: str | None, device: str, dtype: str = "float32") -> FastAPI:
    model = load_model(name, options, device, dtype)
    compute = getattr(torch, dtype)
    app = FastAPI(title=f"naive {name}")

    @app.get("/health")
    def health() -> dict[str, bool]:
        return {"ready": True}

    @app.post(f"/v1/models/{name}/infer")
    def infer(body: InferRequest) -> dict[str, Any]:
        x = torch.from_numpy(np.asarray(body.inputs, dtype=np.float32)).to(device, compute)
        with torch.inference_mode():
            out = model(x)[0]
        return {"model": name, "model_version": 1, "outputs": out.float().cpu().numpy().tolist()}

    return app


def main() -> None:
    ap = peer_arg_parser(__doc__.splitlines()[0], batching=False)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    args = ap.parse_args()
    uvicorn.run(
        build_app(args.model, args.options, args.device, args.dtype),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()

"""The naive peer: a plain FastAPI + uvicorn endpoint that runs one forward per request (what most people write first).

Same model and weights as morphserve (`app.graph.load_zoo`), same request and response JSON as morphserve's
`POST /v1/models/{model}/infer`: `{"inputs": nested list}` in, `{"model", "model_version", "outputs"}` out.
A sync route, so FastAPI runs each forward in its thread pool; no batching.

    python scripts/bench/peers/naive_server.py --port 8001 --model mlp [--options '{"width": 1.0}'] [--device cpu]
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch
import uvicorn
from _model import load_model
from fastapi import FastAPI
from pydantic import BaseModel


class InferRequest(BaseModel):
    inputs: list[Any]


def build_app(name: str, options: str | None, device: str) -> FastAPI:
    model = load_model(name, options, device)
    app = FastAPI(title=f"naive {name}")

    @app.get("/health")
    def health() -> dict[str, bool]:
        return {"ready": True}

    @app.post(f"/v1/models/{name}/infer")
    def infer(body: InferRequest) -> dict[str, Any]:
        x = torch.from_numpy(np.asarray(body.inputs, dtype=np.float32)).to(device)
        with torch.inference_mode():
            out = model(x)[0]
        return {"model": name, "model_version": 1, "outputs": out.cpu().numpy().tolist()}

    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--options", default=None, help="zoo options as a JSON object")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    uvicorn.run(build_app(args.model, args.options, args.device), host=args.host, port=args.port,
                log_level="warning", access_log=False)  # fmt: skip


if __name__ == "__main__":
    main()

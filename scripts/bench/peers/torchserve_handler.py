"""TorchServe handler of the TorchServe peer: one batched forward of the zoo model per batch TorchServe forms.

Packed into the .mar by scripts/bench/peers/torchserve_server.py with `zoo.json` beside it (model name, zoo
options, device, repository root). TorchServe's frontend batches up to `batchSize` requests within `maxBatchDelay`
ms and hands them here as one list; each item's "body" is the request's JSON, already parsed by TorchServe's Python
backend (content type application/json). The answer per request is the /v1 JSON of morphserve and the other peers.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ts.torch_handler.base_handler import BaseHandler


class ZooHandler(BaseHandler):
    """BaseHandler's hooks (preprocess, inference, postprocess) with the model built by morphserve.graph.load_zoo."""

    def initialize(self, context: Any) -> None:
        model_dir = Path(context.system_properties["model_dir"])
        cfg = json.loads((model_dir / "zoo.json").read_text())
        sys.path.insert(0, str(Path(cfg["root"]) / "scripts" / "bench" / "peers"))
        from _model import load_model  # the same module and weights as every other server

        threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
        if threads > 0:  # TorchServe's worker may have set its own; the benchmark gives every server the same
            torch.set_num_threads(threads)
        self.name = cfg["model"]
        self.device = torch.device(cfg.get("device", "cpu"))
        self.model = load_model(
            cfg["model"], json.dumps(cfg["options"]) if cfg.get("options") else None, str(self.device)
        )
        self.initialized = True
        # stderr: TorchServe logs a worker's stderr at WARN (MODEL_LOG), the level its log is kept at here
        print(
            f"ZooHandler ready: {self.name} on {self.device}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} intra-op thread(s)",
            file=sys.stderr,
            flush=True,
        )

    def preprocess(self, data: list[dict[str, Any]]) -> torch.Tensor:
        rows = []
        for item in data:
            body = item.get("body") if item.get("body") is not None else item.get("data")
            if isinstance(body, bytes | bytearray):
                body = json.loads(body)
            rows.append(np.asarray(body["inputs"], dtype=np.float32))
        self._rows = [len(r) for r in rows]
        return torch.from_numpy(np.concatenate(rows)).to(self.device)

    def inference(self, data: torch.Tensor, *args: Any, **kwargs: Any) -> np.ndarray:
        with torch.inference_mode():
            return self.model(data)[0].cpu().numpy()

    def postprocess(self, data: np.ndarray) -> list[dict[str, Any]]:
        out, i = [], 0
        for n in self._rows:
            out.append({"model": self.name, "model_version": 1, "outputs": data[i : i + n].tolist()})
            i += n
        return out

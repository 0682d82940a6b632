"""KServe's InferenceGRPCClient against a morphserve server, run by tests/e2e/test_kserve_grpc.py in a process of its
own (kserve's generated protocol module and tritonclient's cannot be imported into one process). It runs the core
scenario of the v2 protocol and prints what it saw as one JSON document, for the test to assert on.

    python tests/e2e/kserve_probe.py 127.0.0.1:PORT
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import grpc
import numpy as np
from kserve import InferenceGRPCClient, InferInput, InferRequest

X = np.random.default_rng(0).random((3, 64), dtype=np.float32)


def _request(x: np.ndarray, binary: bool, **kw: Any) -> InferRequest:
    inp = InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    return InferRequest(model_name=kw.pop("model", "digits"), infer_inputs=[inp], **kw)


async def _error(client: InferenceGRPCClient, request: InferRequest) -> dict[str, str]:
    try:
        await client.infer(request)
    except grpc.RpcError as e:
        return {"code": e.code().name, "message": e.details() or ""}
    return {"code": "OK", "message": ""}


async def probe(url: str) -> dict[str, Any]:
    async with InferenceGRPCClient(url, timeout=30, retries=2) as client:
        out: dict[str, Any] = {
            "live": await client.is_server_live(),
            "ready": await client.is_server_ready(),
            "model_ready": await client.is_model_ready("digits"),
            "unknown_ready": await client.is_model_ready("nope"),
        }
        raw = await client.infer(_request(X, True, request_id="req-1"))
        out["raw"] = {"id": raw.id, "version": raw.model_version, "output": raw.outputs[0].as_numpy().tolist()}
        typed = await client.infer(_request(X, False))
        out["typed"] = typed.outputs[0].as_numpy().tolist()
        versioned = await client.infer(_request(X, True, model_version="1"))
        out["versioned"] = versioned.model_version
        gated = await client.infer(_request(X, True, parameters={"min_version": 1}))
        out["min_version"] = gated.model_version
        out["bad_shape"] = await _error(client, _request(np.zeros((2, 63), np.float32), True))
        out["unknown_model"] = await _error(client, _request(X, True, model="nope"))
        out["unknown_version"] = await _error(client, _request(X, True, model_version="9"))
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(probe(sys.argv[1]))))

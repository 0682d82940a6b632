"""`POST /v1/models/{m}/infer`: nested JSON lists in and out, for curl users."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request, Response

from morphserve.api.deps import RegistryDep
from morphserve.api.errors import ERROR_RESPONSES, ApiError
from morphserve.api.fastjson import JSONRoute
from morphserve.api.schemas import MinVersion, V1InferRequest, V1InferResponse
from morphserve.graph.arrays import from_json
from morphserve.serving.registry import Registry

router = APIRouter(prefix="/v1/models", tags=["inference"], responses=ERROR_RESPONSES, route_class=JSONRoute)


def arrays_of(model: str, body: V1InferRequest, registry: Registry) -> dict[str, np.ndarray]:
    """The request's inputs as arrays of the model's input datatypes."""
    sig = {t.name: t.datatype for t in registry.current(model).inputs}
    if isinstance(body.inputs, dict):
        given = body.inputs
    elif len(sig) == 1:
        given = {next(iter(sig)): body.inputs}
    else:
        raise ApiError(400, f"model {model!r} has inputs {list(sig)}: send an object of them by name")
    return {k: from_json(v, sig.get(k, "FP32"), what=f"input {k!r}") for k, v in given.items()}


@router.post("/{model}/infer", response_model=V1InferResponse)
async def infer(
    request: Request, model: str, body: V1InferRequest, registry: RegistryDep, min_version: MinVersion = None
) -> Response:
    return await answer(model, arrays_of(model, body, registry), registry, request, min_version)


async def answer(
    model: str, arrays: dict[str, np.ndarray], registry: Registry, request: Request, min_version: int | None = None
) -> Response:
    """Infer and encode the answer; the request gives the rollout's sticky header and the request id (feedback)."""
    sticky = registry.sticky(model, request.headers)
    request_id = getattr(request.state, "request_id", None)
    result = await registry.infer(model, arrays, min_version=min_version, sticky=sticky, request_id=request_id)
    names = result.names
    outputs: Any = result.outputs[0] if len(names) == 1 else dict(zip(names, result.outputs, strict=True))
    content = orjson.dumps(
        {"model": model, "model_version": result.version, "outputs": outputs}, option=orjson.OPT_SERIALIZE_NUMPY
    )
    return Response(content, media_type="application/json")

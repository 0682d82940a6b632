"""`POST /v1/models/{m}/infer`: nested JSON lists in and out, for curl users."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Response

from app.api.deps import RegistryDep
from app.api.errors import ERROR_RESPONSES, ApiError
from app.api.schemas import V1InferRequest, V1InferResponse
from app.serving.registry import numpy_dtype

router = APIRouter(prefix="/v1/models", tags=["inference"], responses=ERROR_RESPONSES)
_MAX_ELEMENTS = 1 << 27


def _array(name: str, data: Any, dtype: np.dtype[Any]) -> np.ndarray:
    try:
        arr = np.asarray(data, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as e:
        raise ApiError(400, f"input {name!r}: not a rectangular list of numbers ({str(e)[:200]})") from None
    if arr.size > _MAX_ELEMENTS:
        raise ApiError(400, f"input {name!r} has {arr.size} elements; the limit is {_MAX_ELEMENTS}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ApiError(400, f"input {name!r} contains NaN or infinity")
    return arr


@router.post("/{model}/infer", response_model=V1InferResponse)
async def infer(model: str, body: V1InferRequest, registry: RegistryDep) -> Response:
    current = registry.version(model)
    sig = {t.name: t for t in current.inputs}
    if isinstance(body.inputs, dict):
        given = body.inputs
    elif len(sig) == 1:
        given = {next(iter(sig)): body.inputs}
    else:
        raise ApiError(400, f"model {model!r} has inputs {list(sig)}: send an object of them by name")
    arrays = {k: _array(k, v, numpy_dtype(sig[k].dtype) if k in sig else np.dtype(np.float32))
              for k, v in given.items()}  # fmt: skip
    result = await registry.infer(model, arrays)
    names = [o.name for o in registry.version(model, result.version).outputs]
    outputs: Any = result.outputs[0] if len(names) == 1 else dict(zip(names, result.outputs, strict=True))
    content = orjson.dumps({"model": model, "model_version": result.version, "outputs": outputs},
                           option=orjson.OPT_SERIALIZE_NUMPY)  # fmt: skip
    return Response(content, media_type="application/json")

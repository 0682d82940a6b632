"""`POST /v1/models/{m}/infer`: nested JSON lists in and out, for curl users."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Response

from app.api.deps import RegistryDep
from app.api.errors import ERROR_RESPONSES, ApiError
from app.api.fastjson import ORJSONRoute
from app.api.oip_codec import NUMPY_TO_OIP
from app.api.schemas import V1InferRequest, V1InferResponse
from app.serving.registry import numpy_dtype

router = APIRouter(prefix="/v1/models", tags=["inference"], responses=ERROR_RESPONSES, route_class=ORJSONRoute)
_MAX_ELEMENTS = 1 << 27


#: The JSON value kinds (numpy kinds of the parsed list) each input kind accepts: no silent truncation of
#: 1.5 into an integer input, no strings or booleans read as numbers.
_ACCEPTS = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}
_JSON_KIND = {"b": "booleans", "i": "integers", "u": "integers", "f": "numbers", "U": "strings"}


def _array(name: str, data: Any, dtype: np.dtype[Any]) -> np.ndarray:
    try:
        raw = np.asarray(data)
    except (ValueError, TypeError, OverflowError) as e:
        raise ApiError(400, f"input {name!r}: not a rectangular list of numbers ({str(e)[:200]})") from None
    if raw.size and raw.dtype.kind not in _ACCEPTS[dtype.kind]:
        want, got = NUMPY_TO_OIP[dtype], _JSON_KIND.get(raw.dtype.kind, "mixed or non-numeric values")
        raise ApiError(400, f"input {name!r}: expected datatype {want}, got {got}", expected=want, got=got)
    if raw.size and dtype.kind in "iu":
        info = np.iinfo(dtype)
        if raw.min() < info.min or raw.max() > info.max:
            raise ApiError(400, f"input {name!r}: values out of range for {NUMPY_TO_OIP[dtype]}",
                           expected=NUMPY_TO_OIP[dtype])  # fmt: skip
    with np.errstate(over="ignore"):
        arr = raw.astype(dtype)
    if arr.size > _MAX_ELEMENTS:
        raise ApiError(400, f"input {name!r} has {arr.size} elements; the limit is {_MAX_ELEMENTS}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        if raw.dtype.kind in "iuf" and np.isfinite(raw).all():
            raise ApiError(400, f"input {name!r}: values out of range for {NUMPY_TO_OIP[dtype]}",
                           expected=NUMPY_TO_OIP[dtype])  # fmt: skip
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
    names = registry.output_names(model)
    outputs: Any = result.outputs[0] if len(names) == 1 else dict(zip(names, result.outputs, strict=True))
    content = orjson.dumps({"model": model, "model_version": result.version, "outputs": outputs},
                           option=orjson.OPT_SERIALIZE_NUMPY)  # fmt: skip
    return Response(content, media_type="application/json")

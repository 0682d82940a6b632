"""Open Inference Protocol v2 (KServe / Triton): model metadata, readiness and inference, JSON and binary."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from morphserve.api.deps import RegistryDep
from morphserve.api.errors import ERROR_RESPONSES, ApiError
from morphserve.api.fastjson import JSONRoute, parse_body
from morphserve.api.schemas import (
    OIP_REQUEST_SCHEMA,
    MinVersion,
    ModelMetadata,
    ModelReady,
    OIPInferResponse,
    OIPTensorMetadata,
)
from morphserve.serving.registry import Registry
from morphserve.wire.oip_codec import decode_request, encode_response

router = APIRouter(prefix="/v2/models", tags=["inference (OIP v2)"], responses=ERROR_RESPONSES, route_class=JSONRoute)
_HEADER = "inference-header-content-length"


def _version(v: str | None) -> int | None:
    if v is None or v == "":
        return None
    if not v.isdigit() or len(v) > 18:
        raise ApiError(400, f"model version must be a positive integer, got {v!r}")
    return int(v)


async def _metadata(registry: Registry, model: str, version: int | None) -> ModelMetadata:
    v = await registry.version(model, version)
    resident = registry.resident(model)
    return ModelMetadata(
        name=model,
        versions=[str(r) for r in resident],
        platform="pytorch_torchfx",
        inputs=[OIPTensorMetadata(name=t.name, datatype=t.datatype, shape=list(t.shape)) for t in v.inputs],
        outputs=[
            OIPTensorMetadata(name=o.name, datatype=o.datatype or "FP32", shape=list(o.shape or ())) for o in v.outputs
        ],
    )


@router.get("/{model}", response_model=ModelMetadata)
async def model_metadata(model: str, registry: RegistryDep) -> ModelMetadata:
    return await _metadata(registry, model, None)


@router.get("/{model}/versions/{version}", response_model=ModelMetadata)
async def model_version_metadata(model: str, version: str, registry: RegistryDep) -> ModelMetadata:
    return await _metadata(registry, model, _version(version))


async def _ready(registry: Registry, model: str, version: int | None) -> ModelReady:
    await registry.version(model, version)  # 404 for unknown models and versions
    if version is not None and version not in registry.resident(model):
        raise ApiError(503, f"version {version} of {model!r} is not resident", name=model, ready=False)
    return ModelReady(name=model, ready=True)


@router.get("/{model}/ready", response_model=ModelReady)
async def model_ready(model: str, registry: RegistryDep) -> ModelReady:
    return await _ready(registry, model, None)


@router.get("/{model}/versions/{version}/ready", response_model=ModelReady)
async def model_version_ready(model: str, version: str, registry: RegistryDep) -> ModelReady:
    return await _ready(registry, model, _version(version))


async def _infer(
    request: Request, registry: Registry, model: str, version: int | None, min_version: int | None
) -> Response:
    raw_len = request.headers.get(_HEADER)
    header_length: int | None = None
    if raw_len is not None:
        if not raw_len.strip().isdigit():
            raise ApiError(400, f"Inference-Header-Content-Length must be a non-negative integer, got {raw_len!r}")
        header_length = int(raw_len)
    elif not (request.headers.get("content-type") or "application/json").startswith(("application/json", "*/*")):
        ctype = request.headers.get("content-type")
        raise ApiError(415, f"send Content-Type: application/json (binary tensors need {_HEADER}), got {ctype!r}")
    body = await request.body()
    req = await parse_body(len(body), lambda: decode_request(body, header_length, shm=registry.shm.read))
    sticky = registry.sticky(model, request.headers) if version is None else None
    request_id = getattr(request.state, "request_id", None)
    result = await registry.infer(
        model, req.inputs, version, min_version=min_version, sticky=sticky, request_id=request_id
    )
    outputs = dict(zip(result.names, result.outputs, strict=True))
    content, headers = encode_response(
        model_name=model,
        model_version=str(result.version),
        request_id=req.id,
        outputs=outputs,
        request=req,
        shm=registry.shm.write,
    )
    media = "application/octet-stream" if headers else "application/json"
    return Response(content, media_type=media, headers=headers)


_INFER_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": OIP_REQUEST_SCHEMA},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    },
}


#: With binary outputs asked for (`binary_data_output` / `binary_data`), the body is the JSON header and the raw
#: tensor bytes after it, as application/octet-stream with Inference-Header-Content-Length.
_BINARY_200: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        "headers": {
            "Inference-Header-Content-Length": {
                "schema": {"type": "integer"},
                "description": "length of the JSON header (binary outputs)",
            }
        },
    }
}


@router.post("/{model}/infer", response_model=OIPInferResponse, openapi_extra=_INFER_DOC, responses=_BINARY_200)
async def infer(model: str, request: Request, registry: RegistryDep, min_version: MinVersion = None) -> Response:
    return await _infer(request, registry, model, None, min_version)


_VERSION_INFER = "/{model}/versions/{version}/infer"


@router.post(_VERSION_INFER, response_model=OIPInferResponse, openapi_extra=_INFER_DOC, responses=_BINARY_200)
async def infer_version(
    model: str, version: str, request: Request, registry: RegistryDep, min_version: MinVersion = None
) -> Response:
    return await _infer(request, registry, model, _version(version), min_version)

"""Durable versions: pin/unpin, retention gc, export (zip of spec + safetensors, or ONNX)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response

from morphserve.api.deps import AdminDep, RegistryDep
from morphserve.api.errors import ERROR_RESPONSES, ApiError, ErrorResponse
from morphserve.api.fastjson import JSONRoute
from morphserve.api.schemas import MAX_VERSION, GcRequest, GcResponse, PinResponse
from morphserve.graph.bundle import bundle_bytes
from morphserve.graph.onnx_export import OnnxUnavailable, to_onnx

router = APIRouter(prefix="/v1/models", tags=["versions"], responses=ERROR_RESPONSES, route_class=JSONRoute)
VersionPath = Annotated[int, Path(ge=1, le=MAX_VERSION)]


@router.post("/{model}/versions/{version}/pin", response_model=PinResponse, dependencies=[AdminDep])
async def pin(model: str, version: VersionPath, registry: RegistryDep) -> PinResponse:
    await registry.pin(model, version, True)
    return PinResponse(model=model, version=version, pinned=True)


@router.delete("/{model}/versions/{version}/pin", response_model=PinResponse, dependencies=[AdminDep])
async def unpin(model: str, version: VersionPath, registry: RegistryDep) -> PinResponse:
    await registry.pin(model, version, False)
    return PinResponse(model=model, version=version, pinned=False)


@router.post("/{model}/gc", response_model=GcResponse, dependencies=[AdminDep])
async def gc(model: str, body: GcRequest, registry: RegistryDep) -> GcResponse:
    result = await registry.gc(model, body.keep)
    return GcResponse(model=model, removed_versions=result.removed_versions, removed_blobs=result.removed_blobs)


_EXPORT_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/zip": {}, "application/octet-stream": {}},
        "description": "zip (spec.json + weights.safetensors) or an ONNX file",
    },
    501: {"model": ErrorResponse, "description": "format=onnx on a server without the onnx extra"},
}


@router.get("/{model}/versions/{version}/export", response_class=Response, responses=_EXPORT_DOC)
async def export(
    model: str, version: VersionPath, registry: RegistryDep, format: Annotated[Literal["zip", "onnx"], Query()] = "zip"
) -> Response:
    v = await registry.version(model, version)
    if format == "zip":
        data = await registry.run(bundle_bytes, v)
        return Response(
            data,
            media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="{model}-v{version}.zip"'},
        )
    try:
        data = await registry.run(to_onnx, v)
    except OnnxUnavailable as e:
        raise ApiError(501, str(e)) from None
    return Response(
        data,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{model}-v{version}.onnx"'},
    )

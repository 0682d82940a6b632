"""Live edits (bearer token): the general `edits` route, the layer sugar over it, weights upload, rollback."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request

from app.api.deps import AdminDep, RegistryDep
from app.api.errors import ERROR_RESPONSES, ApiError
from app.api.fastjson import JSONRoute
from app.api.schemas import EditRequest, EditResponse, InsertLayer, ReplaceLayer, Rollback, Timings
from app.graph import describe
from app.serving.pipeline import EditOutcome
from app.serving.registry import Registry

router = APIRouter(
    prefix="/v1/models", tags=["edits"], dependencies=[AdminDep], responses=ERROR_RESPONSES, route_class=JSONRoute
)
IfMatch = Annotated[str | None, Header(description="the version the edit is based on; same as if_version")]


def _if_version(body_value: int | None, if_match: str | None) -> int | None:
    if if_match is None or if_match.strip() == "*":
        return body_value
    tag = if_match.strip().removeprefix("W/").strip('"')
    if not tag.isdigit() or len(tag) > 18:
        raise ApiError(400, "If-Match must name a version number, e.g. '\"3\"'")
    if body_value is not None and body_value != int(tag):
        raise ApiError(400, f"If-Match ({tag}) and if_version ({body_value}) disagree")
    return int(tag)


async def _response(registry: Registry, o: EditOutcome) -> EditResponse:
    graph = await registry.run(describe, o.version) if o.dry_run else None
    return EditResponse(
        model=o.model, version=o.version.version, previous_version=o.previous.version, dry_run=o.dry_run,
        diff=o.diff, timings_ms=Timings(**o.timings_ms), graph=graph,
    )  # fmt: skip


async def _edit(registry: Registry, model: str, ops: list[dict[str, Any]], *, if_version: int | None,
                dry_run: bool = False, allow_output_change: bool = False) -> EditResponse:  # fmt: skip
    outcome = await registry.edit(
        model, ops, if_version=if_version, dry_run=dry_run, allow_output_change=allow_output_change
    )
    return await _response(registry, outcome)


@router.post("/{model}/edits", response_model=EditResponse)
async def edit(model: str, body: EditRequest, registry: RegistryDep, if_match: IfMatch = None) -> EditResponse:
    return await _edit(registry, model, body.ops, if_version=_if_version(body.if_version, if_match),
                       dry_run=body.dry_run, allow_output_change=body.allow_output_change)  # fmt: skip


@router.post("/{model}/layers", response_model=EditResponse)
async def insert_layer(model: str, body: InsertLayer, registry: RegistryDep, if_match: IfMatch = None) -> EditResponse:
    op = {"op": "insert", **body.model_dump(mode="json", exclude={"if_version", "allow_output_change"},
                                            exclude_none=True)}  # fmt: skip
    return await _edit(registry, model, [op], if_version=_if_version(body.if_version, if_match),
                       allow_output_change=body.allow_output_change)  # fmt: skip


@router.put("/{model}/layers/{node}", response_model=EditResponse)
async def replace_layer(model: str, node: str, body: ReplaceLayer, registry: RegistryDep,
                        if_match: IfMatch = None) -> EditResponse:  # fmt: skip
    op = {"op": "replace", "node": node, **body.model_dump(mode="json", exclude={"if_version", "allow_output_change"})}
    return await _edit(registry, model, [op], if_version=_if_version(body.if_version, if_match),
                       allow_output_change=body.allow_output_change)  # fmt: skip


@router.delete("/{model}/layers/{node}", response_model=EditResponse)
async def remove_layer(model: str, node: str, registry: RegistryDep, if_match: IfMatch = None,
                       allow_output_change: bool = False) -> EditResponse:  # fmt: skip
    return await _edit(registry, model, [{"op": "remove", "node": node}], if_version=_if_version(None, if_match),
                       allow_output_change=allow_output_change)  # fmt: skip


_WEIGHTS_DOC = {"requestBody": {"required": True, "content": {"application/octet-stream": {
    "schema": {"type": "string", "format": "binary"}}}}}  # fmt: skip


@router.put("/{model}/layers/{node}/weights", response_model=EditResponse, openapi_extra=_WEIGHTS_DOC)
async def upload_weights(model: str, node: str, request: Request, registry: RegistryDep,
                         if_match: IfMatch = None) -> EditResponse:  # fmt: skip
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("application/octet-stream"):
        raise ApiError(415, f"send the weights as a safetensors file with Content-Type application/octet-stream, "
                            f"got {ctype or 'none'!r}")  # fmt: skip
    outcome = await registry.upload_weights(model, node, await request.body(), if_version=_if_version(None, if_match))
    return await _response(registry, outcome)


@router.post("/{model}/rollback", response_model=EditResponse)
async def rollback(model: str, body: Rollback, registry: RegistryDep, if_match: IfMatch = None) -> EditResponse:
    outcome = await registry.rollback(model, body.version, if_version=_if_version(body.if_version, if_match))
    return await _response(registry, outcome)

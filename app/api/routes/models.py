"""Model management and graph views: list, create, delete; graph (json/dot/svg), versions, diff."""

from __future__ import annotations

from typing import Annotated, Literal

import graphviz
from fastapi import APIRouter, Header, Query, Response

from app.api.deps import AdminDep, RegistryDep
from app.api.errors import ERROR_RESPONSES, ApiError, ErrorResponse
from app.api.fastjson import JSONRoute
from app.api.schemas import MAX_VERSION, CreateModel, Deleted, ModelInfo, ModelList, VersionInfo, VersionList
from app.graph import GraphDescription, GraphDiff, NotFoundError, describe, diff, to_dot, to_svg
from app.serving.registry import ModelStatus, Registry
from app.serving.sources import SpecSource, ZooSource

router = APIRouter(prefix="/v1/models", tags=["models and graphs"], responses=ERROR_RESPONSES, route_class=JSONRoute)


def _info(s: ModelStatus) -> ModelInfo:
    return ModelInfo(**dict(s))


async def _info_of(registry: Registry, name: str) -> ModelInfo:
    return _info(await registry.status(name))


@router.get("", response_model=ModelList)
async def list_models(registry: RegistryDep) -> ModelList:
    infos = []
    for name in registry.names():
        try:
            infos.append(await _info_of(registry, name))
        except NotFoundError:  # deleted while we listed
            continue
    return ModelList(models=infos)


@router.post("", response_model=ModelInfo, status_code=201, dependencies=[AdminDep])
async def create_model(body: CreateModel, registry: RegistryDep) -> ModelInfo:
    if (body.zoo is None) == (body.spec is None):
        raise ApiError(422, "give exactly one of 'zoo' or 'spec'")
    source = ZooSource(body.zoo, body.options) if body.zoo is not None else SpecSource(body.spec or {})
    return _info(await registry.create(body.name, source, body.dtype))


@router.get("/{model}", response_model=ModelInfo)
async def get_model(model: str, registry: RegistryDep) -> ModelInfo:
    return await _info_of(registry, model)


@router.delete("/{model}", response_model=Deleted, dependencies=[AdminDep])
async def delete_model(model: str, registry: RegistryDep) -> Deleted:
    await registry.remove(model)
    return Deleted(deleted=model)


_GRAPH_DOC = {200: {"content": {"application/json": {}, "text/vnd.graphviz": {}, "image/svg+xml": {}},
                    "description": "the graph as JSON, DOT or SVG"}, 304: {"description": "not modified"},
              501: {"model": ErrorResponse, "description": "format=svg on a server without graphviz"}}  # fmt: skip


def _svg(dot: str) -> str:
    try:
        return to_svg(dot)
    except graphviz.ExecutableNotFound:
        raise ApiError(501, "SVG needs graphviz's 'dot' program, which is not installed on the server; "
                            "use format=dot") from None  # fmt: skip


@router.get("/{model}/graph", response_model=GraphDescription, responses=_GRAPH_DOC)
async def graph(
    model: str,
    registry: RegistryDep,
    version: Annotated[int | None, Query(ge=1, le=MAX_VERSION)] = None,
    format: Annotated[Literal["json", "dot", "svg"], Query()] = "json",
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    v = await registry.version(model, version)
    etag = f'"{v.version}"'
    if if_none_match is not None and etag in [t.strip().removeprefix("W/") for t in if_none_match.split(",")]:
        return Response(status_code=304, headers={"ETag": etag})
    headers = {"ETag": etag}
    if format == "json":
        body = await registry.run(lambda: describe(v).model_dump_json())
        return Response(body, media_type="application/json", headers=headers)
    if format == "dot":
        return Response(await registry.run(to_dot, v), media_type="text/vnd.graphviz", headers=headers)
    svg = await registry.run(lambda: _svg(to_dot(v)))
    return Response(svg, media_type="image/svg+xml", headers=headers)


@router.get("/{model}/versions", response_model=VersionList)
async def versions(model: str, registry: RegistryDep) -> VersionList:
    resident = set(registry.resident(model))
    current = registry.current(model).version
    pins = await registry.pins(model)
    return VersionList(
        model=model, current=current,
        versions=[VersionInfo(version=r.version, parent=r.parent, created_at=r.created_at, ops=r.ops,
                              resident=r.version in resident, pinned=r.version in pins)
                  for r in await registry.history(model)],
    )  # fmt: skip


@router.get("/{model}/diff", response_model=GraphDiff)
async def graph_diff(
    model: str,
    registry: RegistryDep,
    from_: Annotated[int, Query(alias="from", ge=1, le=MAX_VERSION)],
    to: Annotated[int | None, Query(ge=1, le=MAX_VERSION)] = None,
) -> GraphDiff:
    a, b = await registry.version(model, from_), await registry.version(model, to)
    return await registry.run(diff, a, b)

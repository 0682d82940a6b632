"""Model management and graph views: list, create, delete; graph (json/dot/svg), versions, diff."""

from __future__ import annotations

from typing import Annotated, Literal

import graphviz
from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from app.api.deps import AdminDep, RegistryDep
from app.api.errors import ERROR_RESPONSES, ApiError
from app.api.schemas import MAX_VERSION, CreateModel, Deleted, ModelInfo, ModelList, VersionInfo, VersionList
from app.graph import GraphDescription, GraphDiff, describe, diff, to_dot, to_svg
from app.graph.spec import TensorSpec
from app.serving.registry import Registry

router = APIRouter(prefix="/v1/models", tags=["models and graphs"], responses=ERROR_RESPONSES)


def _info(registry: Registry, name: str) -> ModelInfo:
    served = registry.get(name)
    v = served.live.current
    return ModelInfo(
        name=name, version=v.version, versions=len(registry.history(name)),
        resident_versions=served.worker.resident_versions(), device=str(registry.device),
        queue_depth=served.worker.queue_depth(), inputs=list(v.inputs),
        outputs=[TensorSpec(name=o.name, datatype=o.datatype or "FP32", shape=o.shape or (-1,)) for o in v.outputs],
        params=v.total_params(),
    )  # fmt: skip


@router.get("", response_model=ModelList)
def list_models(registry: RegistryDep) -> ModelList:
    return ModelList(models=[_info(registry, n) for n in registry.names()])


@router.post("", response_model=ModelInfo, status_code=201, dependencies=[AdminDep])
async def create_model(body: CreateModel, registry: RegistryDep) -> ModelInfo:
    if (body.zoo is None) == (body.spec is None):
        raise ApiError(422, "give exactly one of 'zoo' or 'spec'")
    if body.zoo is not None:
        await run_in_threadpool(registry.add_zoo, body.name, body.zoo, body.options)
    else:
        await run_in_threadpool(registry.add_spec, body.name, body.spec or {})
    return _info(registry, body.name)


@router.get("/{model}", response_model=ModelInfo)
def get_model(model: str, registry: RegistryDep) -> ModelInfo:
    return _info(registry, model)


@router.delete("/{model}", response_model=Deleted, dependencies=[AdminDep])
async def delete_model(model: str, registry: RegistryDep) -> Deleted:
    await run_in_threadpool(registry.remove, model)
    return Deleted(deleted=model)


_GRAPH_DOC = {200: {"content": {"application/json": {}, "text/vnd.graphviz": {}, "image/svg+xml": {}},
                    "description": "the graph as JSON, DOT or SVG"}, 304: {"description": "not modified"}}  # fmt: skip


@router.get("/{model}/graph", response_model=GraphDescription, responses=_GRAPH_DOC)
async def graph(
    model: str,
    registry: RegistryDep,
    request: Request,
    version: Annotated[int | None, Query(ge=1, le=MAX_VERSION)] = None,
    format: Annotated[Literal["json", "dot", "svg"], Query()] = "json",
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    v = registry.version(model, version)
    etag = f'"{v.version}"'
    if if_none_match is not None and etag in [t.strip().removeprefix("W/") for t in if_none_match.split(",")]:
        return Response(status_code=304, headers={"ETag": etag})
    headers = {"ETag": etag}
    if format == "json":
        body = await run_in_threadpool(lambda: describe(v).model_dump_json())
        return Response(body, media_type="application/json", headers=headers)
    dot = await run_in_threadpool(to_dot, v)
    if format == "dot":
        return Response(dot, media_type="text/vnd.graphviz", headers=headers)
    try:
        svg = await run_in_threadpool(to_svg, dot)
    except graphviz.ExecutableNotFound:
        raise ApiError(503, "SVG needs graphviz's 'dot' program, which is not installed on the server; "
                            "use format=dot") from None  # fmt: skip
    return Response(svg, media_type="image/svg+xml", headers=headers)


@router.get("/{model}/versions", response_model=VersionList)
def versions(model: str, registry: RegistryDep) -> VersionList:
    served = registry.get(model)
    resident = set(served.worker.resident_versions())
    pins = registry.pins(model)
    return VersionList(
        model=model, current=served.live.current.version,
        versions=[VersionInfo(version=r.version, parent=r.parent, created_at=r.created_at, ops=r.ops,
                              resident=r.version in resident, pinned=r.version in pins)
                  for r in registry.history(model)],
    )  # fmt: skip


@router.get("/{model}/diff", response_model=GraphDiff)
def graph_diff(
    model: str,
    registry: RegistryDep,
    from_: Annotated[int, Query(alias="from", ge=1, le=MAX_VERSION)],
    to: Annotated[int | None, Query(ge=1, le=MAX_VERSION)] = None,
) -> GraphDiff:
    return diff(registry.version(model, from_), registry.version(model, to))

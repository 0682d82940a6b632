"""Model management and graph views: list, create (from the zoo, a spec, or an uploaded bundle), delete; graph
(json/dot/svg), versions, diff."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Header, Query, Request, Response
from starlette.requests import ClientDisconnect
from starlette.routing import Match
from starlette.types import Scope

from morphserve.api.deps import AdminDep, RegistryDep
from morphserve.api.errors import ERROR_RESPONSES, ApiError, ErrorResponse
from morphserve.api.fastjson import JSONRoute
from morphserve.api.middleware import StreamedBody, media_type
from morphserve.api.schemas import MAX_VERSION, CreateModel, Deleted, ModelInfo, ModelList, VersionInfo, VersionList
from morphserve.graph.errors import NotFoundError
from morphserve.graph.views import GraphDescription, GraphDiff, diff
from morphserve.serving.errors import ModelExistsError
from morphserve.serving.registry import ModelStatus, Registry
from morphserve.serving.sources import NAME, SpecSource, ZooSource
from morphserve.settings import Settings

T = TypeVar("T")
router = APIRouter(prefix="/v1/models", tags=["models and graphs"], responses=ERROR_RESPONSES, route_class=JSONRoute)
ZIP = "application/zip"


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


def upload_body(settings: Settings) -> StreamedBody:
    """The body-limit exemption of the upload route (main.py hands it to BodyLimitMiddleware): its own limit, and
    its body streamed to disk rather than buffered up to the inference limit."""
    return StreamedBody("POST", router.prefix, ZIP, settings.max_upload_bytes, "--max-upload-mb")


class _ZipRoute(JSONRoute):
    """`POST /v1/models` with a zip body is its own route, chosen by media type before the JSON route is tried, so
    both ways of creating a model share one path (and the JSON route keeps its own checks and messages)."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is Match.FULL and media_type(dict(scope["headers"])) != ZIP:
            return Match.NONE, {}
        return match, child


async def upload_model(
    request: Request,
    registry: RegistryDep,
    name: Annotated[str | None, Query(pattern=NAME.pattern, description="the new model's name")] = None,
) -> ModelInfo:
    """Create a model from a bundle zip (spec.json + weights.safetensors) streamed in the body."""
    if name is None:
        raise ApiError(422, "name the new model: POST /v1/models?name=NAME with the bundle as the body")
    if name in registry.names():  # before a byte of the body is read
        raise ModelExistsError(f"model {name!r} already exists", model=name)
    limit = request.app.state.settings.max_upload_bytes
    with registry.upload_spool(name) as spool:
        try:
            async for chunk in request.stream():
                if spool.size + len(chunk) > limit:
                    raise ApiError(413, f"request body exceeds the limit of {limit} bytes (--max-upload-mb)")
                await spool.write(chunk)
        except ClientDisconnect:  # nobody reads this answer; the spool goes with the `with`
            raise ApiError(400, "the client disconnected before the bundle was complete") from None
        await spool.finish()
        return _info(await registry.create(name, spool))


router.add_api_route(
    "",
    upload_model,
    methods=["POST"],
    response_model=ModelInfo,
    status_code=201,
    dependencies=[AdminDep],
    include_in_schema=False,
    route_class_override=_ZipRoute,
)

#: The upload shares the JSON route's operation in the OpenAPI schema (one path, one method, two media types).
_CREATE_DOC: dict[str, Any] = {
    "parameters": [
        {
            "name": "name",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "pattern": NAME.pattern},
            "description": "the new model's name; required with an application/zip body",
        }
    ],
    "requestBody": {"content": {ZIP: {"schema": {"type": "string", "format": "binary"}}}},
}


@router.post("", response_model=ModelInfo, status_code=201, dependencies=[AdminDep], openapi_extra=_CREATE_DOC)
async def create_model(body: CreateModel, registry: RegistryDep) -> ModelInfo:
    if (body.zoo is None) == (body.spec is None):
        raise ApiError(422, "give exactly one of 'zoo' or 'spec'")
    source = ZooSource(body.zoo, body.options) if body.zoo is not None else SpecSource(body.spec or {})
    return _info(await registry.create(body.name, source, body.dtype, body.compile))


@router.get("/{model}", response_model=ModelInfo)
async def get_model(model: str, registry: RegistryDep) -> ModelInfo:
    return await _info_of(registry, model)


@router.delete("/{model}", response_model=Deleted, dependencies=[AdminDep])
async def delete_model(model: str, registry: RegistryDep) -> Deleted:
    await registry.remove(model)
    return Deleted(deleted=model)


_GRAPH_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/json": {}, "text/vnd.graphviz": {}, "image/svg+xml": {}},
        "description": "the graph as JSON, DOT or SVG",
    },
    304: {"description": "not modified"},
    501: {"model": ErrorResponse, "description": "format=svg on a server without graphviz"},
}


async def _unless_gone(request: Request, work: Awaitable[T]) -> T:
    """`work`, cancelled if the client goes away first (a render's `dot` is killed then: serving/render.py)."""

    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    task, watch = asyncio.ensure_future(work), asyncio.ensure_future(gone())
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
    if task.cancelled() or not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise ApiError(400, "the client went away before the graph was drawn")
    return task.result()


@router.get("/{model}/graph", response_model=GraphDescription, responses=_GRAPH_DOC)
async def graph(
    model: str,
    request: Request,
    registry: RegistryDep,
    version: Annotated[int | None, Query(ge=1, le=MAX_VERSION)] = None,
    format: Annotated[Literal["json", "dot", "svg"], Query()] = "json",
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    # JSON is made once per version; DOT and SVG are drawn on the render pool (serving/render.py): bounded in size
    # and time, never ahead of inference or edits, and stopped when the client goes away.
    v = await registry.version(model, version)
    etag = f'"{v.version}"'
    # A version never changes: clients keep the body and revalidate (the web page fetches each version once).
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if if_none_match is not None and etag in [t.strip().removeprefix("W/") for t in if_none_match.split(",")]:
        return Response(status_code=304, headers=headers)
    if format == "json":
        return Response(await registry.graph_json(v), media_type="application/json", headers=headers)
    if format == "dot":
        dot = await _unless_gone(request, registry.renders.dot_text(v))
        return Response(dot, media_type="text/vnd.graphviz", headers=headers)
    svg = await _unless_gone(request, registry.renders.svg(v))
    return Response(svg, media_type="image/svg+xml", headers=headers)


@router.get("/{model}/versions", response_model=VersionList)
async def versions(model: str, registry: RegistryDep) -> VersionList:
    resident = set(registry.resident(model))
    current = registry.current(model).version
    pins = await registry.pins(model)
    evaluations = await registry.evaluations(model)
    return VersionList(
        model=model,
        current=current,
        versions=[
            VersionInfo(
                version=r.version,
                parent=r.parent,
                created_at=r.created_at,
                ops=r.ops,
                resident=r.version in resident,
                pinned=r.version in pins,
                staged=r.staged,
                evaluations=evaluations.get(r.version, []),
            )
            for r in await registry.history(model)
        ],
    )


@router.get("/{model}/diff", response_model=GraphDiff)
async def graph_diff(
    model: str,
    registry: RegistryDep,
    from_: Annotated[int, Query(alias="from", ge=1, le=MAX_VERSION)],
    to: Annotated[int | None, Query(ge=1, le=MAX_VERSION)] = None,
) -> GraphDiff:
    a, b = await registry.version(model, from_), await registry.version(model, to)
    changes: GraphDiff = await registry.run(diff, a, b)
    return changes

"""Server metadata, health and metrics: `GET /v2`, `/v2/health/*`, `/metrics`."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from morphserve import __version__
from morphserve.api import triton
from morphserve.api.deps import RegistryDep
from morphserve.api.errors import TRANSPORT_ERRORS, ApiError
from morphserve.api.fastjson import JSONRoute
from morphserve.api.schemas import LiveResponse, ReadyResponse, ServerMetadata

router = APIRouter(tags=["health"], responses=TRANSPORT_ERRORS, route_class=JSONRoute)


@router.get("/v2", response_model=ServerMetadata)
async def server_metadata(registry: RegistryDep) -> ServerMetadata:
    return ServerMetadata(name="morphserve", version=__version__, extensions=triton.extensions(registry))


@router.get("/v2/health/live", response_model=LiveResponse)
async def live() -> LiveResponse:
    return LiveResponse(live=True)


@router.get("/v2/health/ready", response_model=ReadyResponse, responses={503: {"model": ReadyResponse}})
async def ready(registry: RegistryDep) -> ReadyResponse:
    """200 when every model the server was asked to serve is served (also with none); 503 names what failed."""
    state = registry.readiness()
    if not state.ready:
        raise ApiError(503, state.reason or "not ready", ready=False)
    return ReadyResponse(ready=True)


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def metrics(request: Request, registry: RegistryDep) -> Response:
    gauge = request.app.state.metrics.queue_depth
    for name, depth in registry.queue_depths().items():  # gauges read at scrape time
        gauge.labels(name).set(depth)
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

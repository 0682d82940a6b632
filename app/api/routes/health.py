"""Server metadata, health and metrics: `GET /v2`, `/v2/health/*`, `/metrics`."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app import __version__
from app.api.deps import RegistryDep
from app.api.errors import TRANSPORT_ERRORS, ApiError
from app.api.schemas import LiveResponse, ReadyResponse, ServerMetadata

router = APIRouter(tags=["health"], responses=TRANSPORT_ERRORS)


@router.get("/v2", response_model=ServerMetadata)
def server_metadata() -> ServerMetadata:
    return ServerMetadata(name="morphserve", version=__version__, extensions=["binary_tensor_data"])


@router.get("/v2/health/live", response_model=LiveResponse)
def live() -> LiveResponse:
    return LiveResponse(live=True)


@router.get("/v2/health/ready", response_model=ReadyResponse, responses={503: {"model": ReadyResponse}})
def ready(registry: RegistryDep) -> ReadyResponse:
    if not registry.names():
        raise ApiError(503, "no model is loaded", ready=False)
    return ReadyResponse(ready=True)


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(request: Request) -> Response:
    registry = request.app.state.registry
    for name in registry.names():  # gauges read at scrape time
        request.app.state.metrics.queue_depth.labels(name).set(registry.get(name).worker.queue_depth())
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

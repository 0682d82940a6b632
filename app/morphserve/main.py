"""Build the FastAPI application: settings -> registry (models, workers) -> routers, errors, middleware."""

from __future__ import annotations

import gc
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from morphserve import __version__
from morphserve.api import docs, errors
from morphserve.api.access import AccessMiddleware, Policy, admin_routes
from morphserve.api.deadlines import ReadDeadlineMiddleware, protocol_class
from morphserve.api.deps import require_admin
from morphserve.api.fastpath import InferenceFastPath
from morphserve.api.middleware import BodyLimitMiddleware, MetricsMiddleware
from morphserve.api.routes import (
    catalogue,
    edits,
    events,
    extensions,
    fit,
    health,
    infer,
    models,
    nodes,
    oip,
    replicas,
    rollouts,
    ui,
    versions,
)
from morphserve.serving.metrics import Metrics
from morphserve.serving.registry import Registry
from morphserve.settings import CORS_ANY_WITHOUT_TOKEN, GRACEFUL_SHUTDOWN_S, Settings

log = logging.getLogger("morphserve")


def resolve_admin_token(settings: Settings) -> str | None:
    """The token mutating routes need: the configured one; none on loopback-only servers; else a fresh one,
    logged once, so that an admin API is never open on a network interface."""
    if settings.admin_token:
        return settings.admin_token
    if settings.loopback_only:
        return None
    token = secrets.token_urlsafe(32)
    log.warning("no --admin-token given and listening on %s: generated admin token %s", settings.host, token)
    return token


_UNSET: Any = object()


def _build_routes(routes: list[Any]) -> None:
    """Build what FastAPI builds per included router on its first request (each route's fields and validators:
    tens of milliseconds), so that the first edit after a start does not wait for it under load. A FastAPI that
    builds routes eagerly has nothing to build."""
    for route in routes:
        for name in ("effective_candidates", "effective_low_priority_routes"):
            build = getattr(route, name, None)
            if callable(build):
                _build_routes([r for r in build() if hasattr(r, "effective_candidates")])


def create_app(
    settings: Settings | None = None, registry: Registry | None = None, *, admin_token: str | None = _UNSET
) -> FastAPI:
    """`admin_token`: the one the caller resolved already (the serve command, which may have generated and logged
    it); by default resolved here from `settings`."""
    settings = settings or Settings()
    metrics = registry.metrics if registry is not None else Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if app.state.registry is None:
            reg = Registry(settings, metrics)
            reg.load_from_settings()
            app.state.registry = reg
        _build_routes(app.router.routes)
        # Models and libraries are loaded for good: move them out of the collector's reach, so that full
        # collections (measured at ~150 ms pauses, once a second under load) scan only what requests allocate.
        gc.collect()
        gc.freeze()
        grpc_server = None
        if settings.grpc_port is not None:  # gRPC beside HTTP, on this event loop, over the same registry
            from morphserve.api.grpc import server as grpc_api

            grpc_server, app.state.grpc_port = await grpc_api.start(app.state.registry, settings, app.state.admin_token)
        try:
            yield
        finally:
            if grpc_server is not None:
                await grpc_api.stop(grpc_server)
            app.state.registry.close()

    token = resolve_admin_token(settings) if admin_token is _UNSET else admin_token
    if token is None and "*" in settings.cors_origins:
        raise ValueError(CORS_ANY_WITHOUT_TOKEN)
    app = FastAPI(
        title="morphserve",
        version=__version__,
        description="A model server whose PyTorch models can be inspected and edited live while they serve.",
        lifespan=lifespan,
        # Off unless asked for: Swagger UI and ReDoc load their scripts from a CDN, on the origin of the page that
        # keeps the admin token (docs.py serves them under a CSP that allows that CDN and nothing else).
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.registry = registry
    app.state.admin_token = token
    app.state.policy = Policy(token, frozenset(settings.allowed_hosts), frozenset(settings.cors_origins))
    app.state.grpc_port = None  # the port gRPC bound, once started (--grpc-port 0 picks one)
    errors.install(app)
    # `extensions` before `oip`: its /v2/models/stats is not a model named "stats".
    routers = (
        health,
        extensions,
        oip,
        infer,
        models,
        versions,
        edits,
        rollouts,
        fit,
        replicas,
        events,
        nodes,
        catalogue,
        ui,
    )
    for module in routers:
        app.include_router(module.router)
    if settings.docs:
        docs.install(app)
    app.add_middleware(InferenceFastPath, fastapi=app)  # innermost: inside the body limit, access and the metrics
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, streamed=[models.upload_body(settings)])
    admin = admin_routes((r for module in routers for r in module.router.routes), require_admin)
    app.add_middleware(AccessMiddleware, policy=app.state.policy, admin=admin)  # before any body is read
    app.add_middleware(ReadDeadlineMiddleware, timeout=settings.read_timeout_s)
    if settings.cors_origins:  # browsers' preflights for the pages allowed to call the API (origins.py)
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "If-Match",
                "If-None-Match",
                "Inference-Header-Content-Length",
                "Last-Event-ID",
            ],
            expose_headers=["ETag", "Inference-Header-Content-Length", "X-Request-Id"],
        )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def uvicorn_config(app: FastAPI, settings: Settings) -> Any:
    """How `serve` runs the app: uvicorn with a deadline on each request's headers (deadlines.py)."""
    import uvicorn

    return uvicorn.Config(
        app,
        log_level=settings.log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        http=protocol_class(settings.read_timeout_s),
    )

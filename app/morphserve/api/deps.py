"""Dependency aliases for routes: the registry and the admin guard."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from morphserve.serving.registry import Registry

from .access import ADMITTED, Policy, refusal


# `async def`: FastAPI runs plain `def` dependencies in its thread pool, a measured cost on every request.
async def get_registry(request: Request) -> Registry:
    registry: Registry = request.app.state.registry  # main.create_app puts it there
    return registry


async def require_admin(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    """Mutating routes: same-origin (or an allowed origin) if a browser sent it; then the bearer token must match
    (constant-time). With no token configured the server listens on loopback only (see main.create_app), and the
    request must also name a loopback host, which a DNS-rebinding page cannot (see origins.py).

    access.AccessMiddleware applies these rules before the body is read, finding the routes that need them by this
    dependency, and marks the requests it admitted; this checks any other. `authorization`
    is declared so that the OpenAPI schema documents the header; the check reads it from the request."""
    if request.scope.get(ADMITTED):
        return
    policy: Policy = request.app.state.policy
    refused = refusal(policy, request.url.path, dict(request.headers), admin=True)
    if refused is not None:
        raise refused


RegistryDep = Annotated[Registry, Depends(get_registry)]
AdminDep = Depends(require_admin)

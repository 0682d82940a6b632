"""Dependency aliases for routes: the registry and the admin guard."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, Request

from morphserve.serving.registry import Registry

from .errors import ApiError
from .origins import host_allowed, same_origin


# `async def`: FastAPI runs plain `def` dependencies in its thread pool, a measured cost on every request.
async def get_registry(request: Request) -> Registry:
    registry: Registry = request.app.state.registry  # main.create_app puts it there
    return registry


async def require_admin(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    """Mutating routes: same-origin (or an allowed origin) if a browser sent it; then the bearer token must match
    (constant-time). With no token configured the server listens on loopback only (see main.create_app), and the
    request must also name a loopback host, which a DNS-rebinding page cannot (see origins.py)."""
    settings = request.app.state.settings
    host, origin = request.headers.get("host"), request.headers.get("origin")
    if (
        origin is not None
        and not same_origin(origin, host)
        and origin not in settings.cors_origins
        and "*" not in settings.cors_origins
    ):
        raise ApiError(
            403,
            f"cross-origin request refused: a page at {origin} may not change this server "
            "(allow it with --cors-origins)",
        )
    token: str | None = request.app.state.admin_token
    if token is None:
        if not host_allowed(host, frozenset(settings.allowed_hosts)):
            raise ApiError(
                403,
                f"this server has no admin token, so it accepts changes only for a loopback host, "
                f"not {host!r} (a DNS-rebinding page could send that); name the host with "
                f"--allowed-hosts or set --admin-token",
            )
        return
    if not authorization:
        raise ApiError(401, "this route needs 'Authorization: Bearer <token>'", headers={"WWW-Authenticate": "Bearer"})
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise ApiError(403, "the bearer token is not valid for this server")


RegistryDep = Annotated[Registry, Depends(get_registry)]
AdminDep = Depends(require_admin)

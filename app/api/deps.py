"""Dependency aliases for routes: the registry, the settings, and the admin guard."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, Request

from app.serving.registry import Registry
from app.settings import Settings

from .errors import ApiError


# `async def`: FastAPI runs plain `def` dependencies in its thread pool, a measured cost on every request.
async def get_registry(request: Request) -> Registry:
    return request.app.state.registry  # type: ignore[no-any-return]


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def require_admin(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    """Mutating routes: the bearer token must match (constant-time). With no token configured the server
    only listens on loopback (see main.create_app), so local calls pass."""
    token: str | None = request.app.state.admin_token
    if token is None:
        return
    if not authorization:
        raise ApiError(401, "this route needs 'Authorization: Bearer <token>'",
                       headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise ApiError(403, "the bearer token is not valid for this server")


RegistryDep = Annotated[Registry, Depends(get_registry)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
AdminDep = Depends(require_admin)

"""What the app prepares before it takes traffic, so that a first request of a kind does not pay for it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient


def _lazy_routers(routes: list[Any]) -> list[Any]:
    """FastAPI's included routers that build their routes on first use (none where it builds them eagerly)."""
    found = []
    for r in routes:
        if callable(getattr(r, "effective_candidates", None)):
            found.append(r)
            found += _lazy_routers(r._effective_candidates or [])
    return found


def test_every_router_is_built_before_the_first_request(make_client: Callable[..., TestClient]) -> None:
    """The first edit after a start used to take ~100 ms more than the next: FastAPI built the edit routes'
    validators on that request (docs/BENCHMARKS.md, "Edit-to-live")."""
    c = make_client()  # started: the lifespan ran, no request yet
    lazy = _lazy_routers(c.app.router.routes)  # type: ignore[attr-defined]
    for r in lazy:
        assert r._effective_candidates_version == r.original_router._get_routes_version(), r
    if not lazy:  # an eager FastAPI: every route carries its dependant from the start
        assert all(getattr(r, "dependant", True) is not None for r in c.app.router.routes)  # type: ignore[attr-defined]

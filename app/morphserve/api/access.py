"""Who may call what, decided from the request line and headers alone, before a byte of the body is read.

FastAPI reads and parses a route's body before it solves the route's dependencies, so a check made as a dependency
comes after the cost: three clients without a token sending 60 MB bodies to an edit route were read, parsed and
refused with a 400, never a 401, while an unrelated inference waited. Here the rules run as pure-ASGI middleware,
outside the body limit and everything that reads a body:

- a browser's cross-origin request to a route that changes something: 403 unless `--cors-origins` names its
  origin (origins.py);
- a server without a token answers only requests that name a loopback host (or one of `--allowed-hosts`), every
  route but the health checks: a DNS-rebinding page names its own host, and must read neither model data (the
  graph, the weights export, metrics, replicas, inference) nor change anything;
- a route that changes something, on a server with a token: `Authorization: Bearer <token>` (401 without it, 403
  with another; compared in constant time).

The routes that change something are the ones whose dependencies include `require_admin` (deps.py), found on the
routers themselves, so a new mutating route is covered by declaring its dependency as before; the dependency runs
the same check wherever the middleware did not (a route reached some other way).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import ApiError, error_response
from .origins import host_allowed, same_origin

#: Routes open to any Host even on a tokenless server: they say only whether it is up.
OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
#: Set in the scope of a request this middleware let through to a route that changes something (deps.py skips
#: its own check then: one token comparison per request).
ADMITTED = "morphserve.admitted"


@dataclass(frozen=True)
class Policy:
    """What the rules need to know about the server."""

    token: str | None
    allowed_hosts: frozenset[str]
    cors_origins: frozenset[str]


def refusal(policy: Policy, path: str, headers: dict[str, str], *, admin: bool) -> ApiError | None:
    """Why this request may not go on, or None. `headers`: lower-case names."""
    host, origin = headers.get("host"), headers.get("origin")
    if (
        admin
        and origin is not None
        and not same_origin(origin, host)
        and origin not in policy.cors_origins
        and "*" not in policy.cors_origins
    ):
        return ApiError(
            403,
            f"cross-origin request refused: a page at {origin} may not change this server "
            "(allow it with --cors-origins)",
        )
    if policy.token is None:
        if path not in OPEN_PATHS and not host_allowed(host, policy.allowed_hosts):
            what = "changes" if admin else "requests"
            return ApiError(
                403,
                f"this server has no admin token, so it accepts {what} only for a loopback host, not {host!r} "
                "(a DNS-rebinding page could send that); name the host with --allowed-hosts or set --admin-token",
            )
        return None
    if not admin:
        return None
    authorization = headers.get("authorization")
    if not authorization:
        return ApiError(401, "this route needs 'Authorization: Bearer <token>'", headers={"WWW-Authenticate": "Bearer"})
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), policy.token.encode()):
        return ApiError(403, "the bearer token is not valid for this server")
    return None


@dataclass(frozen=True)
class AdminRoute:
    methods: frozenset[str]
    path: re.Pattern[str]


def admin_routes(routes: Iterable[Any], marker: Any) -> list[AdminRoute]:
    """The routes among `routes` (APIRoutes of the routers) whose dependencies include `marker`."""
    found = []
    for route in routes:
        deps = getattr(route, "dependencies", None) or ()
        if any(getattr(d, "dependency", None) is marker for d in deps):
            found.append(AdminRoute(frozenset(route.methods or ()), route.path_regex))
    return found


def _by_method(admin: Sequence[AdminRoute]) -> dict[str, re.Pattern[str]]:
    """One pattern per method, the alternation of its routes' (one match per request, not one per route)."""
    patterns: dict[str, list[str]] = {}
    for r in admin:
        anonymous = re.sub(r"\(\?P<[^>]+>", "(?:", r.path.pattern)  # group names repeat across routes
        for method in r.methods:
            patterns.setdefault(method, []).append(f"(?:{anonymous})")
    return {m: re.compile("|".join(ps)) for m, ps in patterns.items()}


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}


class AccessMiddleware:
    def __init__(self, app: ASGIApp, policy: Policy, admin: Sequence[AdminRoute]) -> None:
        self.app, self.policy, self.admin = app, policy, _by_method(admin)

    def is_admin(self, method: str, path: str) -> bool:
        pattern = self.admin.get(method) if method not in _SAFE else None
        return pattern is not None and pattern.match(path) is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        admin = self.is_admin(scope["method"], scope["path"])
        if not admin and self.policy.token is not None:  # reads and inference of a server with a token: open
            return await self.app(scope, receive, send)
        refused = refusal(self.policy, scope["path"], _headers(scope), admin=admin)
        if refused is None:
            scope[ADMITTED] = admin
            return await self.app(scope, receive, send)
        response = error_response(refused.status, refused.message, refused.headers, **refused.fields)
        await response(scope, receive, send)

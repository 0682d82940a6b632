"""The inference fast path: `POST /v1/models/{m}/infer` and `POST /v2/models/{m}/infer` straight to their handlers.

Why: under load one event-loop thread parses, routes and answers every request, and profiling (docs/bench/
PROFILE.md, "The fast path") put ~40 % of its time in FastAPI's machinery around these two routes: route
matching over every router, the request/response wrappers, dependency solving, and the resumption of a dozen
nested coroutine frames per await. This middleware sits inside the metrics and body-limit middleware and calls
the very handlers the routes call, with the same request object, the same validation and the same exception
handlers, so a request answers byte for byte as it would through the router; the route tests run through it.

What it takes: the two routes without a query string (`?min_version=` goes the long way); a trailing slash is
the router's (its redirect). Everything else, the versioned OIP route included, goes to the router unchanged; the
OpenAPI schema still documents the routes, which stay registered.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from morphserve.api.fastjson import ORJSONRequest, check_json_body, loads, parse_body
from morphserve.api.routes import infer as v1
from morphserve.api.routes import oip
from morphserve.api.schemas import V1InferRequest

_ROUTES = {
    "v1": (re.compile(r"/v1/models/([^/]+)/infer"), "/v1/models/{model}/infer"),
    "oip": (re.compile(r"/v2/models/([^/]+)/infer"), "/v2/models/{model}/infer"),
}


async def _v1(request: Request, model: str) -> Response:
    check_json_body(request)
    raw = await request.body()
    if not raw:  # as FastAPI reports a missing body
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}])
    registry = request.app.state.registry
    doc = await parse_body(len(raw), lambda: loads(raw))
    try:
        body = V1InferRequest.model_validate(doc, from_attributes=True)  # FastAPI's mode, its messages
    except ValidationError as e:  # as FastAPI reports a body that fails its model
        raise RequestValidationError([{**err, "loc": ("body", *err["loc"])} for err in e.errors()]) from None
    del doc
    # a large body's arrays are made on the large-body pool; its Python lists go before the inference waits
    arrays = await parse_body(len(raw), functools.partial(v1.arrays_of, model, body, registry))
    del body
    return await v1.answer(model, arrays, registry, request)


async def _oip(request: Request, model: str) -> Response:
    return await oip._infer(request, request.app.state.registry, model, None, None)


@dataclass(frozen=True)
class _Route:
    """What the metrics middleware reads of `scope["route"]`: the route's path template (its label)."""

    path: str


_ROUTE_OF = {kind: _Route(template) for kind, (_, template) in _ROUTES.items()}
_HANDLERS: dict[str, Callable[[Request, str], Awaitable[Response]]] = {"v1": _v1, "oip": _oip}


class InferenceFastPath:
    def __init__(self, app: ASGIApp, fastapi: FastAPI) -> None:
        self.app, self.fastapi = app, fastapi

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["query_string"]:
            return await self.app(scope, receive, send)
        path: str = scope["path"]
        kind = "v1" if path.startswith("/v1/") else "oip" if path.startswith("/v2/") else None
        if kind is None or (match := _ROUTES[kind][0].fullmatch(path)) is None:
            return await self.app(scope, receive, send)
        scope["route"] = _ROUTE_OF[kind]
        scope["path_params"] = {"model": match[1]}
        request = ORJSONRequest(scope, receive)
        try:
            response = await _HANDLERS[kind](request, match[1])
        except Exception as exc:
            handler = self._handler(exc)
            if handler is None:
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)

    def _handler(self, exc: Exception) -> Callable[[Request, Exception], Awaitable[Response]] | None:
        """The app's exception handler for `exc` (by its class's MRO), as starlette's ExceptionMiddleware picks it;
        None for what only the outermost handler answers (a 500), which then sees the exception itself."""
        for cls in type(exc).__mro__:
            if cls is Exception:
                return None
            handler = self.fastapi.exception_handlers.get(cls)
            if handler is not None:
                return handler  # type: ignore[return-value]  # Starlette allows sync handlers; ours (errors.py) are async
        return None

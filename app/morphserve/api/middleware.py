"""Pure-ASGI middleware (cheaper than BaseHTTPMiddleware on the hot path): body size limit, metrics, logs, and the
security headers of every response."""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from morphserve.serving.metrics import Metrics

from .logtext import printable

log = logging.getLogger("morphserve.http")


async def _send_error(send: Send, status: int, message: str) -> None:
    body = orjson.dumps({"error": message})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def media_type(headers: dict[bytes, bytes]) -> str:
    """The request's media type (`application/zip` of `Application/Zip; charset=x`), '' without a Content-Type."""
    return headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower().decode("latin-1")


@dataclass(frozen=True)
class StreamedBody:
    """A route that streams its body to disk instead of holding it in memory (a model upload), under its own size
    limit: its declared Content-Length is checked against `max_bytes`, and a chunked body is passed through as it
    arrives (the route counts it) instead of being buffered up to the inference body limit."""

    method: str
    path: str
    media_type: str
    max_bytes: int
    flag: str  # the setting a 413 names

    def matches(self, scope: Scope, headers: dict[bytes, bytes]) -> bool:
        return scope["method"] == self.method and scope["path"] == self.path and media_type(headers) == self.media_type


class BodyLimitMiddleware:
    """413 for bodies over the limit, before the app reads a byte of them.

    A declared Content-Length is checked up front; a chunked body is buffered up to the limit and replayed. The
    routes in `streamed` are the explicit exceptions: their own limit, and no buffering.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, streamed: Sequence[StreamedBody] = ()) -> None:
        self.app, self.max_bytes, self.streamed = app, max_bytes, tuple(streamed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        own = next((s for s in self.streamed if s.matches(scope, headers)), None)
        limit, flag = (own.max_bytes, own.flag) if own is not None else (self.max_bytes, "--max-body-mb")
        declared = headers.get(b"content-length")
        too_big = f"request body exceeds the limit of {limit} bytes ({flag})"
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                return await _send_error(send, 400, "invalid Content-Length")
            if size > limit:
                return await _send_error(send, 413, too_big)
            return await self.app(scope, receive, send)
        if own is not None:  # streamed to disk by the route, which counts what arrives
            return await self.app(scope, receive, send)
        if b"chunked" not in headers.get(b"transfer-encoding", b""):
            return await self.app(scope, receive, send)
        chunks, total = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return None
            chunk = msg.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                return await _send_error(send, 413, too_big)
            chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)


_ids = itertools.count(1)
_PREFIX = f"{os.getpid():x}-"
#: Every response that does not bring its own (the web page's, the docs'): nothing in an API answer may run, load
#: anything, or be framed, even when a browser is tricked into rendering one (an SVG, a JSON body) as a page.
API_CSP = b"default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'; sandbox"


def _secure(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    names = {k.lower() for k, _ in headers}
    extra = []
    if b"x-content-type-options" not in names:
        extra.append((b"x-content-type-options", b"nosniff"))
    if b"content-security-policy" not in names:
        extra.append((b"content-security-policy", API_CSP))
    return [*headers, *extra] if extra else headers


class MetricsMiddleware:
    """Counts and times each request by route *template* (bounded label set), and logs one line per request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500
        request_id = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")[:64] or f"{_PREFIX}{next(_ids)}"
        scope.setdefault("state", {})["request_id"] = request_id  # routes read it (feedback labels by it)

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = _secure(list(message.get("headers", [])))
                message["headers"] = [*headers, (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(elapsed)
            if log.isEnabledFor(logging.DEBUG) or status >= 400:
                log.log(
                    logging.INFO if status < 500 else logging.ERROR,
                    "request_id=%s %s %s -> %d (%.1f ms)",
                    printable(request_id),
                    method,
                    printable(scope["path"]),
                    status,
                    elapsed * 1000,
                )

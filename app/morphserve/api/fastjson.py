"""JSON request bodies, parsed here rather than by FastAPI: orjson for speed, and our own words for bad bodies.

FastAPI decodes JSON bodies with the standard library (`Request.json()`), which profiling showed at 14-16 % of
the /v1 inference route. Every router uses `JSONRoute`: its request's `json()` uses orjson, and a body that is not
JSON, or not sent as JSON, is refused here with a message a client can act on (`BodyError` is a FastAPI
HTTPException, which FastAPI's body handling passes through unchanged). Validation and the OpenAPI schema stay
FastAPI's.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute

MAX_DEPTH = 1024  # orjson's nesting limit


class BodyError(HTTPException):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(status_code=status, detail=message)


def _depth_at(doc: bytes, pos: int) -> int:
    """Nesting depth of a JSON text at `pos` (brackets outside strings); only run on a body that failed to parse."""
    depth, in_string, escaped = 0, False, False
    for ch in doc[: pos + 1]:
        if in_string:
            escaped, in_string = (False, True) if escaped else (ch == 0x5C, ch != 0x22)
        elif ch == 0x22:
            in_string = True
        elif ch in (0x5B, 0x7B):
            depth += 1
        elif ch in (0x5D, 0x7D):
            depth -= 1
    return depth


def decode_error(doc: bytes, e: orjson.JSONDecodeError) -> str:
    """What is wrong with a body orjson refused, in the client's terms."""
    try:
        doc.decode("utf-8")
    except UnicodeDecodeError:
        return "the request body is not valid JSON: it is not UTF-8 text"
    pos = e.pos
    if doc[pos : pos + 9].lstrip(b"-").startswith((b"NaN", b"Infinity")):
        reason = "NaN and Infinity are not JSON numbers"
    elif _depth_at(doc, pos) > MAX_DEPTH:
        reason = f"it is nested too deeply (more than {MAX_DEPTH} levels)"
    else:
        reason = e.msg
    return f"the request body is not valid JSON: {reason} (at character {pos})"


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("application/json", "*/*") or (media.startswith("application/") and media.endswith("+json"))


class ORJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = orjson.loads(body)
            except orjson.JSONDecodeError as e:
                raise BodyError(400, decode_error(body, e)) from None
        return self._json


def check_json_body(request: Request) -> None:
    """415 for a body that is not sent as JSON (no Content-Type with a body, or another media type)."""
    ctype = request.headers.get("content-type")
    has_body = request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
    if (ctype is None and has_body) or (ctype is not None and not _is_json(ctype)):
        raise BodyError(415, f"send the body as JSON with Content-Type: application/json, got {ctype!r}")


class JSONRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        takes_json = self.body_field is not None

        async def json_handler(request: Request) -> Response:
            if takes_json:
                check_json_body(request)
            return await handler(ORJSONRequest(request.scope, request.receive))

        return json_handler

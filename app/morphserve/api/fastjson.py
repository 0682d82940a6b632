"""JSON request bodies, parsed here rather than by FastAPI: orjson for speed, and our own words for bad bodies.

FastAPI decodes JSON bodies with the standard library (`Request.json()`), which profiling showed at 14-16 % of
the /v1 inference route. Every router uses `JSONRoute`: its request's `json()` uses orjson, and a body that is not
JSON, or not sent as JSON, is refused here with a message a client can act on (`BodyError` is a FastAPI
HTTPException, which FastAPI's body handling passes through unchanged). Validation and the OpenAPI schema stay
FastAPI's.

Large bodies (over `LARGE_BODY`) are parsed on a small pool of their own, at most `LARGE_PARSES` at a time per
event loop: the parse and what the route makes of it (numpy arrays) run there, so the Python objects of a 60 MB
body live and die in that thread, and only that many bodies' worth of them exist at once. orjson holds the
interpreter while it parses (about 5 ms per MB here), which no thread changes; what the loop is spared is
everything around it, and an unbounded number of bodies expanding at once.
"""

from __future__ import annotations

import asyncio
import re
import weakref
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import orjson
from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute

MAX_DEPTH = 1024  # orjson's nesting limit
#: Bodies larger than this are parsed off the event loop, on `_POOL`.
LARGE_BODY = 1 << 20
LARGE_PARSES = 2
_POOL = ThreadPoolExecutor(max_workers=LARGE_PARSES, thread_name_prefix="large-body")
_GATES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()
#: A JSON string (with its escapes), removed before brackets are counted.
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
#: Beyond this many bytes before the error, the depth is estimated from all brackets rather than those outside
#: strings (a regular expression over megabytes of strings takes a noticeable fraction of a second).
_EXACT_DEPTH_BYTES = 4 << 20
T = TypeVar("T")


class BodyError(HTTPException):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(status_code=status, detail=message)


def _depth_at(doc: bytes, pos: int) -> int:
    """Nesting depth of a JSON text at `pos`, counted natively (only run on a body that failed to parse): the
    brackets outside strings, or all brackets when the prefix is large."""
    prefix = doc[: pos + 1]
    if len(prefix) <= _EXACT_DEPTH_BYTES:
        prefix = _STRING.sub(b"", prefix)
    return prefix.count(b"[") + prefix.count(b"{") - prefix.count(b"]") - prefix.count(b"}")


def decode_error(doc: bytes, e: orjson.JSONDecodeError) -> str:
    """What is wrong with a body orjson refused, in the client's terms."""
    if not doc.isascii():
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


def loads(body: bytes) -> Any:
    """orjson's parse, with our words for a body it refuses."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise BodyError(400, decode_error(body, e)) from None


async def parse_body(size: int, parse: Callable[[], T]) -> T:
    """`parse()` (of a body of `size` bytes, and whatever is made of it) here for a small body, else on the
    large-body pool, at most LARGE_PARSES at a time per event loop."""
    if size <= LARGE_BODY:
        return parse()
    loop = asyncio.get_running_loop()
    gate = _GATES.get(loop)
    if gate is None:
        gate = _GATES[loop] = asyncio.Semaphore(LARGE_PARSES)
    async with gate:
        return await loop.run_in_executor(_POOL, parse)


class ORJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            self._json = await parse_body(len(body), lambda: loads(body))
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

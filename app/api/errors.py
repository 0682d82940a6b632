"""One error shape for every route: `{"error": "<message>", ...structured fields}`.

Domain errors from the graph and serving layers map to statuses here, so routes never build error
responses themselves, and anything unexpected becomes a logged 500 without internals in the body.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.graph.errors import EditError, GraphError, NotFoundError, SpecError
from app.graph.live import ConflictError
from app.serving.errors import (
    BadInputError,
    InferenceTimeoutError,
    ModelExistsError,
    QueueFullError,
    UnavailableError,
)

from .oip_codec import OIPError

log = logging.getLogger("morphserve.api")


class ErrorResponse(BaseModel):
    """Every error body. Extra fields (`op`, `node`, `expected`, `got`, ...) appear where they apply."""

    model_config = ConfigDict(extra="allow")
    error: str


class ApiError(Exception):
    """An HTTP-level refusal raised by routes and dependencies (auth, content type, body size)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, **fields: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.headers, self.fields = status, message, headers, fields


_STATUS: list[tuple[type[Exception], int]] = [
    (NotFoundError, 404),  # includes NotResidentError and unknown nodes
    (ConflictError, 409),
    (ModelExistsError, 409),
    (QueueFullError, 503),
    (UnavailableError, 503),
    (InferenceTimeoutError, 504),
    (BadInputError, 400),
    (EditError, 422),
    (SpecError, 422),
    (GraphError, 422),
]

#: Status codes an error may carry, for the OpenAPI `responses` of each route. 415: a body route sent
#: something other than its content type; 504: an inference that outlived --request-timeout-s.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 409, 413, 415, 422, 503, 504)
}
#: What any route can answer before it runs: a bad or oversize body (BodyLimitMiddleware).
TRANSPORT_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (400, 413)}
_BODY_PARSE_ERROR = "There was an error parsing the body"  # FastAPI's words for a body json.loads choked on


def _body_parse_message(cause: BaseException | None) -> str:
    """FastAPI's 400 for a JSON body that could not even be decoded, said so that a client can act on it."""
    if isinstance(cause, UnicodeError):
        return "the request body is not valid JSON: it is not UTF-8 text"
    if isinstance(cause, RecursionError):
        return "the request body is not valid JSON: it is nested too deeply"
    return "the request body is not valid JSON"


def _non_finite_at(doc: Any, pos: Any) -> bool:
    """Whether a JSON decode error points at a NaN/Infinity token (orjson rejects them, as JSON does)."""
    if not isinstance(pos, int) or not isinstance(doc, str | bytes):
        return False
    text = doc[pos : pos + 9] if isinstance(doc, str) else doc[pos : pos + 9].decode("latin-1")
    return text.lstrip("-").startswith(("NaN", "Infinity"))


def _wrong_content_type(exc: RequestValidationError) -> bool:
    """A JSON-body route got a body FastAPI did not parse as JSON (no or another Content-Type): the body
    arrives as raw bytes and fails the model as 'not a dictionary', which would read as a 422 about fields."""
    return any(tuple(e.get("loc", ())) == ("body",) and isinstance(e.get("input"), bytes | bytearray)
               for e in exc.errors())  # fmt: skip


def error_response(status: int, message: str, headers: dict[str, str] | None = None, **fields: Any) -> Response:
    doc = {"error": message, **fields}
    try:
        body = orjson.dumps(doc, default=str)
    except TypeError:  # e.g. an integer beyond 64 bits echoed from the request: never a 500 for that
        body = json.dumps(doc, default=str).encode()
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def status_of(exc: GraphError) -> int:
    return next(code for cls, code in _STATUS if isinstance(exc, cls))


def install(app: FastAPI) -> None:
    @app.exception_handler(GraphError)
    async def _graph(_: Request, exc: GraphError) -> Response:
        status = status_of(exc)
        headers = {"Retry-After": str(QueueFullError.retry_after_s)} if status == 503 else None
        return error_response(status, exc.message, headers, **exc.fields)

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> Response:
        return error_response(exc.status, exc.message, exc.headers, **exc.fields)

    @app.exception_handler(OIPError)
    async def _oip(_: Request, exc: OIPError) -> Response:
        return error_response(400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        if _wrong_content_type(exc):
            ctype = request.headers.get("content-type")
            return error_response(415, f"send the body as JSON with Content-Type: application/json, got {ctype!r}")
        parts = []
        for e in exc.errors():
            loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
            if e.get("type") == "json_invalid":
                where = e.get("loc", ("body", "?"))[-1]
                reason = (e.get("ctx") or {}).get("error", "invalid")
                if _non_finite_at(exc.body, where):
                    reason = "NaN and Infinity are not JSON numbers"
                elif "depth" in str(reason) or "recursion" in str(reason):
                    reason = "it is nested too deeply"
                parts.append(f"the request body is not valid JSON: {reason} (at character {where})")
            elif not loc and e.get("type") == "missing":
                parts.append("the request needs a JSON body")
            else:
                parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
        status = 400 if any(e.get("type") == "json_invalid" for e in exc.errors()) else 422
        return error_response(status, "; ".join(parts)[:2000] or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        detail = str(exc.detail)
        if exc.status_code == 400 and detail == _BODY_PARSE_ERROR:
            detail = _body_parse_message(exc.__cause__)
        return error_response(exc.status_code, detail, dict(exc.headers or {}) or None)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal server error")

"""One error shape for every route, `{"error": "<message>", ...structured fields}`, and one table of statuses.

Domain errors of the graph, serving and store layers map to statuses here (`STATUS`), so routes never build error
responses themselves; anything unexpected becomes a logged 500 without internals in the body. docs/API.md lists
the same table.
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
from starlette.requests import ClientDisconnect

from morphserve.graph.arrays import ArrayError
from morphserve.graph.errors import EditError, GraphError, NotFoundError, SpecError
from morphserve.graph.live import ConflictError
from morphserve.serving.errors import (
    BadInputError,
    InferenceTimeoutError,
    JobConflictError,
    ModelExistsError,
    ModelTooLargeError,
    QueueFullError,
    RenderBusyError,
    RenderTimeoutError,
    RenderTooLargeError,
    RenderUnavailableError,
    RolloutConflictError,
    UnavailableError,
    VersionBehindError,
)
from morphserve.store import (
    BlobCorruptError,
    DocConflictError,
    JournalError,
    StorageFullError,
    StoreError,
    StoreUnavailableError,
    VersionConflictError,
)
from morphserve.wire.oip_codec import OIPError

from .logtext import printable

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


#: Status of each domain error, most specific first.
STATUS: list[tuple[type[Exception], int]] = [
    (NotFoundError, 404),  # unknown model, version or node; includes NotResidentError
    (ConflictError, 409),  # if_version / If-Match is not the latest
    (VersionConflictError, 409),  # another writer took the version number
    (ModelExistsError, 409),
    (RolloutConflictError, 409),  # a rollout runs already, or the candidate is the current version
    (JobConflictError, 409),  # a fit job trains this model already
    (DocConflictError, 409),  # a rollout or dataset changed meanwhile (another replica decided first)
    (QueueFullError, 503),  # with Retry-After
    (RenderBusyError, 503),  # too many graph renders waiting; with Retry-After
    (RenderTimeoutError, 504),  # a graph's drawing ran past --render-timeout-s
    (RenderUnavailableError, 501),  # SVG without graphviz
    (RenderTooLargeError, 422),  # more nodes than --max-render-nodes
    (VersionBehindError, 503),  # ?min_version= not applied here in time; with Retry-After, names the version it has
    (UnavailableError, 503),  # the model is shutting down
    (InferenceTimeoutError, 504),
    (BadInputError, 400),
    (OIPError, 400),
    (ArrayError, 400),
    (ModelTooLargeError, 422),
    (EditError, 422),
    (SpecError, 422),
    (GraphError, 422),
    (StorageFullError, 507),  # the disk under the state dir is full; nothing changed
    (StoreUnavailableError, 503),  # read-only or unusable state dir, database down (Retry-After when transient)
    (JournalError, 503),  # the journal cannot be read
    (BlobCorruptError, 500),  # a weight file on the server is damaged: the message names it
]

#: Status codes an error may carry, for the OpenAPI `responses` of each route. 415: a body route sent
#: something other than its content type; 504: an inference that outlived --request-timeout-s.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 408, 409, 413, 415, 422, 500, 503, 504, 507)
}
#: What any route can answer before it runs: a bad, oversize or too slow body (BodyLimitMiddleware, deadlines.py).
TRANSPORT_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (400, 408, 413)}


#: The gRPC status of each HTTP status a domain error maps to (STATUS above), so that both protocols refuse alike.
GRPC_CODES: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",  # a conflict: the client may retry after reading the new state
    413: "RESOURCE_EXHAUSTED",
    415: "INVALID_ARGUMENT",
    422: "FAILED_PRECONDITION",  # a valid request the model's current state refuses (an edit that does not apply)
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
    507: "RESOURCE_EXHAUSTED",
}


def grpc_status_of(exc: Exception) -> tuple[str, str] | None:
    """(gRPC status code name, message) of a domain error, or None for an unexpected exception. A model that exists
    already is ALREADY_EXISTS rather than a 409's ABORTED."""
    if isinstance(exc, ApiError):
        return GRPC_CODES.get(exc.status, "UNKNOWN"), exc.message
    if not any(isinstance(exc, cls) for cls, _ in STATUS):
        return None
    code = "ALREADY_EXISTS" if isinstance(exc, ModelExistsError) else GRPC_CODES.get(status_of(exc), "UNKNOWN")
    return code, _message(exc)


def error_response(status: int, message: str, headers: dict[str, str] | None = None, **fields: Any) -> Response:
    doc = {"error": message, **fields}
    try:
        body = orjson.dumps(doc, default=str)
    except TypeError:  # e.g. an integer beyond 64 bits echoed from the request: never a 500 for that
        body = json.dumps(doc, default=str).encode()
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def status_of(exc: Exception) -> int:
    return next(code for cls, code in STATUS if isinstance(exc, cls))


def _fields(exc: Exception) -> dict[str, Any]:
    if isinstance(exc, GraphError | ArrayError):
        return dict(exc.fields)
    if isinstance(exc, StorageFullError) and exc.needed is not None:
        return {"needed_bytes": exc.needed}
    if isinstance(exc, BlobCorruptError):
        return {"blob": exc.where}
    return {}


def _message(exc: Exception) -> str:
    return getattr(exc, "message", None) or str(exc)


async def _domain(request: Request, exc: Exception) -> Response:
    status = status_of(exc)
    retry = getattr(exc, "retry_after_s", None)
    if status >= 500 and status != 503:
        log.error("%s %s -> %d: %s", request.method, printable(request.url.path), status, printable(_message(exc)))
    return error_response(status, _message(exc), {"Retry-After": str(retry)} if retry else None, **_fields(exc))


def install(app: FastAPI) -> None:
    for cls in (GraphError, StoreError, OIPError, ArrayError):
        app.add_exception_handler(cls, _domain)

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> Response:
        return error_response(exc.status, exc.message, exc.headers, **exc.fields)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        parts = []
        for e in exc.errors():
            loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
            if not loc and e.get("type") == "missing":
                parts.append("the request needs a JSON body")
            else:
                parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
        return error_response(422, "; ".join(parts)[:2000] or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        return error_response(exc.status_code, str(exc.detail), dict(exc.headers or {}) or None)

    @app.exception_handler(ClientDisconnect)
    async def _gone(_: Request, exc: ClientDisconnect) -> Response:
        """The client left (or was cut off by the read deadline) before its body was complete: nobody reads this."""
        return error_response(400, "the client disconnected before its request body was complete")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, printable(request.url.path))
        return error_response(500, "internal server error")

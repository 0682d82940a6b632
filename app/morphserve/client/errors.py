"""Typed errors of the client: each keeps the server's structured fields, so callers react without parsing messages."""

from __future__ import annotations

from typing import Any

import httpx
import orjson


# -- errors -------------------------------------------------------------------------------------------------
class MorphserveError(Exception):
    """A request the server refused (or could not be sent).

    `status` is the HTTP status (0 when no answer came: the server was unreachable, or the client refused the
    arguments before sending anything), `message` the server's `error` text,
    and `fields` the other members of the server's JSON error body, e.g. `{"op": 0, "node": "fc9"}` for a
    refused edit or `{"expected": [-1, 64], "got": [1, 2]}` for a bad input shape.
    """

    def __init__(self, status: int, message: str, fields: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.fields: dict[str, Any] = dict(fields or {})

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, message={self.message!r}, fields={self.fields!r})"


class NotFound(MorphserveError):
    """404: unknown model, version, node, or a version that is no longer resident."""


class Conflict(MorphserveError):
    """409: `if_version` did not match the current version, or a model of that name already exists."""


class Unauthorized(MorphserveError):
    """401/403: the route needs an admin bearer token, or the one given is wrong."""


class InvalidRequest(MorphserveError):
    """400/413/415/422: bad input shape or dtype, a body over the size limit, or an edit that fails validation."""


class Unavailable(MorphserveError):
    """503/504: the queue is full or the request timed out on the server; retrying later may succeed."""


class Unreachable(MorphserveError):
    """No HTTP answer at all (connection refused, DNS failure, network timeout); `status` is 0."""


_BY_STATUS: dict[int, type[MorphserveError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: InvalidRequest,
    415: InvalidRequest,
    422: InvalidRequest,
    503: Unavailable,
    504: Unavailable,
}


def _raise_for(resp: httpx.Response) -> None:
    """Turn an error response into the matching typed exception, keeping the server's JSON fields."""
    if resp.status_code < 400:
        return
    fields: dict[str, Any] = {}
    message = ""
    try:
        body = orjson.loads(resp.content)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict):
        fields = {k: v for k, v in body.items() if k != "error"}
        message = str(body.get("error") or "")
    if not message:  # not our JSON shape: a proxy, or a server from another project
        message = resp.text.strip()[:200] or resp.reason_phrase or "request failed"
    cls = _BY_STATUS.get(resp.status_code, MorphserveError)
    raise cls(resp.status_code, message, fields)


def _unreachable(base_url: str, exc: httpx.TransportError) -> Unreachable:
    what = "timed out" if isinstance(exc, httpx.TimeoutException) else str(exc) or type(exc).__name__
    return Unreachable(0, f"cannot reach morphserve at {base_url}: {what}")

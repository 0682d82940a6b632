"""BodyLimitMiddleware and its one explicit exemption: a streamed route (the model upload) has its own limit and its
chunked body reaches the route as it arrives, while every other request keeps the inference body limit."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from morphserve.api.middleware import BodyLimitMiddleware, StreamedBody, media_type

LIMIT = 100
UPLOAD = StreamedBody("POST", "/v1/models", "application/zip", 1000, "--max-upload-mb")


class Client:
    """The sending side: hands out `chunks` one `receive()` at a time and counts how many it has sent."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks, self.sent = chunks, 0

    async def receive(self) -> dict[str, Any]:
        self.sent += 1
        return {"type": "http.request", "body": self.chunks[self.sent - 1], "more_body": self.sent < len(self.chunks)}


class Recorder:
    """An ASGI app that reads its whole body, noting how many chunks the client had sent when the first arrived."""

    def __init__(self) -> None:
        self.client: Client | None = None
        self.first_seen = -1
        self.body = b""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        while True:
            msg = await receive()
            if self.first_seen < 0 and self.client is not None:
                self.first_seen = self.client.sent
            self.body += msg.get("body", b"")
            if not msg.get("more_body", False):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def _call(
    mw: BodyLimitMiddleware,
    path: str,
    ctype: str,
    chunks: list[bytes],
    declared: int | None = None,
    method: str = "POST",
) -> tuple[int, bytes, int]:
    """(status, response body, how many chunks the client had sent when the app saw the first one; -1: never)."""
    app = Recorder()
    app.client = client = Client(chunks)
    mw.app = app
    headers = [(b"content-type", ctype.encode())]
    headers.append(
        (b"content-length", str(declared).encode()) if declared is not None else (b"transfer-encoding", b"chunked")
    )
    out: dict[str, Any] = {"body": b""}

    async def send(msg: dict[str, Any]) -> None:
        if msg["type"] == "http.response.start":
            out["status"] = msg["status"]
        out["body"] += msg.get("body", b"")

    scope = {"type": "http", "method": method, "path": path, "headers": headers}
    asyncio.run(mw(scope, client.receive, send))
    if out["status"] == 200:
        assert app.body == b"".join(chunks)
    return out["status"], out["body"], app.first_seen


@pytest.fixture
def mw() -> BodyLimitMiddleware:
    return BodyLimitMiddleware(Recorder(), max_bytes=LIMIT, streamed=[UPLOAD])


def test_media_type_ignores_parameters_and_case() -> None:
    assert media_type({b"content-type": b"Application/ZIP; charset=binary"}) == "application/zip"
    assert media_type({}) == ""


def test_a_chunked_upload_reaches_the_route_unbuffered_and_past_the_body_limit(mw: BodyLimitMiddleware) -> None:
    chunks = [b"x" * 60] * 10  # 600 bytes: over the inference limit, under the upload limit
    status, _, first_seen = _call(mw, "/v1/models", "application/zip", chunks)
    assert status == 200
    assert first_seen == 1  # the route got the first chunk before the client had sent the second one


def test_the_upload_has_its_own_declared_limit(mw: BodyLimitMiddleware) -> None:
    status, body, _ = _call(mw, "/v1/models", "application/zip", [b"x" * 500], declared=500)
    assert status == 200
    status, body, first_seen = _call(mw, "/v1/models", "application/zip", [b"x"], declared=1001)
    assert status == 413 and first_seen == -1  # refused before a byte was read
    assert orjson.loads(body) == {"error": "request body exceeds the limit of 1000 bytes (--max-upload-mb)"}


@pytest.mark.parametrize(
    "method,path,ctype",
    [
        ("POST", "/v1/models", "application/json"),  # the JSON create on the same path
        ("PUT", "/v1/models", "application/zip"),  # another method
        ("POST", "/v1/models/x/infer", "application/zip"),  # another path
        ("POST", "/v1/models/", "application/zip"),
    ],
)
def test_everything_else_keeps_the_body_limit(mw: BodyLimitMiddleware, method: str, path: str, ctype: str) -> None:
    status, body, _ = _call(mw, path, ctype, [b"x" * 60] * 2, method=method)
    assert status == 413 and b"(--max-body-mb)" in body
    status, body, _ = _call(mw, path, ctype, [b"x"], declared=LIMIT + 1, method=method)
    assert status == 413 and str(LIMIT).encode() in body
    status, _, first_seen = _call(mw, path, ctype, [b"x" * 40] * 2, method=method)
    assert status == 200 and first_seen == 2  # buffered: the app saw the body only once it was all there

"""Read deadlines (`--read-timeout-s`): no client holds a connection open by sending its request slowly.

uvicorn closes a connection that idles between requests (`timeout_keep_alive`), but has no deadline for the
request itself: a client that sends its headers a byte at a time, or half a body and then nothing, keeps its
socket, its buffers and (for a body) a task for as long as it likes, and two hundred of them keep two hundred.
Two deadlines close that:

- **headers**: a connection must deliver a request's complete headers within the timeout of its first byte (of the
  connection's opening, for the first request), else it gets a 408 and is closed. A uvicorn protocol class
  (`deadline_protocol`) holds the timer, since no ASGI app sees a request before its headers are complete;
- **body**: while a request's body is incomplete, each piece must arrive within the timeout of the one before, and
  the whole body by `timeout + bytes / MIN_BODY_RATE` (a client that trickles a byte at a time is not a slow
  network); else a 408 with `Connection: close`, and the app sees the client gone. An ASGI middleware
  (`ReadDeadlineMiddleware`) wraps `receive`; once the body is complete nothing is timed (a server-sent event
  stream waits on `receive` for the client to leave, for as long as it stays).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: The slowest a body may arrive on average once the first timeout has passed (bytes per second).
MIN_BODY_RATE = 64 * 1024


def _timeout_message(what: str, timeout: float) -> bytes:
    return orjson.dumps({"error": f"the client took more than {timeout:g} s to send the request {what} (408)"})


class ReadDeadlineMiddleware:
    def __init__(self, app: ASGIApp, timeout: float) -> None:
        self.app, self.timeout = app, timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.monotonic()
        received, complete, expired, responding = 0, False, False, False

        async def timed_receive() -> Message:
            nonlocal received, complete, expired
            if complete or expired:
                return await receive() if not expired else {"type": "http.disconnect"}
            deadline = started + self.timeout + received / MIN_BODY_RATE
            wait = min(self.timeout, deadline - time.monotonic())
            try:
                message = await asyncio.wait_for(receive(), max(wait, 0.0))
            except TimeoutError:
                expired = True
                if not responding:
                    await _send_408(send, _timeout_message("body", self.timeout))
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal responding
            if expired and message["type"].startswith("http.response"):
                return  # the 408 went out: what the app answers to a vanished body goes nowhere
            responding = True
            await send(message)

        try:
            await self.app(scope, timed_receive, guarded_send)
        except Exception:
            if not expired:
                raise


async def _send_408(send: Send, body: bytes) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 408, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def deadline_protocol(base: type[Any], timeout: float) -> type[Any]:
    """`base` (uvicorn's httptools or h11 protocol class) with a deadline on each request's headers."""

    class HeaderDeadline(base):  # type: ignore[misc]  # a subclass of a class given at run time
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._has_headers():
                self._disarm()
            else:  # the first bytes of a request (on a kept-alive connection too): its headers must follow in time
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _has_headers(self) -> bool:
            cycle = getattr(self, "cycle", None)
            return cycle is not None and not cycle.response_complete

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = asyncio.get_running_loop().call_later(timeout, self._expired)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _expired(self) -> None:
            self._header_timer = None
            transport = self.transport
            if self._has_headers() or transport.is_closing():
                return
            body = _timeout_message("headers", timeout)
            transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(body), body)
            )
            transport.close()

    HeaderDeadline.__name__ = HeaderDeadline.__qualname__ = f"HeaderDeadline{base.__name__}"
    return HeaderDeadline


def protocol_class(timeout: float) -> type[Any]:
    """uvicorn's own choice of HTTP protocol (httptools where installed, else h11), with the header deadline."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        return deadline_protocol(HttpToolsProtocol, timeout)
    except ImportError:  # pragma: no cover - uvicorn[standard] brings httptools
        from uvicorn.protocols.http.h11_impl import H11Protocol

        return deadline_protocol(H11Protocol, timeout)

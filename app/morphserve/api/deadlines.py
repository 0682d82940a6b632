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
  (`ReadDeadlineMiddleware`) arms a timer while the app waits for a piece of a request's body (a request without
  one costs nothing); once the body is complete nothing is timed (a server-sent event stream waits on `receive`
  for the client to leave, for as long as it stays).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: The slowest a body may arrive on average once the first timeout has passed (bytes per second).
MIN_BODY_RATE = 64 * 1024


def _timeout_message(what: str, timeout: float) -> bytes:
    return orjson.dumps({"error": f"the client took more than {timeout:g} s to send the request {what} (408)"})


def _has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if (name == b"content-length" and value.strip() not in (b"0", b"")) or name == b"transfer-encoding":
            return True
    return False


class _BodyDeadline:
    """One request's body deadline. Only the time the app spends waiting for the client counts (not the time it
    spends on what arrived, such as writing an upload to disk): a timer is armed while a `receive` waits, for the
    shorter of the idle timeout and what is left of `timeout + received / MIN_BODY_RATE` of waiting in all. When it
    fires the 408 goes out at once; uvicorn then ends the pending `receive` (a complete response wakes it, and
    `Connection: close` ends the connection), so nothing is cancelled."""

    def __init__(self, send: Send, timeout: float) -> None:
        self.send, self.timeout = send, timeout
        self.loop = asyncio.get_running_loop()
        self.waited = 0.0
        self.received = 0
        self.complete = self.expired = self.responding = False

    def _fire(self) -> None:
        self.expired = True
        if not self.responding:
            self.loop.create_task(_send_408(self.send, _timeout_message("body", self.timeout)))

    async def receive(self, receive: Receive) -> Message:
        if self.expired:
            return {"type": "http.disconnect"}
        if self.complete:  # nothing to time: a stream waiting for its client to leave
            return await receive()
        start = self.loop.time()
        left = min(self.timeout, self.timeout + self.received / MIN_BODY_RATE - self.waited)
        timer = self.loop.call_at(start + max(left, 0.0), self._fire)
        try:
            message = await receive()
        finally:
            timer.cancel()
            self.waited += self.loop.time() - start
        if self.expired:
            return {"type": "http.disconnect"}
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.complete = not message.get("more_body", False)
        return message


class ReadDeadlineMiddleware:
    """The body deadline of every request that has a body (a timer per wait for it; none for the others)."""

    def __init__(self, app: ASGIApp, timeout: float) -> None:
        self.app, self.timeout = app, timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            return await self.app(scope, receive, send)
        deadline = _BodyDeadline(send, self.timeout)

        async def timed_receive() -> Message:
            return await deadline.receive(receive)

        async def guarded_send(message: Message) -> None:
            if deadline.expired:
                return  # the 408 went out: what the app answers to a vanished body goes nowhere
            deadline.responding = True
            await send(message)

        try:
            await self.app(scope, timed_receive, guarded_send)
        except Exception:
            if not deadline.expired:
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

"""A small server-sent events reader over httpx streaming, for tests against a real server.

It parses the wire format itself (fields, comments, blank-line dispatch), so the tests see exactly what a
browser's EventSource would. A background thread reads; `next()` waits for the next item with a failure bound.
Streams ask for a heartbeat every 0.2 s (the server's floor), so that `close()` ends the reader at the next line
and `until_heartbeat()` knows soon that nothing else came.
"""

from __future__ import annotations

import json
import queue
import threading
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Item:
    """An event (`event`, `id`, `data`, `retry`) or a comment line (`comment`)."""

    event: str | None = None
    id: str | None = None
    data: str = ""
    retry: int | None = None
    comment: str | None = None
    fields: list[str] = field(default_factory=list)

    @property
    def is_event(self) -> bool:
        """What EventSource would dispatch: a block with data (a bare `retry:` or a comment dispatches nothing)."""
        return self.comment is None and bool(self.data or self.event)

    def json(self) -> Any:
        return json.loads(self.data)


class SSEStream:
    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        # Heartbeats every 0.2 s (unless the test asks otherwise) also let close() end the reader within one.
        if "heartbeat=" not in url:
            url += ("&" if "?" in url else "?") + "heartbeat=0.2"
        self._stop = threading.Event()
        self.items: queue.Queue[Item | BaseException] = queue.Queue()
        self.response: httpx.Response | None = None
        self._opened = threading.Event()
        self._client = httpx.Client(timeout=httpx.Timeout(10, read=60))
        self._thread = threading.Thread(target=self._read, args=(url, headers or {}), daemon=True)
        self._thread.start()
        if not self._opened.wait(30):
            raise TimeoutError(f"no response from {url}")

    def _read(self, url: str, headers: dict[str, str]) -> None:
        try:
            with self._client.stream("GET", url, headers=headers) as resp:
                self.response = resp
                self._opened.set()
                if resp.status_code != 200:
                    resp.read()
                    return
                cur = Item()
                for line in resp.iter_lines():
                    if self._stop.is_set():
                        return
                    if line == "":
                        if cur.fields:
                            self.items.put(cur)
                        cur = Item()
                        continue
                    if line.startswith(":"):
                        self.items.put(Item(comment=line[1:].strip()))
                        continue
                    name, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    cur.fields.append(name)
                    if name == "event":
                        cur.event = value
                    elif name == "id":
                        cur.id = value
                    elif name == "data":
                        cur.data = f"{cur.data}\n{value}" if cur.data else value
                    elif name == "retry":
                        cur.retry = int(value)
                self.items.put(EOFError("stream ended"))
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            self._opened.set()
            self.items.put(e)

    def next(self, timeout: float = 30.0) -> Item:
        """The next event or comment; raises EOFError when the server ended the stream."""
        try:
            item = self.items.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"nothing on the stream within {timeout}s") from None
        if isinstance(item, BaseException):
            raise item
        return item

    def next_event(self, timeout: float = 30.0) -> Item:
        """The next event, skipping comments (heartbeats) and bare `retry:` blocks."""
        while True:
            item = self.next(timeout)
            if item.is_event:
                return item

    def until_end(self, timeout: float = 30.0) -> list[Item]:
        """Every event up to the end of the stream (the server ended it: a model's stream ends with the model). A
        stream is ordered, so this is all that was sent, known without waiting for a quiet spell."""
        got = []
        while True:
            try:
                item = self.next(timeout)
            except EOFError:
                return got
            if item.is_event:
                got.append(item)

    def until_heartbeat(self, timeout: float = 30.0) -> list[Item]:
        """The events that arrive before the next heartbeat comment."""
        got = []
        while True:
            item = self.next(timeout)
            if item.comment is not None and item.comment.startswith("ping"):
                return got
            if item.is_event:
                got.append(item)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._client.close()

    def __enter__(self) -> SSEStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

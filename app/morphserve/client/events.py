"""Following the server's event streams from Python: what `Client.events()` / `AsyncClient.events()` share.

`GET /v1/models/{m}/events` sends one `version` event per committed version, `GET /v1/events` the models created
and deleted (docs/API.md). `Follower` is the sans-I/O part: the request to make (resuming with `Last-Event-ID`
after a dropped connection, so that no committed version is missed), and what each received event means. The
two clients only run its loop, with blocking or asyncio I/O; the wire format is parsed by `httpx-sse`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import orjson
from httpx_sse import ServerSentEvent

#: Seconds a stream may stay silent before the connection counts as dead (the server sends a heartbeat every 15).
READ_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Event:
    """One event: `kind` is `version` (`data["staged"]` is true for a staged one), `promoted` (a committed version
    became current), `rollout` (`data["event"]`: started, running, promoted or aborted, with `reason`), `job` (a fit
    job's `data["event"]`: started, progress, succeeded, failed or cancelled, with `job`, `step`, `steps`, `loss` and
    the staged `version`), `model_created`, `model_deleted` or `reset` (the server could not resume from the last
    event seen: reload whatever you derived from the stream); `data` is its JSON."""

    kind: str
    id: str | None
    data: dict[str, Any]

    @property
    def model(self) -> str | None:
        return self.data.get("model")

    @property
    def version(self) -> int | None:
        """The version number, for `version`, `promoted` and `model_created` events."""
        return self.data.get("version")


@dataclass
class Follower:
    model: str | None
    since: int | None = None
    reconnect: bool = True
    retry_s: float = 1.0
    last_id: str | None = None
    done: bool = field(default=False, init=False)

    def request(self) -> tuple[str, dict[str, Any], dict[str, str]]:
        """(path, query params, headers) of the next connection."""
        path = "/v1/events" if self.model is None else f"/v1/models/{quote(self.model, safe='')}/events"
        params = {"since": self.since} if self.since is not None and self.model is not None else {}
        headers = {"Accept": "text/event-stream"}
        if self.last_id is not None:
            headers["Last-Event-ID"] = self.last_id
        return path, params, headers

    def feed(self, sse: ServerSentEvent) -> Event | None:
        """The event a received block carries, if any (heartbeats and bare `retry:` blocks carry none)."""
        if sse.retry is not None:
            self.retry_s = sse.retry / 1000
        if not sse.data:
            return None
        if sse.id:
            self.last_id = sse.id
        event = Event(sse.event or "message", sse.id or None, orjson.loads(sse.data))
        if event.kind == "model_deleted" and self.model is not None:
            self.done = True  # the server ends a model's stream when the model goes
        return event

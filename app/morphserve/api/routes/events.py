"""Server-sent events: a model's committed versions, and models created or deleted.

Reading needs no token, like the graph routes. The streams themselves (replay after `Last-Event-ID`, live events,
resync after a slow client lost some) are `morphserve.serving.events`; this module only speaks SSE: `text/event-stream`,
unbuffered (`X-Accel-Buffering: no`, `Cache-Control: no-store`), a heartbeat comment every `heartbeat` seconds
so that proxies keep an idle stream open, and a `retry:` hint so that a browser reconnects within a second.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Query
from sse_starlette import EventSourceResponse, ServerSentEvent

from morphserve.api.deps import RegistryDep
from morphserve.api.errors import ERROR_RESPONSES
from morphserve.api.fastjson import JSONRoute
from morphserve.api.schemas import MAX_VERSION
from morphserve.serving.events import Event, open_global_stream, open_model_stream

router = APIRouter(tags=["events"], responses=ERROR_RESPONSES, route_class=JSONRoute)

RETRY_MS = 1000
#: A client's stream is dropped when one write stalls this long (a dead peer behind a proxy that keeps the TCP open).
SEND_TIMEOUT_S = 30.0
#: The floor is low enough for a client that wants to know within a fraction of a second that nothing else came (the
#: tests, a dashboard); a comment line every 0.2 s per stream costs the server next to nothing.
Heartbeat = Annotated[float, Query(ge=0.2, le=300, description="seconds between keep-alive comments")]
LastEventId = Annotated[str | None, Header(description="resume after this event (browsers send it on reconnect)")]
_SSE_DOC: dict[int | str, dict[str, Any]] = {200: {"content": {"text/event-stream": {}}, "description": "SSE"}}


async def _sse(events: AsyncIterator[Event]) -> AsyncIterator[ServerSentEvent]:
    yield ServerSentEvent(comment="morphserve events", retry=RETRY_MS)
    async for e in events:
        yield ServerSentEvent(orjson.dumps(e.data).decode(), event=e.kind, id=e.id)


def _response(events: AsyncIterator[Event], heartbeat: float) -> EventSourceResponse:
    return EventSourceResponse(_sse(events), ping=heartbeat, send_timeout=SEND_TIMEOUT_S)


@router.get("/v1/models/{model}/events", response_class=EventSourceResponse, responses=_SSE_DOC)
async def model_events(
    model: str,
    registry: RegistryDep,
    since: Annotated[int | None, Query(ge=0, le=MAX_VERSION, description="replay the versions after this one")] = None,
    heartbeat: Heartbeat = 15.0,
    last_event_id: LastEventId = None,
) -> EventSourceResponse:
    """One `version` event per committed version (`id` = the version number; data: model, version, parent,
    ops, created_at); `reset` when the client's position cannot be resumed (reload); `model_deleted` last."""
    if last_event_id is not None:  # a reconnect: the browser's position wins over the original `since`
        text = last_event_id.strip()
        # An id this stream never gave (not a version number) cannot be resumed from: ask for a reload.
        since = int(text) if text.isdigit() and len(text) <= 18 else MAX_VERSION
    stream = open_model_stream(registry, registry.events, model, since=since)  # 404 before anything is sent
    return _response(stream, heartbeat)


@router.get("/v1/events", response_class=EventSourceResponse, responses=_SSE_DOC)
async def server_events(
    registry: RegistryDep, heartbeat: Heartbeat = 15.0, last_event_id: LastEventId = None
) -> EventSourceResponse:
    """`model_created` (model, version), `model_deleted` (model) and every model's `version` events, with ids
    `<epoch>-<n>`; `reset` when a reconnecting client missed more than the server kept (reload the list)."""
    return _response(open_global_stream(registry.events, last_id=last_event_id), heartbeat)

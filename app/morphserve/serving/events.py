"""The event hub: committed versions and model created/deleted events, fanned out to asyncio subscribers.

Edits commit in worker threads (the HTTP layer's thread pool); subscribers are SSE streams on the event loop.
`publish` is therefore callable from any thread and never waits: it hands each event to each subscriber's loop
with `call_soon_threadsafe`, where it goes into a bounded per-subscriber queue. A subscriber that does not keep
up loses events rather than slowing anyone down: its queue is emptied and it receives `LOST` once, after which
it must resync (drop-and-resync). A commit, the device worker and the other subscribers never wait for it.

Streams and resumption (what a reconnecting client with `Last-Event-ID` gets):

- **A model's stream** (`stream=<model>`): one `version` event per committed, live version; its event id is the
  version number. The journal is the truth, so resuming needs no buffer here: `version_stream` replays the
  versions after the client's last id from the model's history, up to the version this server has live (a
  replica streams what it has applied), then follows live events, skipping any it already sent. A last id
  beyond the live version (the model was deleted and re-created, or this replica is behind) gets a `reset`
  event: reload. `model_deleted` ends the stream.
- **The global stream** (`stream=GLOBAL`): `model_created`, `model_deleted` and every model's `version` events,
  with ids `<epoch>-<seq>` (the epoch changes with each server start). The last `replay` events are kept;
  a client whose last id is older, malformed or from another epoch gets a `reset` event instead.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from morphserve.graph.errors import NotFoundError
from morphserve.store.records import StoreUnavailableError

GLOBAL: Final = "*"
"""The stream of model created/deleted events (and all models' versions)."""


@dataclass(frozen=True)
class Event:
    """One event as it goes out: SSE `event:` type, `id:` (None: none sent) and the JSON `data:`."""

    kind: str
    data: dict[str, Any]
    id: str | None = None
    seq: int = 0  # position in the global stream (0 for events not on it)


class Committed(Protocol):
    """What a version event says: a ModelVersion and a journal VersionRecord both have these."""

    @property
    def model(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def parent(self) -> int | None: ...
    @property
    def ops(self) -> Sequence[dict[str, Any]]: ...
    @property
    def created_at(self) -> float: ...


class _Lost:
    """The marker a subscriber gets once after its queue overflowed: events were dropped, resync."""

    def __repr__(self) -> str:
        return "LOST"


LOST: Final = _Lost()


@dataclass(eq=False)
class Subscription:
    """One subscriber's bounded queue on its event loop. Iterate with `get()`; `close()` when done."""

    hub: EventHub
    stream: str
    loop: asyncio.AbstractEventLoop
    maxsize: int
    queue: asyncio.Queue[Event | _Lost] = field(init=False)
    lost: int = 0  # how many times events were dropped
    closed: bool = False

    def __post_init__(self) -> None:
        self.queue = asyncio.Queue(self.maxsize + 1)  # +1: room for the LOST marker

    def offer(self, event: Event) -> None:
        """Runs on the subscriber's loop: enqueue, or drop everything queued and mark the loss."""
        if self.closed:
            return
        if self.queue.qsize() < self.maxsize:
            self.queue.put_nowait(event)
            return
        while not self.queue.empty():
            self.queue.get_nowait()
        self.lost += 1
        self.queue.put_nowait(LOST)

    async def get(self, timeout: float | None = None) -> Event | _Lost | None:
        """The next event, `LOST` after an overflow, or None when `timeout` passed with nothing."""
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None

    def close(self) -> None:
        self.closed = True
        self.hub.unsubscribe(self)


class EventHub:
    """Fan-out of events to any number of subscribers; `publish` is thread-safe and never blocks."""

    def __init__(self, queue_size: int = 256, replay: int = 1024) -> None:
        self.queue_size = queue_size
        self.epoch = f"{int(time.time() * 1000):x}"
        self._lock = threading.Lock()
        self._subs: dict[str, set[Subscription]] = collections.defaultdict(set)
        self._seq = itertools.count(1)
        self._recent: collections.deque[Event] = collections.deque(maxlen=replay)
        self._last = 0  # the last seq given out

    # -- subscribers (on an event loop) --------------------------------------------------------------------
    def subscribe(self, stream: str) -> Subscription:
        """Start receiving `stream`'s events (call on the loop that will read them)."""
        sub = Subscription(self, stream, asyncio.get_running_loop(), self.queue_size)
        with self._lock:
            self._subs[stream].add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            subs = self._subs.get(sub.stream)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[sub.stream]

    def subscribers(self, stream: str) -> int:
        with self._lock:
            return len(self._subs.get(stream, ()))

    # -- publishers (any thread) ---------------------------------------------------------------------------
    def publish(self, stream: str, event: Event) -> None:
        """Hand `event` to every subscriber of `stream`. Never blocks. Events published one after the other
        arrive in that order: hand-overs happen under the lock, and each loop runs its callbacks in order."""
        with self._lock:
            self._hand_over(stream, event)

    def _hand_over(self, stream: str, event: Event) -> None:
        subs = self._subs.get(stream)
        if not subs:
            return
        dead = []
        for sub in subs:
            try:
                sub.loop.call_soon_threadsafe(sub.offer, event)
            except RuntimeError:  # its loop is closed: the subscriber is gone
                dead.append(sub)
        for sub in dead:
            subs.discard(sub)

    def _publish_global(self, kind: str, data: dict[str, Any]) -> None:
        with self._lock:  # the seq, the replay buffer and the hand-over in one order
            self._last = next(self._seq)
            event = Event(kind, data, f"{self.epoch}-{self._last}", self._last)
            self._recent.append(event)
            self._hand_over(GLOBAL, event)

    # The three hooks the registry (and a replica follower) calls.
    def version_committed(self, v: Committed, staged: bool = False) -> None:
        """Version `v` (a ModelVersion or a journal record) is committed and live on this server, or committed and
        `staged` (it serves only requests that name it)."""
        data = version_data(v.model, v.version, v.parent, v.ops, v.created_at)
        if staged:
            data["staged"] = True
        self.publish(v.model, Event("version", data, str(v.version)))
        self._publish_global("version", data)

    def model_created(self, model: str, version: int) -> None:
        """`model` is now served, at `version`."""
        self._publish_global("model_created", {"model": model, "version": version})

    def promoted(self, model: str, version: int) -> None:
        """A committed version became current without a new version being made (a staged one was promoted)."""
        data = {"model": model, "version": version}
        self.publish(model, Event("promoted", data))
        self._publish_global("promoted", data)

    def model_deleted(self, model: str) -> None:
        """`model` is no longer served: its streams end."""
        self.publish(model, Event("model_deleted", {"model": model}))
        self._publish_global("model_deleted", {"model": model})

    # -- resumption of the global stream -------------------------------------------------------------------
    def global_since(self, last_id: str) -> list[Event] | None:
        """The global events after `last_id`, or None when they cannot be told: another epoch (the server
        restarted), a malformed or future id, or events after it that fell out of the replay buffer."""
        epoch, _, seq_text = last_id.partition("-")
        if epoch != self.epoch or not seq_text.isdigit() or len(seq_text) > 18:
            return None
        seq = int(seq_text)
        with self._lock:
            last = self._last
            recent = list(self._recent)
        oldest = recent[0].seq if recent else last + 1
        if seq > last or seq < oldest - 1:
            return None
        return [e for e in recent if e.seq > seq]


def version_data(
    model: str, version: int, parent: int | None, ops: Sequence[dict[str, Any]], created_at: float
) -> dict[str, Any]:
    """The JSON of a `version` event (live and replayed alike)."""
    return {"model": model, "version": version, "parent": parent, "ops": list(ops), "created_at": created_at}


# -- the streams as event sequences (the HTTP layer only formats them) ------------------------------------------
class Source(Protocol):
    """What the streams read besides the hub: the registry (or a replica follower's view of it)."""

    def current(self, name: str) -> Any: ...  # the live ModelVersion; raises NotFoundError when unknown

    async def history(self, name: str) -> Sequence[Any]: ...  # records with .version .parent .ops .created_at


#: How long a model's stream retries a journal read it needs (a replay, a gap) before it ends (the client resumes).
HISTORY_RETRY_S = 30.0


class StreamEnded(Exception):
    """A model's stream cannot go on (the journal is out of reach): it ends cleanly, and the client resumes."""


def open_model_stream(source: Source, hub: EventHub, model: str, *, since: int | None) -> AsyncIterator[Event]:
    """A model's events for one client (call on the event loop). Raises NotFoundError for an unknown model
    before anything is streamed. Subscribes first and reads the history second, so nothing falls in between."""
    source.current(model)
    sub = hub.subscribe(model)
    return _model_stream(source, sub, since=since)


def _current(source: Source, model: str) -> int | None:
    try:
        return int(source.current(model).version)
    except NotFoundError:
        return None


async def _model_stream(source: Source, sub: Subscription, *, since: int | None) -> AsyncIterator[Event]:
    model = sub.stream
    last = since or 0  # the last version sent (or known to the client)
    replay_upto: int | None = None if since is None else _current(source, model)  # history to send first

    async def missed(after: int, upto: int) -> list[Event] | None:
        """The committed versions in (after, upto]; None when the model is gone.

        The journal may be out of reach for a moment just when a replica catches up (its pool's connections died
        with a partition that just healed): the read is retried with backoff, for up to HISTORY_RETRY_S, rather
        than breaking the stream mid-response; the heartbeats go on meanwhile. Beyond that, StreamEnded ends the
        stream cleanly and the client resumes with its Last-Event-ID, as EventSource does."""
        delay, deadline = 0.05, time.monotonic() + HISTORY_RETRY_S
        while True:
            try:
                records = await source.history(model)
                break
            except NotFoundError:
                return None
            except StoreUnavailableError:
                if time.monotonic() + delay > deadline:
                    raise StreamEnded from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
        return [
            Event("version", version_data(model, r.version, r.parent, r.ops, r.created_at), str(r.version))
            for r in sorted(records, key=lambda r: r.version)
            if after < r.version <= upto
        ]

    try:
        if since is not None and replay_upto is not None and since > replay_upto:
            yield Event("reset", {"model": model, "version": replay_upto})
            last, replay_upto = replay_upto, None
        while True:
            if replay_upto is not None:
                backlog = await missed(last, replay_upto)
                replay_upto = None
                if backlog is None:
                    yield Event("model_deleted", {"model": model})
                    return
                for e in backlog:
                    last = int(e.data["version"])
                    yield e
                continue
            item = await sub.get()
            if item is LOST:
                replay_upto = _current(source, model)
                if replay_upto is None:
                    yield Event("model_deleted", {"model": model})
                    return
            elif isinstance(item, Event):
                if item.kind == "version":
                    number = int(item.data["version"])
                    if number <= last:
                        continue  # already sent by a replay
                    if number > last + 1 and last > 0:
                        # a gap: two edits' events published out of order, or a replica that jumped ahead; the
                        # journal has every version up to this one, so send them in order from there
                        backlog = await missed(last, number)
                        if backlog:
                            for e in backlog:
                                last = int(e.data["version"])
                                yield e
                            continue
                    last = number
                yield item
                if item.kind == "model_deleted":
                    return
    except StreamEnded:
        return
    finally:
        sub.close()


def open_global_stream(hub: EventHub, *, last_id: str | None) -> AsyncIterator[Event]:
    """Model created/deleted (and every version) events for one client (call on the event loop)."""
    return _global_stream(hub, hub.subscribe(GLOBAL), last_id=last_id)


async def _global_stream(hub: EventHub, sub: Subscription, *, last_id: str | None) -> AsyncIterator[Event]:
    """Replays after `last_id` when the hub still has those events, else `reset` (the client reloads its
    model list); after a loss, `reset` too."""
    last = 0
    try:
        if last_id is not None:
            missed = hub.global_since(last_id)
            if missed is None:
                yield Event("reset", {})
            else:
                for e in missed:
                    last = e.seq
                    yield e
        while True:
            item = await sub.get()
            if item is LOST:
                yield Event("reset", {})
            elif isinstance(item, Event) and item.seq > last:
                last = item.seq
                yield item
    finally:
        sub.close()

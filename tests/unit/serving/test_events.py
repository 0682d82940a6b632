"""The event hub: fan-out to many asyncio subscribers, publish from any thread without ever blocking, a slow
subscriber dropped-and-resynced rather than slowing anyone, and the two streams' resumption rules."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

import pytest

from morphserve.graph.errors import NotFoundError
from morphserve.serving import events
from morphserve.serving.events import GLOBAL, LOST, Event, EventHub, open_global_stream, open_model_stream
from morphserve.store.records import JournalUnreachableError

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class V:
    """A committed version as the hub's hooks see it (ModelVersion and VersionRecord both look like this)."""

    model: str
    version: int
    parent: int | None = None
    ops: list[dict[str, Any]] = field(default_factory=list)
    created_at: float = 0.0
    spec: dict[str, Any] = field(default_factory=dict)


class FakeRegistry:
    """The `Source` of the streams: the live version and the journal's history of one model."""

    def __init__(self, model: str = "m", versions: int = 1) -> None:
        self.model = model
        self.records = [V(model, n, n - 1 or None) for n in range(1, versions + 1)]
        self.history_calls = 0
        self.unreachable = 0  # the next history reads that find the journal out of reach

    def current(self, name: str) -> V:
        if name != self.model:
            raise NotFoundError(f"model {name!r} does not exist")
        return self.records[-1]

    async def history(self, name: str) -> list[V]:
        self.history_calls += 1
        if name != self.model:
            raise NotFoundError(f"model {name!r} does not exist")
        if self.unreachable:
            self.unreachable -= 1
            raise JournalUnreachableError("the journal is unreachable")
        return list(self.records)

    def commit(self, hub: EventHub) -> V:
        v = V(self.model, self.records[-1].version + 1, self.records[-1].version, [{"op": "remove", "node": "x"}])
        self.records.append(v)
        hub.version_committed(v)
        return v


async def _take(stream: Any, n: int, timeout: float = 5.0) -> list[Event]:
    return [await asyncio.wait_for(anext(stream), timeout) for _ in range(n)]


async def test_every_subscriber_gets_every_event_in_order() -> None:
    hub = EventHub()
    subs = [hub.subscribe("m") for _ in range(50)]
    for n in range(1, 21):
        hub.version_committed(V("m", n, n - 1 or None))
    for sub in subs:
        got = [await sub.get(5) for _ in range(20)]
        assert [e.data["version"] for e in got] == list(range(1, 21))  # type: ignore[union-attr]
        assert [e.id for e in got] == [str(n) for n in range(1, 21)]  # type: ignore[union-attr]
        assert await sub.get(0.01) is None  # exactly those, nothing more
    for sub in subs:
        sub.close()
    assert hub.subscribers("m") == 0


async def test_streams_are_separate() -> None:
    hub = EventHub()
    a, b, g = hub.subscribe("a"), hub.subscribe("b"), hub.subscribe(GLOBAL)
    hub.version_committed(V("a", 2, 1))
    hub.model_created("c", 1)
    assert (await a.get(5)).data["model"] == "a"  # type: ignore[union-attr]
    assert await b.get(0.05) is None
    kinds = [(await g.get(5)).kind for _ in range(2)]  # type: ignore[union-attr]
    assert kinds == ["version", "model_created"]


async def test_publish_from_many_threads_is_safe_and_ordered_per_thread() -> None:
    hub = EventHub(queue_size=10_000)
    sub = hub.subscribe(GLOBAL)
    per_thread = 300

    def publish(t: int) -> None:
        for i in range(per_thread):
            hub.model_created(f"t{t}-{i}", 1)

    threads = [threading.Thread(target=publish, args=(t,)) for t in range(8)]
    await asyncio.to_thread(lambda: [th.start() for th in threads] and [th.join() for th in threads])
    got = [await sub.get(5) for _ in range(8 * per_thread)]
    assert await sub.get(0.05) is None
    seqs = [e.seq for e in got]  # type: ignore[union-attr]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) == 8 * per_thread
    for t in range(8):  # each thread's events arrive in the order it published them
        mine = [e.data["model"] for e in got if e.data["model"].startswith(f"t{t}-")]  # type: ignore[union-attr]
        assert mine == [f"t{t}-{i}" for i in range(per_thread)]


async def test_a_slow_subscriber_never_blocks_publishers_and_loses_then_resyncs() -> None:
    hub = EventHub(queue_size=8)
    slow = hub.subscribe("m")  # reads nothing until the end
    fast = hub.subscribe("m")
    received: list[int] = []
    caught_up = threading.Condition()

    async def reader() -> None:
        while len(received) < 1000:
            e = await fast.get(5)
            assert isinstance(e, Event), e  # the fast reader keeps up, so it never loses anything
            with caught_up:
                received.append(e.data["version"])
                caught_up.notify_all()

    task = asyncio.create_task(reader())

    def publisher() -> None:  # a thread, as edits are; it waits for the fast reader only, never for the slow one
        for n in range(1, 1001):
            hub.version_committed(V("m", n, n - 1 or None))
            if n % 4 == 0:
                with caught_up:
                    assert caught_up.wait_for(lambda n=n: len(received) >= n, 10)

    thread = threading.Thread(target=publisher)
    thread.start()
    await asyncio.to_thread(thread.join, 60)
    assert not thread.is_alive(), "a publisher blocked on a subscriber that does not read"
    await asyncio.wait_for(task, 10)
    assert received == list(range(1, 1001))
    # The slow one got LOST (its queue was full), then what came after its last drop: never more than fits.
    items = []
    while (e := await slow.get(0.05)) is not None:
        items.append(e)
    assert items[0] is LOST and slow.lost >= 100
    assert 1 <= len(items) <= 9
    assert [e.data["version"] for e in items[1:]] == list(range(1001 - len(items) + 1, 1001))  # type: ignore[union-attr]


def test_a_subscriber_whose_loop_has_closed_is_dropped() -> None:
    hub = EventHub()
    loop = asyncio.new_event_loop()

    async def subscribe() -> None:
        hub.subscribe("m")

    loop.run_until_complete(subscribe())
    loop.close()
    assert hub.subscribers("m") == 1
    hub.version_committed(V("m", 2, 1))  # must not raise
    assert hub.subscribers("m") == 0


# -- the model stream -----------------------------------------------------------------------------------------
async def test_model_stream_follows_live_versions() -> None:
    hub, reg = EventHub(), FakeRegistry(versions=3)
    stream = open_model_stream(reg, hub, "m", since=None)
    first = asyncio.ensure_future(_take(stream, 2))
    await asyncio.sleep(0.01)
    reg.commit(hub)
    reg.commit(hub)
    got = await first
    assert [(e.kind, e.id, e.data["version"], e.data["parent"]) for e in got] == [
        ("version", "4", 4, 3),
        ("version", "5", 5, 4),
    ]
    assert reg.history_calls == 0  # no replay asked for, none read
    await stream.aclose()
    assert hub.subscribers("m") == 0


async def test_model_stream_replays_after_since_then_goes_live_without_duplicates() -> None:
    hub, reg = EventHub(), FakeRegistry(versions=5)
    stream = open_model_stream(reg, hub, "m", since=2)
    got = await _take(stream, 3)
    assert [e.data["version"] for e in got] == [3, 4, 5]
    reg.commit(hub)
    assert [e.data["version"] for e in await _take(stream, 1)] == [6]
    await stream.aclose()


async def test_model_stream_resyncs_from_the_history_after_a_loss() -> None:
    hub, reg = EventHub(queue_size=2), FakeRegistry(versions=1)
    stream = open_model_stream(reg, hub, "m", since=None)
    started = asyncio.ensure_future(_take(stream, 1))
    await asyncio.sleep(0.01)
    reg.commit(hub)  # v2 read by the stream
    assert [e.data["version"] for e in await started] == [2]
    for _ in range(6):  # v3..v8 while the client reads nothing: its queue overflows
        reg.commit(hub)
    await asyncio.sleep(0.05)
    got = await _take(stream, 6)
    assert [e.data["version"] for e in got] == [3, 4, 5, 6, 7, 8]  # nothing lost, nothing twice
    assert reg.history_calls == 1
    await stream.aclose()


async def test_model_stream_sends_versions_in_order_when_they_are_published_out_of_order() -> None:
    """Two edits finish on different threads: the hub may get v4 before v3. The stream fills the gap from the
    history (where v3 already is) and drops the late v3, so the client still sees 3, 4, once each, in order."""
    hub, reg = EventHub(), FakeRegistry(versions=2)
    stream = open_model_stream(reg, hub, "m", since=2)
    pending = asyncio.ensure_future(_take(stream, 2))
    await asyncio.sleep(0.01)
    v3 = V("m", 3, 2)
    v4 = V("m", 4, 3)
    reg.records += [v3, v4]
    hub.version_committed(v4)
    hub.version_committed(v3)
    assert [e.data["version"] for e in await pending] == [3, 4]
    reg.commit(hub)
    assert [e.data["version"] for e in await _take(stream, 1)] == [5]  # and v3 did not come again
    await stream.aclose()


async def test_model_stream_retries_a_history_read_the_journal_could_not_answer() -> None:
    """A replica that catches up after a partition fills its gap from the journal, whose connections may have just
    died: the stream retries the read (it broke off mid-response before: an incomplete chunked read)."""
    hub, reg = EventHub(), FakeRegistry(versions=2)
    stream = open_model_stream(reg, hub, "m", since=2)
    pending = asyncio.ensure_future(_take(stream, 3))
    await asyncio.sleep(0.01)
    reg.records += [V("m", 3, 2), V("m", 4, 3)]
    reg.unreachable = 2
    reg.commit(hub)  # v5, with v3 and v4 only in the journal
    assert [e.data["version"] for e in await pending] == [3, 4, 5]
    assert reg.history_calls == 1 + 3  # the replay at the start, then the gap: two refused reads and one answered
    await stream.aclose()


async def test_model_stream_ends_cleanly_when_the_journal_stays_out_of_reach(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "HISTORY_RETRY_S", 0.2)
    hub, reg = EventHub(), FakeRegistry(versions=2)
    stream = open_model_stream(reg, hub, "m", since=1)
    reg.unreachable = 10**6
    with pytest.raises(StopAsyncIteration):  # the client resumes with its Last-Event-ID
        await asyncio.wait_for(anext(stream), 5)
    assert reg.history_calls > 1 and hub.subscribers("m") == 0


async def test_model_stream_since_beyond_the_live_version_resets() -> None:
    hub, reg = EventHub(), FakeRegistry(versions=2)
    stream = open_model_stream(reg, hub, "m", since=9)
    (e,) = await _take(stream, 1)
    assert (e.kind, e.data) == ("reset", {"model": "m", "version": 2})
    reg.commit(hub)
    assert [e.data["version"] for e in await _take(stream, 1)] == [3]
    await stream.aclose()


async def test_model_stream_of_an_unknown_model_refuses_before_subscribing() -> None:
    hub = EventHub()
    with pytest.raises(NotFoundError):
        open_model_stream(FakeRegistry(), hub, "nope", since=None)
    assert hub.subscribers("nope") == 0


async def test_model_stream_ends_when_the_model_is_deleted() -> None:
    hub, reg = EventHub(), FakeRegistry()
    stream = open_model_stream(reg, hub, "m", since=None)
    pending = asyncio.ensure_future(_take(stream, 1))
    await asyncio.sleep(0.01)
    hub.model_deleted("m")
    assert [(e.kind, e.data) for e in await pending] == [("model_deleted", {"model": "m"})]
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    assert hub.subscribers("m") == 0


# -- the global stream ----------------------------------------------------------------------------------------
async def test_global_stream_resumes_after_a_known_id_and_resets_otherwise() -> None:
    hub = EventHub(replay=4)
    for name in ("a", "b", "c"):
        hub.model_created(name, 1)
    ids = [e.id for e in hub.global_since(f"{hub.epoch}-0") or []]
    assert len(ids) == 3
    stream = open_global_stream(hub, last_id=ids[0])
    assert [e.data["model"] for e in await _take(stream, 2)] == ["b", "c"]
    hub.model_deleted("a")
    (e,) = await _take(stream, 1)
    assert (e.kind, e.data, e.id) == ("model_deleted", {"model": "a"}, f"{hub.epoch}-4")
    await stream.aclose()
    for bad in ("other-epoch-1", f"{hub.epoch}-x", f"{hub.epoch}-99", "garbage"):
        s = open_global_stream(hub, last_id=bad)
        assert [x.kind for x in await _take(s, 1)] == ["reset"], bad
        await s.aclose()
    for name in ("d", "e", "f"):  # the buffer holds 4: ids[0] is now too old
        hub.model_created(name, 1)
    assert hub.global_since(ids[0]) is None
    assert hub.global_since(f"{hub.epoch}-7") == []

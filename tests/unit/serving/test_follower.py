"""The follower with a fake journal: one sync reads the heads, follows them and beats; a journal that fails marks
it down and a later read marks it up; the thread wakes on a kick or a notice, reconnects a lost feed, and forgets
its replica row when it stops. Every wait is on a queue or an event that the fake fills."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from typing import cast

import pytest

from morphserve.serving.follower import HEARTBEAT_S, Follower, replica_id
from morphserve.serving.metrics import Metrics
from morphserve.store import Head, JournalUnreachableError, Notice, ReplicaRecord, Store, StoreError

WAIT = 10.0  # seconds; only reached when the follower is broken


class Feed:
    """A change feed: each `wait` takes the next scripted event ("notice" or "lost"), or times out with []."""

    def __init__(self) -> None:
        self.events: queue.Queue[str] = queue.Queue()
        self.closed = threading.Event()

    def wait(self, timeout: float) -> list[Notice]:
        try:
            event = self.events.get(timeout=timeout)
        except queue.Empty:
            return []
        if event == "lost":
            raise JournalUnreachableError("connection to the journal lost")
        return [Notice("m", 2)]

    def close(self) -> None:
        self.closed.set()


class Journal:
    """What the follower reads and writes of the store."""

    def __init__(self, feeds: list[Feed | None] | None = None) -> None:
        self.head_rows = {"m": Head("m", "i1", 1, time.time())}
        self.down: StoreError | None = None
        self.beat_error: StoreError | None = None
        self.feed_error: StoreError | None = None
        self.feeds = list(feeds or [])
        self.given = [f for f in self.feeds if f is not None]
        self.opened: queue.Queue[Feed | None] = queue.Queue()
        self.beats: list[ReplicaRecord] = []
        self.forgotten: list[str] = []
        self.forget_error: StoreError | None = None

    def heads(self) -> dict[str, Head]:
        if self.down is not None:
            raise self.down
        return dict(self.head_rows)

    def changes(self) -> Feed | None:
        if self.feed_error is not None:
            e, self.feed_error = self.feed_error, None
            self.opened.put(None)
            raise e
        feed = self.feeds.pop(0) if self.feeds else None
        self.opened.put(feed)
        return feed

    def heartbeat(self, replica: ReplicaRecord) -> None:
        if self.beat_error is not None:
            raise self.beat_error
        self.beats.append(replica)

    def forget_replica(self, replica_id: str) -> None:
        self.forgotten.append(replica_id)
        if self.forget_error is not None:
            raise self.forget_error


class Setup:
    def __init__(self, journal: Journal, *, changed: bool = False, interval_s: float = 60.0) -> None:
        self.journal = journal
        self.metrics = Metrics()
        self.changed = changed
        self.followed: queue.Queue[dict[str, Head]] = queue.Queue()
        self.follower = Follower(
            cast(Store, journal),
            self.metrics,
            follow=self.follow,
            applied=lambda: {"m": 7},
            interval_s=interval_s,
            address="http://here:8000",
            rid="me",
        )

    def follow(self, heads: dict[str, Head]) -> bool:
        self.followed.put(heads)
        return self.changed

    def next_sync(self) -> dict[str, Head]:
        return self.followed.get(timeout=WAIT)

    def journal_up(self) -> float | None:
        return self.metrics.registry.get_sample_value("morphserve_journal_up")


@pytest.fixture
def setups() -> Iterator[list[Setup]]:
    """Followers started by a test are stopped after it, whatever happened."""
    made: list[Setup] = []
    yield made
    for s in made:
        for feed in s.journal.given:
            feed.events.put("notice")  # a feed's wait is not woken by stop(): a notice ends it
        s.follower.stop()


# -- one sync -----------------------------------------------------------------------------------------------------
def test_a_sync_follows_the_heads_then_beats_with_what_is_applied() -> None:
    s = Setup(Journal())
    before = time.time()
    s.follower.sync()
    assert s.next_sync() == s.journal.head_rows
    (beat,) = s.journal.beats
    assert (beat.id, beat.address, beat.applied) == ("me", "http://here:8000", {"m": 7})
    assert beat.started_at <= before <= beat.last_seen
    assert s.follower.journal_up and s.journal_up() == 1


def test_it_beats_at_once_after_a_change_and_otherwise_once_a_heartbeat_interval() -> None:
    s = Setup(Journal())
    s.follower.sync()
    s.follower.sync()  # nothing changed, and the last beat is fresh
    assert len(s.journal.beats) == 1
    s.changed = True
    s.follower.sync()
    assert len(s.journal.beats) == 2
    s.changed = False
    s.follower._last_beat = time.time() - HEARTBEAT_S  # a heartbeat interval later
    s.follower.sync()
    assert len(s.journal.beats) == 3


def test_a_journal_that_fails_marks_it_down_and_the_next_read_marks_it_up() -> None:
    s = Setup(Journal())
    s.journal.down = StoreError("connection refused")
    s.follower.sync()  # never raises
    assert not s.follower.journal_up and s.follower.last_error == "connection refused" and s.journal_up() == 0
    assert s.followed.empty() and s.journal.beats == []  # nothing followed on a journal it could not read
    s.journal.down = None
    s.follower.sync()
    assert s.follower.journal_up and s.follower.last_error is None and s.journal_up() == 1
    assert s.next_sync() == s.journal.head_rows


def test_a_failing_heartbeat_marks_the_journal_down() -> None:
    s = Setup(Journal())
    s.journal.beat_error = StoreError("read-only")
    s.follower.beat()
    assert not s.follower.journal_up and s.follower.last_error == "read-only" and s.journal_up() == 0


def test_replica_ids_are_unique_per_follower() -> None:
    assert replica_id() != replica_id()
    s = Setup(Journal())
    assert s.follower.id == "me"


# -- the thread -------------------------------------------------------------------------------------------------
def test_without_a_feed_it_syncs_at_start_and_whenever_kicked(setups: list[Setup]) -> None:
    s = Setup(Journal(feeds=[None]))  # a journal that only polls; the interval (60 s) never passes here
    setups.append(s)
    s.follower.start()
    s.next_sync()
    s.journal.head_rows = {"m": Head("m", "i1", 2, time.time())}
    s.follower.kick()
    assert s.next_sync()["m"].version == 2


def test_stop_ends_the_thread_and_forgets_the_replica_even_with_the_journal_down() -> None:
    s = Setup(Journal(feeds=[None]))
    s.follower.start()
    s.next_sync()
    s.journal.forget_error = StoreError("journal down")
    s.follower.stop()  # no error: the row ages out of the view instead
    assert not s.follower._thread.is_alive() and s.journal.forgotten == ["me"]


def test_a_notice_from_the_feed_wakes_a_sync(setups: list[Setup]) -> None:
    feed = Feed()
    s = Setup(Journal(feeds=[feed]))
    setups.append(s)
    s.follower.start()
    s.next_sync()
    feed.events.put("notice")
    s.next_sync()


def test_a_lost_feed_marks_the_journal_down_then_reconnects_and_catches_up(
    setups: list[Setup], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="morphserve.follower")
    first, second = Feed(), Feed()
    journal = Journal(feeds=[first, second])
    s = Setup(journal, interval_s=0.01)  # also the pause before reconnecting
    setups.append(s)
    s.follower.start()
    assert journal.opened.get(timeout=WAIT) is first
    s.next_sync()
    first.events.put("lost")
    assert first.closed.wait(WAIT)
    assert journal.opened.get(timeout=WAIT) is second  # listens again, then reads everything
    while not s.followed.empty():
        s.followed.get()
    s.next_sync()  # one after reconnecting
    assert s.follower.journal_up and s.journal_up() == 1
    messages = [r.getMessage() for r in caplog.records if r.name == "morphserve.follower"]
    assert messages == [
        "journal unreachable, serving the versions already applied: connection to the journal lost",
        "journal reachable again; catching up",
    ]


def test_a_feed_that_cannot_be_opened_is_tried_again(setups: list[Setup]) -> None:
    feed = Feed()
    journal = Journal(feeds=[feed])
    journal.feed_error = StoreError("no LISTEN today")
    s = Setup(journal, interval_s=0.01)
    setups.append(s)
    s.follower.start()
    assert journal.opened.get(timeout=WAIT) is None  # the failed try
    assert journal.opened.get(timeout=WAIT) is feed  # the next turn's

"""The follower: keeps this process's models at the journal's heads, so that replicas sharing a journal serve the
same versions.

The journal is the truth; notifications only wake. One thread per server: it waits on the journal's change feed
(PostgreSQL LISTEN/NOTIFY) or, for journals without one, on a timer; every wake-up and at least every
`--follow-interval-ms` it reads every model's head (one query) and, for each model, creates it, replaces it (a new
incarnation: deleted and created again elsewhere), removes it, or applies the newest version (a replica may jump
straight to it). A version is loaded, built and warmed up off the hot path and swapped in between two batches,
exactly as a local edit. A lost notification, a restart or a reconnect therefore costs at most one interval: after
any of them the next read of the heads brings the replica to the journal's state.

It also writes this replica's heartbeat row (id, address, applied versions), at least every second and at once after
applying a version, which is what `GET /v1/replicas` and `?wait=` read.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

from morphserve.store import ChangeFeed, Head, JournalUnreachableError, ReplicaRecord, Store, StoreError

from .metrics import Metrics

log = logging.getLogger("morphserve.follower")
HEARTBEAT_S = 1.0


def replica_id() -> str:
    """Unique per process and readable: host, pid and a short random suffix (pids are reused across restarts)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Follower:
    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        *,
        follow: Callable[[dict[str, Head]], bool],
        applied: Callable[[], dict[str, int]],
        interval_s: float,
        address: str,
        rid: str | None = None,
        stale: Callable[[float], None] | None = None,
        boost: Callable[[], AbstractContextManager[None]] = nullcontext,
    ) -> None:
        """`follow(heads)` brings this process's models to the journal's heads (True when anything changed);
        `applied()` is what this replica has live, for its heartbeat; `stale(seconds)` is told, on every turn while
        the journal is unreachable, how long ago the heads were last read (the lag metrics' upper bound); `boost()`
        is held around each pass after a wake-up (the edit priority: see priority.py), so that reading the heads
        and applying a version take the GIL back from a loaded event loop at once, as a local edit does."""
        self.store = store
        self.metrics = metrics
        self._follow = follow
        self._applied = applied
        self.interval_s = interval_s
        self.address = address
        self.id = rid or replica_id()
        self.started_at = time.time()
        #: Whether the last journal call succeeded (metrics, /v1/replicas, readiness of edits).
        self.journal_up = True
        self.last_error: str | None = None
        #: When the heads were last read (time.time()): while the journal is down, what this replica serves may be
        #: behind by what was committed since.
        self.last_read_at: float | None = None
        self._stale = stale
        self._boost = boost
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="follower", daemon=True)
        self._last_beat = 0.0

    # -- control -----------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(10)
        with contextlib.suppress(StoreError):  # the journal may be down: the row then ages out of /v1/replicas
            self.store.forget_replica(self.id)

    def kick(self) -> None:
        """Read the journal now (a request asked for a version this replica has not applied yet)."""
        self._wake.set()

    # -- the thread --------------------------------------------------------------------------------------
    def _run(self) -> None:
        feed: ChangeFeed | None = None
        connect = True  # LISTEN (again), then read everything: nothing committed in between is missed
        while not self._stop.is_set():
            if connect:
                feed, connect = self._open_feed()
                self.sync()
            try:
                if feed is not None:
                    feed.wait(0.0 if self._wake.is_set() else self.interval_s)
                else:
                    self._wake.wait(self.interval_s)
            except JournalUnreachableError as e:
                self._down(e)
                if feed is not None:
                    feed.close()
                feed, connect = None, True  # reconnect on the next turn
                self._stop.wait(min(self.interval_s, 1.0))
                continue
            self._wake.clear()
            if self._stop.is_set():
                break
            with self._boost():
                self.sync()
        if feed is not None:
            feed.close()

    def _open_feed(self) -> tuple[ChangeFeed | None, bool]:
        """The journal's change feed (None for one followers only poll), and whether to try again next turn."""
        try:
            return self.store.changes(), False
        except StoreError as e:
            self._down(e)
            return None, True

    def _down(self, e: Exception) -> None:
        if self.journal_up:
            log.warning("journal unreachable, serving the versions already applied: %s", e)
        self.journal_up, self.last_error = False, str(e)
        self.metrics.journal_up.set(0)
        if self._stale is not None and self.last_read_at is not None:
            self._stale(max(0.0, time.time() - self.last_read_at))

    def _up(self) -> None:
        if not self.journal_up:
            log.info("journal reachable again; catching up")
        self.journal_up, self.last_error = True, None
        self.metrics.journal_up.set(1)

    def sync(self) -> None:
        """One pass: bring every model to its head, then beat. Never raises (the journal may be down)."""
        try:
            heads = self.store.heads()
        except StoreError as e:
            self._down(e)
            return
        self.last_read_at = time.time()
        self._up()
        changed = self._follow(heads)
        now = time.time()
        if changed or now - self._last_beat >= HEARTBEAT_S:
            self.beat()

    def beat(self) -> None:
        try:
            self.store.heartbeat(ReplicaRecord(self.id, self.address, self._applied(), self.started_at, time.time()))
            self._last_beat = time.time()
        except StoreError as e:
            self._down(e)

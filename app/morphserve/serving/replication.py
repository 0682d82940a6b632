"""This process as one replica among many that share a journal: following it, read-your-writes, the replica view.

The follower (follower.py) calls `follow(heads)` with the journal's heads; this module turns each difference into one
step on the table of served models (`ServedModels`, which the registry implements): serve a model created elsewhere,
drop one deleted elsewhere (or re-created: a new incarnation), apply a newer version. `wait_for` gives `?min_version=`
its meaning (wait a bounded time for a version this replica has not applied yet, else 503 naming the one it has);
`wait_replicas` gives an edit's `?wait=all|N`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Protocol

from pydantic import BaseModel

from morphserve.graph import GraphError, NotFoundError
from morphserve.store import Head, Store, StoreError

from .errors import ModelExistsError, VersionAheadError, VersionBehindError
from .follower import HEARTBEAT_S, Follower
from .metrics import Metrics
from .served import ServedModel

log = logging.getLogger("morphserve.replication")
#: A replica whose heartbeat is older than this is not counted as alive (three missed beats and some slack).
ALIVE_S = 3 * HEARTBEAT_S + 2.0


class ModelLag(BaseModel):
    versions: int
    seconds: float


class ReplicaInfo(BaseModel):
    id: str
    address: str
    alive: bool
    this: bool
    started_at: float
    last_seen: float
    versions: dict[str, int]
    lag: dict[str, ModelLag]


class JournalState(BaseModel):
    backend: str
    up: bool
    error: str | None = None
    #: When this replica last read the journal's heads (seconds since the epoch). While `up` is false it serves what
    #: it had then: its lag is unknown, at most the lag it had then plus the time since.
    last_read_at: float | None = None


class ReplicasView(BaseModel):
    """`GET /v1/replicas`: every replica following this journal, what it serves, how far behind the heads it is."""

    self: str
    journal: JournalState
    heads: dict[str, int]
    replicas: list[ReplicaInfo]


class ReplicaWait(BaseModel):
    """How an edit's `?wait=` ended: which replicas have the version live."""

    version: int
    wanted: str
    complete: bool
    live: list[str]
    pending: list[str]


class ServedModels(Protocol):
    """What following the journal needs of this process's table of served models. The registry is one (structurally),
    so this module never imports it: replication reaches the table only through these calls."""

    def local(self, name: str) -> ServedModel | None: ...

    def names(self) -> list[str]: ...

    def may_adopt(self, name: str) -> bool:
        """False for a model this process must not bring back on its own (it failed to load here, or is being
        deleted here)."""
        ...

    def deleting(self, name: str) -> bool: ...

    def adopt(self, name: str, incarnation: str) -> None: ...

    def drop_local(self, name: str) -> None: ...


class Replication:
    def __init__(
        self,
        models: ServedModels,
        *,
        apply: Callable[[ServedModel, Head], bool],
        store: Store,
        metrics: Metrics,
        journal_kind: str,
        interval_s: float,
        wait_s: float,
        address: str,
        on_docs: Callable[[ServedModel, Head], None] | None = None,
        boost: Callable[[], AbstractContextManager[None]] = nullcontext,
    ) -> None:
        """`apply(served, head)` brings a served model to a head committed elsewhere (the edit pipeline's
        follower step); `on_docs(served, head)` runs when a model's documents changed (a rollout started or ended
        elsewhere); `journal_kind` is what `/v1/replicas` names the journal (sqlite, postgresql, memory)."""
        self.models = models
        self.apply = apply
        self.store = store
        self.metrics = metrics
        self.journal_kind = journal_kind
        self.wait_s = wait_s
        self.follower = Follower(
            store,
            metrics,
            follow=self.follow,
            applied=self.applied,
            interval_s=interval_s,
            address=address,
            stale=self._stale,
            boost=boost,
        )
        self._heads: dict[str, Head] = {}
        #: The lag in seconds per model at the last read of the heads (the base of the bound while it is down).
        self._lag_s: dict[str, float] = {}
        self.on_docs = on_docs
        self._docs_seen: dict[str, tuple[str, int]] = {}  # model -> (incarnation, docs_rev) last handed to on_docs

    def start(self) -> None:
        self.follower.start()

    def stop(self) -> None:
        self.follower.stop()

    # -- following (the follower thread) -------------------------------------------------------------------
    def follow(self, heads: dict[str, Head]) -> bool:
        """Make this replica's models match `heads`; True when anything changed."""
        models, changed = self.models, False
        self._heads = heads
        for name, head in heads.items():
            served = models.local(name)
            try:
                if served is None:
                    if not models.may_adopt(name):
                        continue
                    models.adopt(name, head.incarnation)
                elif served.incarnation is not None and served.incarnation != head.incarnation:
                    models.drop_local(name)
                    models.adopt(name, head.incarnation)
                elif not self.apply(served, head):
                    self._docs(name, head)
                    continue
                self._docs(name, head)
                changed = True
            except ModelExistsError:
                continue  # created by this very process meanwhile
            except (StoreError, GraphError, ValueError, RuntimeError) as e:
                log.error("model %s: cannot follow the journal to version %d: %s", name, head.version, e)
        for name in models.names():
            served = models.local(name)
            gone = served is not None and served.incarnation is not None and name not in heads
            if gone and not models.deleting(name):
                models.drop_local(name)  # deleted by another replica
                changed = True
        self._lag(heads)
        return changed

    def _docs(self, name: str, head: Head) -> None:
        seen = (head.incarnation, head.docs_rev)
        served = self.models.local(name)
        if self.on_docs is None or served is None or self._docs_seen.get(name) == seen:
            return
        self._docs_seen[name] = seen
        self.on_docs(served, head)

    def _lag(self, heads: dict[str, Head]) -> None:
        now = time.time()
        for name, head in heads.items():
            served = self.models.local(name)
            if served is None:
                continue
            behind = max(0, head.current - served.serving_version())
            self._lag_s[name] = max(0.0, now - head.committed_at) if behind else 0.0
            self.metrics.lag_versions.labels(name).set(behind)
            self.metrics.lag_seconds.labels(name).set(self._lag_s[name])

    def _stale(self, since_read_s: float) -> None:
        """The journal is unreachable: this replica cannot know what was committed since it last read the heads, so
        its lag in seconds is reported as its upper bound (the lag then, plus the time since), which grows for as
        long as the partition lasts; the lag in versions stays the last known (a lower bound)."""
        for name in self.models.names():
            self.metrics.lag_seconds.labels(name).set(self._lag_s.get(name, 0.0) + since_read_s)

    def applied(self) -> dict[str, int]:
        return {n: s.serving_version() for n in self.models.names() if (s := self.models.local(n))}

    # -- read-your-writes --------------------------------------------------------------------------------------
    async def wait_for(self, name: str, min_version: int) -> None:
        """Return once `min_version` of `name` is live here; VersionBehindError (503) after `--min-version-wait-ms`."""
        deadline = time.monotonic() + self.wait_s
        served = self.models.local(name)
        if served is not None and served.serving_version() >= min_version:
            return
        await self._check_journal_has(name, min_version)
        self.follower.kick()
        while served is None:  # created elsewhere, not followed yet
            if time.monotonic() >= deadline:
                raise NotFoundError(f"model {name!r} does not exist on this replica", model=name)
            await asyncio.sleep(0.005)
            served = self.models.local(name)
        if not await served.reached(min_version, max(0.0, deadline - time.monotonic())):
            have = served.serving_version()
            raise VersionBehindError(
                f"this replica has version {have} of {name!r}, not yet {min_version}; retry shortly",
                version=have,
                min_version=min_version,
            )

    async def _check_journal_has(self, name: str, min_version: int) -> None:
        """A version beyond the journal's newest exists nowhere: no replica can have it, however long one waits (an
        edit acknowledged anywhere is in the journal before its answer). 404 at once, rather than a 503 after the
        wait; a journal that cannot be read says nothing, and the wait goes on as before."""
        try:
            heads = await asyncio.to_thread(self.store.heads)
        except StoreError:
            return
        head = heads.get(name)
        if head is None or min_version > head.version:
            newest = f"the journal's newest is {head.version}" if head is not None else "the journal holds none of it"
            raise VersionAheadError(
                f"model {name!r} has no version {min_version} on any replica: {newest}, so no replica can have it "
                "until an edit makes it",
                model=name,
                min_version=min_version,
                latest=head.version if head is not None else None,
            )

    # -- the replica view and edits that wait for it ---------------------------------------------------------
    def view(self) -> ReplicasView:
        """Blocking (reads the journal): call it off the event loop."""
        f = self.follower
        journal = JournalState(
            backend=self.journal_kind, up=f.journal_up, error=f.last_error, last_read_at=f.last_read_at
        )
        try:
            rows = self.store.replicas()
            heads = self.store.heads()
            journal.up = True
        except StoreError as e:
            journal.up, journal.error = False, str(e)
            rows, heads = [], self._heads
        now = time.time()
        replicas = []
        seen_self = False
        for r in rows:
            seen_self |= r.id == f.id
            versions = self.applied() if r.id == f.id else r.applied
            replicas.append(self._info(r.id, r.address, r.started_at, r.last_seen, versions, heads, now, f.id))
        if not seen_self:  # not beaten yet, or the journal is down: this replica still knows itself
            replicas.insert(0, self._info(f.id, f.address, f.started_at, now, self.applied(), heads, now, f.id))
        if not journal.up and f.last_read_at is not None:  # its own lag: the upper bound (see `_stale`)
            mine = next(r for r in replicas if r.this)
            for m, lag in mine.lag.items():
                lag.seconds = round(self._lag_s.get(m, 0.0) + now - f.last_read_at, 3)
        return ReplicasView(
            self=f.id, journal=journal, heads={m: h.current for m, h in heads.items()}, replicas=replicas
        )

    @staticmethod
    def _info(
        rid: str,
        address: str,
        started: float,
        seen: float,
        versions: dict[str, int],
        heads: dict[str, Head],
        now: float,
        me: str,
    ) -> ReplicaInfo:
        lag = {}
        for m, h in heads.items():
            behind = max(0, h.current - versions.get(m, 0))
            lag[m] = ModelLag(versions=behind, seconds=round(max(0.0, now - h.committed_at), 3) if behind else 0.0)
        return ReplicaInfo(
            id=rid,
            address=address,
            alive=rid == me or now - seen < ALIVE_S,
            this=rid == me,
            started_at=started,
            last_seen=seen,
            versions=versions,
            lag=lag,
        )

    async def wait_replicas(self, name: str, version: int, wanted: str, timeout: float) -> ReplicaWait:
        """After an edit: wait until all alive replicas (`all`) or `N` of them have `version` live, or `timeout`."""
        self.follower.beat()  # this replica's row shows the new version at once
        deadline = time.monotonic() + timeout
        while True:
            view = await asyncio.to_thread(self.view)
            alive = [r for r in view.replicas if r.alive]
            live = [r.id for r in alive if r.versions.get(name, 0) >= version]
            pending = [r.id for r in alive if r.versions.get(name, 0) < version]
            need = len(alive) if wanted == "all" else min(int(wanted), len(alive) or int(wanted))
            done = len(live) >= need
            if done or time.monotonic() >= deadline:
                return ReplicaWait(version=version, wanted=wanted, complete=done, live=live, pending=pending)
            await asyncio.sleep(0.02)


def advertised_address(host: str, port: int) -> str:
    import socket

    shown = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
    return f"http://{shown}:{port}" if ":" not in shown else f"http://[{shown}]:{port}"

"""Conformance of every journal and blob backend: what the Store relies on, asserted against each implementation.

A new backend (PostgreSQL) is done when this file passes against it."""

from __future__ import annotations

import fcntl
import threading
import time
from collections.abc import Callable

import pytest

from morphserve.store import (
    DocConflictError,
    JournalUnreachableError,
    Notice,
    ReplicaRecord,
    Store,
    VersionConflictError,
    VersionRecord,
)
from tests.locks import WatchedLock

from .conftest import SHARED

WAIT = 10.0


def _until(check: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.002)


def _rec(model: str, version: int, blobs: dict[str, str] | None = None) -> VersionRecord:
    return VersionRecord(
        model,
        version,
        version - 1 or None,
        [{"op": "x", "i": version}],
        {"name": model},
        blobs or {},
        1000.0 + version,
        {"n": [[2], [3], "FP32"]},
    )


def test_append_get_latest_versions_models(make_store) -> None:  # type: ignore[no-untyped-def]
    j = make_store().journal
    assert j.latest("m") is None and j.models() == [] and j.versions("m") == []
    for v in (1, 2, 3):
        j.append(_rec("m", v, {"fc": f"d{v}"}), create="i-m" if v == 1 else None)
    j.append(_rec("other", 1), create="i-other")
    assert j.latest("m") == _rec("m", 3, {"fc": "d3"})
    assert j.get("m", 2) == _rec("m", 2, {"fc": "d2"}) and j.get("m", 9) is None
    assert [r.version for r in j.versions("m")] == [1, 2, 3] == j.version_numbers("m")
    assert j.models() == ["m", "other"]


def test_a_taken_version_number_is_a_conflict_and_changes_nothing(make_store) -> None:  # type: ignore[no-untyped-def]
    j = make_store().journal
    j.append(_rec("m", 1, {"a": "d1"}), create="i1")
    with pytest.raises(VersionConflictError):
        j.append(_rec("m", 1, {"a": "other"}))
    assert j.get("m", 1) == _rec("m", 1, {"a": "d1"})
    with j.sweep_lock() as referenced:
        assert referenced == {"d1"}


def test_a_failing_before_commit_rolls_the_row_back(make_store) -> None:  # type: ignore[no-untyped-def]
    j = make_store().journal

    def boom() -> None:
        raise OSError("disk gone")

    with pytest.raises(OSError):
        j.append(_rec("m", 1, {"a": "d1"}), before_commit=boom, create="i1")
    assert j.latest("m") is None and j.models() == [] and j.heads() == {}
    with j.sweep_lock() as referenced:
        assert referenced == set()
    j.append(_rec("m", 1, {"a": "d1"}), create="i1")  # the number (and the model's name) is free again
    assert j.version_numbers("m") == [1]


def test_second_connection_sees_commits_and_conflicts(make_store) -> None:  # type: ignore[no-untyped-def]
    a, b = make_store().journal, make_store().journal
    a.append(_rec("m", 1), create="i1")
    assert b.latest("m") == _rec("m", 1)
    with pytest.raises(VersionConflictError):
        b.append(_rec("m", 1))


def test_pins_and_deletes_are_transactional(make_store) -> None:  # type: ignore[no-untyped-def]
    j = make_store().journal
    for v in (1, 2, 3):
        j.append(_rec("m", v, {"fc": f"d{v}"}), create="i1" if v == 1 else None)
    j.pin("m", 1)
    j.pin("m", 1)  # idempotent
    j.pin("m", 3)
    assert j.pins("m") == {1, 3}
    j.unpin("m", 3)
    assert j.pins("m") == {1}
    j.delete_versions("m", [1, 2])
    assert j.version_numbers("m") == [3] and j.pins("m") == set()
    with j.sweep_lock() as referenced:
        assert referenced == {"d3"}
    j.delete_model("m")
    assert j.models() == [] and j.latest("m") is None


def test_reset_forgets_everything(make_store) -> None:  # type: ignore[no-untyped-def]
    s = make_store()
    s.journal.append(_rec("m", 1, {"a": "d"}), create="i1")
    s.journal.heartbeat(ReplicaRecord("r1", "http://a", {"m": 1}, 1.0, 0.0))
    s.blobs.put("d", b"x")
    s.reset()
    assert s.journal.models() == [] and s.journal.heads() == {} and list(s.blobs.listing()) == []
    assert s.journal.replicas() == []
    s.journal.append(_rec("m", 1, {"a": "d"}), create="i2")  # the name is free again


def test_blobs_put_is_idempotent_and_listed_with_their_time(make_store) -> None:  # type: ignore[no-untyped-def]
    b = make_store().blobs
    before = time.time() - 1
    b.put("aa11", b"one")
    b.put("aa11", b"ignored: content-addressed, the first write stands")
    b.put("bb22", b"two")
    assert b.get("aa11") == b"one"
    assert b.present(["aa11", "bb22", "cc33"]) == {"aa11", "bb22"}
    listed = dict(b.listing())
    assert set(listed) == {"aa11", "bb22"} and all(t >= before for t in listed.values())
    assert b.delete(["aa11", "cc33"]) == 1
    assert b.present(["aa11"]) == set()
    assert "aa11"[:4] in b.locate("aa11")


def test_a_missing_blob_is_corrupt_and_named(make_store) -> None:  # type: ignore[no-untyped-def]
    from morphserve.store import BlobCorruptError

    b = make_store().blobs
    with pytest.raises(BlobCorruptError) as e:
        b.get("ee99" * 16)
    assert b.locate("ee99" * 16) in str(e.value)


def test_sweep_spares_referenced_and_young_blobs(make_store) -> None:  # type: ignore[no-untyped-def]
    s: Store = make_store(sweep_grace_s=3600)
    s.blobs.put("young", b"y")
    assert s.sweep() == 0 and s.blobs.present(["young"]) == {"young"}
    s2: Store = make_store(sweep_grace_s=0)
    s2.journal.append(_rec("m", 1, {"fc": "kept"}), create="i1")
    s2.blobs.put("kept", b"k")
    assert s2.sweep() == 1  # "young" is unreferenced and the grace is 0
    assert s2.blobs.present(["young", "kept"]) == {"kept"}


# -- models, incarnations and heads (what followers poll) -------------------------------------------------------
def test_create_records_the_incarnation_and_a_second_create_conflicts(make_store) -> None:  # type: ignore[no-untyped-def]
    a, b = make_store().journal, make_store().journal
    before = time.time() - 5  # the journal's clock (a local database's) may run a little apart from ours
    a.append(_rec("m", 1, {"fc": "d1"}), create="inc-1")
    head = b.heads()["m"]
    assert (head.model, head.incarnation, head.version) == ("m", "inc-1", 1)
    assert before <= head.committed_at <= time.time() + 5
    with pytest.raises(VersionConflictError, match="exists"):
        b.append(_rec("m", 1, {"fc": "other"}), create="inc-2")  # the same name again: refused...
    with pytest.raises(VersionConflictError, match="exists"):
        b.append(_rec("m", 9), create="inc-2")  # ...whatever its version
    assert b.heads()["m"].incarnation == "inc-1" and b.version_numbers("m") == [1]
    with pytest.raises(VersionConflictError, match="does not exist"):
        b.append(_rec("never-created", 2))  # a row of a model that does not exist: refused
    assert "never-created" not in b.heads() and b.models() == ["m"]


def test_heads_follow_appends_deletes_and_recreation(make_store) -> None:  # type: ignore[no-untyped-def]
    j, other = make_store().journal, make_store().journal
    assert j.heads() == {}
    j.append(_rec("m", 1), create="first")
    j.append(_rec("n", 1), create="n1")
    j.append(_rec("m", 2))
    heads = other.heads()
    assert {m: (h.incarnation, h.version) for m, h in heads.items()} == {"m": ("first", 2), "n": ("n1", 1)}
    assert heads["m"].committed_at >= heads["n"].committed_at  # m v2 committed after n v1
    j.delete_model("m")
    assert set(other.heads()) == {"n"}
    with pytest.raises(VersionConflictError, match="does not exist"):
        other.append(_rec("m", 3))  # an editor that missed the delete cannot bring the model back
    other.append(_rec("m", 1), create="second")  # created again: a new incarnation, numbers start over
    assert (j.heads()["m"].incarnation, j.heads()["m"].version) == ("second", 1)
    j.delete_versions("n", [1])
    j.append(_rec("n", 2))
    assert j.heads()["n"].version == 2


# -- edit locks -------------------------------------------------------------------------------------------------
def _edit_lock_waiters(
    backend: str, store: Store, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Callable[[threading.Thread], bool]:
    """Whether a thread is blocked on model "m"'s edit lock, seen where each backend keeps it: the waiting session
    in PostgreSQL's pg_locks, a refused flock for SQLite's lock file, the in-process lock of the memory journal.
    Set up before anyone takes the lock."""
    if backend in SHARED:
        cluster, db = request.getfixturevalue("pg_cluster"), str(request.getfixturevalue("pg_url")).rsplit("/", 1)[1]
        sql = (
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        return lambda _thread: bool(cluster.execute(sql, db)[0][0])  # only the waiter can wait in this database
    if backend == "memory":
        lock = WatchedLock()
        monkeypatch.setitem(store.journal._edit_locks._locks, "m", lock)  # type: ignore[attr-defined]
        return lambda thread: thread in lock.waiting()
    refused: set[threading.Thread] = set()  # SQLite: file_lock retries a non-blocking flock until it gets it
    flock = fcntl.flock

    def watched_flock(fd: int, operation: int) -> None:
        try:
            flock(fd, operation)
        except BlockingIOError:
            refused.add(threading.current_thread())
            raise

    monkeypatch.setattr(fcntl, "flock", watched_flock)  # what morphserve.store.locks calls
    return lambda thread: thread in refused


def test_edit_lock_excludes_a_second_holder_of_the_same_model_only(  # type: ignore[no-untyped-def]
    make_store, backend: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two Stores are two processes' views (for PostgreSQL two connections, for SQLite two open lock files)."""
    a, b = make_store(), make_store()
    waits = _edit_lock_waiters(backend, a, request, monkeypatch)
    order: list[str] = []
    with a.edit_lock("m"):
        with pytest.raises(JournalUnreachableError, match="edit lock"), b.edit_lock("m", timeout_s=0.3):
            pass
        with b.edit_lock("other", timeout_s=1):  # another model: not excluded
            order.append("other")

        def waiter() -> None:
            with b.edit_lock("m", timeout_s=10):
                order.append("b")

        t = threading.Thread(target=waiter)
        t.start()
        _until(lambda: waits(t), "b waits for the edit lock a holds")
        assert order == ["other"]  # blocked, not through
        order.append("a releases")
    t.join(10)
    assert order == ["other", "a releases", "b"]
    with a.edit_lock("m", timeout_s=1):  # and b released it in turn
        pass


# -- replicas ---------------------------------------------------------------------------------------------------
def _seen(store: Store, replica_id: str) -> float:
    return next(r.last_seen for r in store.replicas() if r.id == replica_id)


def _beat_after(store: Store, replica: ReplicaRecord, previous: float) -> None:
    """Heartbeat until the journal's clock stamps it later than `previous`: two beats may fall in one tick of its
    clock, and "newest first" needs them apart. A repeated beat is what a replica does anyway (an upsert)."""
    deadline = time.monotonic() + WAIT
    store.heartbeat(replica)
    while _seen(store, replica.id) <= previous:
        assert time.monotonic() < deadline, f"the journal's clock did not pass {previous} in {WAIT} s"
        time.sleep(0.001)
        store.heartbeat(replica)


def test_heartbeat_upserts_replicas_newest_first_and_forget_removes(make_store) -> None:  # type: ignore[no-untyped-def]
    a, b = make_store(), make_store()
    before = time.time() - 5
    a.heartbeat(ReplicaRecord("r1", "http://10.0.0.1:8000", {"m": 1}, 100.0, 0.0))
    _beat_after(b, ReplicaRecord("r2", "http://10.0.0.2:8000", {}, 200.0, 0.0), _seen(b, "r1"))
    r1 = ReplicaRecord("r1", "http://10.0.0.1:8000", {"m": 3, "n": 1}, 100.0, 0.0)
    _beat_after(a, r1, _seen(b, "r2"))  # an update, no new row
    rows = b.replicas()
    assert [r.id for r in rows] == ["r1", "r2"]  # newest heartbeat first
    assert rows[0] == ReplicaRecord("r1", "http://10.0.0.1:8000", {"m": 3, "n": 1}, 100.0, rows[0].last_seen)
    assert before <= rows[1].last_seen <= rows[0].last_seen <= time.time() + 5  # the journal's clock, not ours (0.0)
    a.forget_replica("r1")
    a.forget_replica("nobody")  # nothing to forget: not an error
    assert [r.id for r in b.replicas()] == ["r2"]


# -- change feed ------------------------------------------------------------------------------------------------
def test_changes_notify_commits_and_deletes_but_not_rolled_back_appends(make_store, backend: str) -> None:  # type: ignore[no-untyped-def]
    a, b = make_store(), make_store()
    feed = b.changes()
    if backend not in SHARED:
        assert feed is None  # one file or one process: followers poll heads()
        return
    assert feed is not None
    try:
        assert feed.wait(0.2) == []
        a.journal.append(_rec("m", 1), create="i1")
        assert feed.wait(5) == [Notice("m", 1)]

        def boom() -> None:
            raise OSError("the disk went away")

        with pytest.raises(OSError):
            a.journal.append(_rec("m", 2), before_commit=boom)
        assert feed.wait(0.5) == []  # rolled back: nothing was sent
        a.journal.append(_rec("m", 2))
        a.journal.append(_rec("m", 3))
        got = feed.wait(5)
        while len(got) < 2:
            more = feed.wait(5)
            assert more, got
            got += more
        assert got == [Notice("m", 2), Notice("m", 3)]
        a.journal.delete_model("m")
        assert feed.wait(5) == [Notice("m", None)]
    finally:
        feed.close()


# -- sweeps against appends -------------------------------------------------------------------------------------
def test_a_sweep_excludes_appends_of_another_store(make_store) -> None:  # type: ignore[no-untyped-def]
    """Store says why: a commit re-checks its blobs inside its transaction, so no sweep may run meanwhile."""
    sweeper, writer, reader = make_store(), make_store(), make_store()
    writer.journal.append(_rec("m", 1), create="i1")
    done = threading.Event()

    def append() -> None:
        writer.journal.append(_rec("m", 2, {"fc": "new"}))
        done.set()

    with sweeper.journal.sweep_lock() as referenced:
        assert referenced == set()
        t = threading.Thread(target=append)
        t.start()
        assert not done.wait(0.5)  # waits for the sweep...
        assert reader.journal.version_numbers("m") == [1]
    assert done.wait(10)  # ...and commits right after it
    t.join(5)
    assert reader.journal.version_numbers("m") == [1, 2]
    with sweeper.journal.sweep_lock() as referenced:
        assert referenced == {"new"}


# -- staged versions, the current pointer, documents -----------------------------------------------------------
def _staged(model: str, version: int) -> VersionRecord:
    r = _rec(model, version)
    return VersionRecord(r.model, r.version, r.parent, r.ops, r.spec, r.blobs, r.created_at, r.shapes, staged=True)


def test_a_staged_version_is_durable_but_not_current_until_promoted(make_store) -> None:  # type: ignore[no-untyped-def]
    a, b = make_store(), make_store()
    a.journal.append(_rec("m", 1), create="i1")
    a.journal.append(_staged("m", 2))
    head = b.journal.heads()["m"]
    assert (head.version, head.current) == (2, 1)
    assert b.journal.get("m", 2).staged and not b.journal.get("m", 1).staged  # type: ignore[union-attr]
    a.journal.append(_rec("m", 3))  # an unstaged edit after it: current moves past the staged one
    assert (b.journal.heads()["m"].version, b.journal.heads()["m"].current) == (3, 3)
    a.journal.set_current("m", 2)  # a promotion
    assert b.journal.heads()["m"].current == 2
    with pytest.raises(VersionConflictError):
        a.journal.set_current("m", 9)
    assert b.journal.heads()["m"].current == 2


def test_documents_are_written_with_optimistic_concurrency(make_store) -> None:  # type: ignore[no-untyped-def]
    a, b = make_store(), make_store()
    a.journal.append(_rec("m", 1), create="i1")
    a.journal.append(_staged("m", 2))
    rev0 = b.journal.heads()["m"].docs_rev
    d = a.journal.put_doc("m", "rollout", "r1", {"state": "running", "n": [1, 2]}, expect_rev=0)
    assert (d.rev, d.value) == (1, {"state": "running", "n": [1, 2]})
    assert b.journal.heads()["m"].docs_rev > rev0  # followers see that something changed
    with pytest.raises(DocConflictError, match="exists already"):
        b.journal.put_doc("m", "rollout", "r1", {"state": "other"}, expect_rev=0)
    # two replicas decide the same rollout: the one that read rev 1 first wins, the other is refused
    won = a.journal.put_doc("m", "rollout", "r1", {"state": "promoted"}, expect_rev=1, current=2)
    assert won.rev == 2 and b.journal.heads()["m"].current == 2
    with pytest.raises(DocConflictError, match="rev 2, not 1"):
        b.journal.put_doc("m", "rollout", "r1", {"state": "aborted"}, expect_rev=1)
    got = b.journal.doc("m", "rollout", "r1")
    assert got is not None and got.value == {"state": "promoted"} and got.rev == 2
    a.journal.put_doc("m", "dataset", "eval", {"rows": 3}, digest="dd1")
    assert [x.key for x in b.journal.docs("m", "dataset")] == ["eval"] and b.journal.docs("m", "job") == []
    with pytest.raises(VersionConflictError):  # a document of a model that does not exist
        a.journal.put_doc("nope", "dataset", "x", {})
    a.journal.delete_doc("m", "rollout", "r1")
    assert b.journal.doc("m", "rollout", "r1") is None


def test_a_documents_blob_is_kept_by_sweeps_and_documents_go_with_their_model(make_store) -> None:  # type: ignore[no-untyped-def]
    s = make_store()
    s.journal.append(_rec("m", 1, {"fc": "d1"}), create="i1")
    s.journal.put_doc("m", "dataset", "train", {"rows": 10}, digest="dset")
    with s.journal.sweep_lock() as referenced:
        assert referenced == {"d1", "dset"}
    s.journal.delete_model("m")
    with s.journal.sweep_lock() as referenced:
        assert referenced == set()
    s.journal.append(_rec("m", 1), create="i2")  # created again: none of the old documents come back
    assert s.journal.docs("m", "dataset") == []

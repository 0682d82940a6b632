"""The PostgreSQL journal and blobs where they differ from the others: a real server that goes down and comes back,
connections killed under a feed or a lock, concurrent writers, schemas, privileges, a full disk, and how
`open_store` opens it (bounded retry at start, `--fresh` refused while replicas are alive).

Everything runs against the session's throwaway cluster (tests/pg.py), one new database per test.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from pydantic import ValidationError

from morphserve.settings import Settings
from morphserve.store import (
    BlobCorruptError,
    JournalError,
    JournalUnreachableError,
    ReplicaRecord,
    StorageFullError,
    StoreError,
    StoreUnavailableError,
    VersionConflictError,
    VersionRecord,
    open_store,
)
from morphserve.store.blobs import DirBlobs
from morphserve.store.cached_blobs import CachedBlobs
from morphserve.store.pg_blobs import CHUNK, PostgresBlobs
from morphserve.store.pg_journal import PostgresJournal
from morphserve.store.store import encode
from tests.pg import PgCluster

from .conftest import open_postgres

PASSWORD = "s3cret-not-for-logs"


def _rec(model: str, version: int, blobs: dict[str, str] | None = None, spec: object = None) -> VersionRecord:
    return VersionRecord(model, version, version - 1 or None, [], {"x": spec}, blobs or {}, float(version))


def _db(url: str) -> str:
    return url.rsplit("/", 1)[1]


def _wait_for(check, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except StoreError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout} s")
        time.sleep(0.1)


# -- schema ---------------------------------------------------------------------------------------------------
def test_schema_is_created_on_an_empty_database_and_reused_on_the_next_open(pg_cluster: PgCluster, pg_url: str) -> None:
    db = _db(pg_url)
    assert pg_cluster.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", db) == [(0,)]
    j = PostgresJournal(pg_url)
    tables = {r[0] for r in pg_cluster.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'", db)}
    assert tables == {
        "morphserve_meta",
        "models",
        "versions",
        "pins",
        "version_blobs",
        "replicas",
        "blobs",
        "blob_chunks",
        "docs",
    }
    assert pg_cluster.execute("SELECT value FROM morphserve_meta WHERE key = 'schema_version'", db) == [("4",)]
    j.append(_rec("m", 1), create="i1")
    j.close()
    again, blobs = PostgresJournal(pg_url), PostgresBlobs(pg_url)  # both check the same schema, neither recreates it
    assert again.latest("m") == _rec("m", 1) and again.heads()["m"].incarnation == "i1"
    again.close()
    blobs.close()


def test_a_schema_from_a_newer_release_is_refused_by_name(pg_cluster: PgCluster, pg_url: str) -> None:
    PostgresJournal(pg_url).close()
    pg_cluster.execute("UPDATE morphserve_meta SET value = '99' WHERE key = 'schema_version'", _db(pg_url))
    for opener in (PostgresJournal, PostgresBlobs):
        with pytest.raises(JournalError, match="schema 99, newer than this release's 4") as e:
            opener(pg_url)
        assert _db(pg_url) in str(e.value)


# -- the database going away and coming back ------------------------------------------------------------------
def test_database_down_is_unreachable_then_the_same_store_works_again(pg_cluster: PgCluster, pg_url: str) -> None:
    """Retry-After semantics, the URL named without its password, and no reopening once the database is back."""
    url = pg_cluster.url(_db(pg_url), password=PASSWORD)  # trust auth ignores it, but it is in the URL
    store = open_postgres(url, None, Path(pg_cluster.dir) / f"cache-{uuid.uuid4().hex}")
    store.journal.append(_rec("m", 1), create="i1")
    pg_cluster.stop()
    try:
        calls = {
            "heads": store.heads,
            "append": lambda: store.journal.append(_rec("m", 2)),
            "blob": lambda: store.blobs.put("ab" * 32, b"x"),
            "feed": store.changes,
            "lock": lambda: store.edit_lock("m").__enter__(),
            "heartbeat": lambda: store.heartbeat(ReplicaRecord("r", "http://x", {}, 0.0, 0.0)),
        }
        for name, call in calls.items():
            started = time.monotonic()
            with pytest.raises(JournalUnreachableError) as e:
                call()
            assert e.value.retry_after_s == 1, name
            assert f"postgresql://postgres@127.0.0.1:{pg_cluster.port}/{_db(pg_url)}" in e.value.message, name
            assert PASSWORD not in e.value.message and "unreachable" in e.value.message, name
            assert time.monotonic() - started < 6, name  # fails, rather than waiting for the database
    finally:
        pg_cluster.start()
    _wait_for(lambda: "m" in store.heads())
    store.journal.append(_rec("m", 2))
    assert store.journal.version_numbers("m") == [1, 2]
    store.close()


def test_a_restart_costs_no_failed_call(pg_cluster: PgCluster, pg_url: str) -> None:
    """Pooled connections are checked when handed out: after a restart, the dead ones are replaced, not used."""
    j = PostgresJournal(pg_url)
    j.append(_rec("m", 1), create="i1")
    pg_cluster.restart()
    assert j.heads()["m"].version == 1
    j.append(_rec("m", 2))
    j.close()


def test_a_feed_raises_when_its_connection_is_terminated(pg_cluster: PgCluster, pg_url: str) -> None:
    j = PostgresJournal(pg_url)
    feed = j.changes()
    assert pg_cluster.terminate_listeners() >= 1
    with pytest.raises(JournalUnreachableError, match="change feed"):
        for _ in range(50):  # the termination reaches the client within a wait or two
            feed.wait(0.2)
    feed.close()
    fresh = j.changes()  # what a follower does next: a new feed, then re-read the journal
    j.append(_rec("m", 1), create="i1")
    assert [n.model for n in fresh.wait(5)] == ["m"]
    fresh.close()
    j.close()


def test_an_edit_lock_dies_with_its_connection(pg_cluster: PgCluster, pg_url: str) -> None:
    a, b = PostgresJournal(pg_url), PostgresJournal(pg_url)
    with a.edit_lock("m"):
        with pytest.raises(JournalUnreachableError, match="edit lock"), b.edit_lock("m", timeout_s=0.2):
            pass
        pg_cluster.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = "
            "'morphserve-lock' AND datname = current_database()",
            _db(pg_url),
        )
        with b.edit_lock("m", timeout_s=5):  # the server released the dead session's lock
            pass
    # a's block ended without an error although its connection was gone; its next lock works on a new one
    with a.edit_lock("m", timeout_s=5):
        pass
    a.close()
    b.close()


# -- concurrency ----------------------------------------------------------------------------------------------
def test_concurrent_appends_of_one_version_exactly_one_wins(pg_url: str) -> None:
    a, b = PostgresJournal(pg_url), PostgresJournal(pg_url)
    a.append(_rec("m", 1), create="i1")
    for version in range(2, 6):
        barrier = threading.Barrier(2)
        results: dict[str, str] = {}

        def race(
            name: str,
            j: PostgresJournal,
            version: int = version,
            barrier: threading.Barrier = barrier,
            results: dict[str, str] = results,
        ) -> None:
            try:
                barrier.wait(5)
                # Both rows are inserted before either commits: the second waits on the first's key, then loses.
                j.append(_rec("m", version, {"fc": name}), before_commit=lambda: time.sleep(0.1))
                results[name] = "won"
            except VersionConflictError as e:
                results[name] = e.message

        threads = [threading.Thread(target=race, args=(n, j)) for n, j in (("a", a), ("b", b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert sorted(r == "won" for r in results.values()) == [False, True], results
        loser = next(r for r in results.values() if r != "won")
        assert f"m v{version} exists" in loser
        winner = next(n for n, r in results.items() if r == "won")
        assert a.get("m", version).blobs == {"fc": winner}  # type: ignore[union-attr]
    assert a.version_numbers("m") == [1, 2, 3, 4, 5]
    a.close()
    b.close()


def test_appends_run_concurrently_with_each_other_but_not_with_a_sweep(pg_url: str) -> None:
    slow, fast, sweeper = PostgresJournal(pg_url), PostgresJournal(pg_url), PostgresJournal(pg_url)
    slow.append(_rec("m", 1), create="i1")
    fast.append(_rec("n", 1), create="i2")
    inside, release, swept = threading.Event(), threading.Event(), threading.Event()

    def slow_append() -> None:
        slow.append(_rec("m", 2, {"fc": "slow"}), before_commit=lambda: (inside.set(), release.wait(10)))

    def sweep() -> None:
        with sweeper.sweep_lock() as referenced:
            assert "slow" in referenced  # it ran after the slow append committed
            swept.set()

    t1 = threading.Thread(target=slow_append)
    t1.start()
    assert inside.wait(5)
    fast.append(_rec("n", 2))  # while the slow one is inside its transaction: not blocked
    t2 = threading.Thread(target=sweep)
    t2.start()
    assert not swept.wait(0.5)  # the sweep waits for the append in flight
    release.set()
    t1.join(10)
    assert swept.wait(10)
    t2.join(10)
    for j in (slow, fast, sweeper):
        j.close()


# -- blobs ----------------------------------------------------------------------------------------------------
def test_blobs_are_chunked_deduplicated_and_survive_concurrent_puts(pg_cluster: PgCluster, pg_url: str) -> None:
    a, b = PostgresBlobs(pg_url), PostgresBlobs(pg_url)
    data = os.urandom(3 * CHUNK + 12345)
    digest = encode({"w": __import__("torch").zeros(1)})[0]  # any name: blobs do not check, the Store does
    threads = [threading.Thread(target=x.put, args=(digest, data)) for x in (a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert b.get(digest) == data
    rows = pg_cluster.execute(
        f"SELECT count(*), sum(length(data)) FROM blob_chunks WHERE digest = '{digest}'", _db(pg_url)
    )
    assert rows == [(4, len(data))]  # one copy, four chunks
    a.put("e" * 64, b"")
    assert a.get("e" * 64) == b""
    assert a.delete([digest, "e" * 64, "f" * 64]) == 2 and a.present([digest]) == set()
    with pytest.raises(BlobCorruptError, match="missing"):
        b.get(digest)
    a.close()
    b.close()


def test_cached_blobs_serve_from_the_cache_while_the_database_is_down(
    pg_cluster: PgCluster, pg_url: str, tmp_path: Path
) -> None:
    writer = open_postgres(pg_url, None, tmp_path / "writer-cache")
    reader = open_postgres(pg_url, None, tmp_path / "reader-cache")
    cached, other = encode({"w": __import__("torch").ones(8)}), encode({"w": __import__("torch").zeros(8)})
    for digest, data in (cached, other):
        writer.blobs.put(digest, data)
    assert reader.tensors(cached[0])["w"].sum() == 8  # fetched once: now in the reader's cache
    assert isinstance(reader.blobs, CachedBlobs) and reader.blobs.local.present([cached[0]]) == {cached[0]}
    pg_cluster.stop()
    try:
        assert reader.tensors(cached[0])["w"].sum() == 8  # served from the cache, no database needed
        with pytest.raises(JournalUnreachableError):
            reader.tensors(other[0])  # never cached: needs the database
    finally:
        pg_cluster.start()
    _wait_for(lambda: reader.tensors(other[0])["w"].sum() == 0)
    writer.close()
    reader.close()


# -- settings of the connections ------------------------------------------------------------------------------
def test_synchronous_commit_is_on_whatever_the_database_default(pg_cluster: PgCluster, pg_url: str) -> None:
    pg_cluster.execute(f'ALTER DATABASE "{_db(pg_url)}" SET synchronous_commit TO off')
    j = PostgresJournal(pg_url)
    j.heartbeat(ReplicaRecord("r", "http://x", {}, 0.0, 0.0))  # turns it off for its own transaction only
    for _ in range(3):
        with j._conn() as conn:
            assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
    with psycopg.connect(pg_url) as plain:  # the database's default really is off
        assert plain.execute("SHOW synchronous_commit").fetchone() == ("off",)
    j.close()


def test_a_read_only_database_or_missing_privileges_refuse_writes(pg_cluster: PgCluster, pg_url: str) -> None:
    db = _db(pg_url)
    PostgresJournal(pg_url).close()  # the schema exists
    role = f"reader_{uuid.uuid4().hex[:8]}"
    pg_cluster.execute(f"CREATE ROLE {role} LOGIN")
    try:
        pg_cluster.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}", db)
        reader = PostgresJournal(pg_cluster.url(db, user=role))
        assert reader.heads() == {}  # reading is allowed
        with pytest.raises(StoreUnavailableError, match="cannot be written") as e:
            reader.append(_rec("m", 1), create="i1")
        assert not isinstance(e.value, JournalUnreachableError)  # not a retry-later: the privilege is missing
        reader.close()
    finally:
        pg_cluster.execute(f"DROP OWNED BY {role}", db)
        pg_cluster.execute(f"DROP ROLE {role}")
    pg_cluster.execute(f'ALTER DATABASE "{db}" SET default_transaction_read_only TO on')
    ro = PostgresJournal(pg_url)  # opening only reads the schema version
    with pytest.raises(StoreUnavailableError, match="read-only") as e:
        ro.append(_rec("m", 1), create="i1")
    assert not isinstance(e.value, JournalUnreachableError)
    ro.close()


def test_a_full_disk_is_a_storage_error_that_leaves_nothing(pg_cluster: PgCluster, pg_url: str) -> None:
    """The tables on a 2 MiB tmpfs (the `tiny` tablespace): PostgreSQL fails with a real SQLSTATE 53100."""
    if pg_cluster.tiny is None:
        pytest.skip("the tmpfs tablespace needs root (a private mount namespace); CI runs as root")
    db = _db(pg_url)
    j, blobs = PostgresJournal(pg_url), PostgresBlobs(pg_url)
    for table in ("blob_chunks", "versions"):
        pg_cluster.execute(f"ALTER TABLE {table} SET TABLESPACE {pg_cluster.tiny}", db)
    j.append(_rec("m", 1), create="i1")  # a small row fits
    with pytest.raises(StorageFullError) as e:
        j.append(_rec("m", 2, spec=os.urandom(3 * CHUNK).hex()))
    assert e.value.needed and e.value.needed > 6 * CHUNK and "m v2" in e.value.message and db in e.value.message
    assert j.version_numbers("m") == [1]
    big = os.urandom(4 * CHUNK)
    with pytest.raises(StorageFullError) as e:
        blobs.put("a" * 64, big)
    assert e.value.needed == len(big) and db in e.value.message
    assert blobs.present(["a" * 64]) == set() and list(blobs.listing()) == []
    j.close()
    blobs.close()


# -- open_store: start-up, layout, --fresh --------------------------------------------------------------------
def test_open_store_gives_up_on_an_unreachable_database_after_a_bounded_wait(tmp_path: Path) -> None:
    from tests.conftest import free_port

    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{free_port()}/nowhere"
    started = time.monotonic()
    with pytest.raises(JournalUnreachableError) as e:
        open_store(Settings(journal=url, state_dir=tmp_path), wait_s=1.0)
    assert time.monotonic() - started < 10
    assert "postgresql://postgres@127.0.0.1:" in e.value.message and "tried for 1 s" in e.value.message
    assert PASSWORD not in e.value.message


def test_open_store_puts_blobs_in_the_database_or_the_blob_dir_with_a_local_cache(pg_url: str, tmp_path: Path) -> None:
    import torch

    in_db = open_store(Settings(journal=pg_url, state_dir=tmp_path / "a"))
    assert isinstance(in_db.journal, PostgresJournal) and isinstance(in_db.blobs, CachedBlobs)
    assert isinstance(in_db.blobs.remote, PostgresBlobs) and in_db.blobs.local.root == tmp_path / "a" / "blob-cache"
    digest, data = encode({"w": torch.arange(4.0)})
    in_db.blobs.put(digest, data)
    shared = open_store(Settings(journal=pg_url, state_dir=tmp_path / "b", blob_dir=tmp_path / "shared"))
    assert isinstance(shared.blobs, CachedBlobs) and isinstance(shared.blobs.remote, DirBlobs)
    shared.blobs.put(digest, data)
    assert (tmp_path / "shared").glob("*/*.safetensors") and shared.blobs.remote.present([digest]) == {digest}
    assert torch.equal(
        open_store(Settings(journal=pg_url, state_dir=tmp_path / "c")).tensors(digest)["w"], torch.arange(4.0)
    )
    assert (tmp_path / "c" / "blob-cache").glob("*/*.safetensors")


def test_fresh_is_refused_while_another_replica_is_alive(pg_cluster: PgCluster, pg_url: str, tmp_path: Path) -> None:
    first = open_store(Settings(journal=pg_url, state_dir=tmp_path / "a"))
    first.journal.append(_rec("m", 1), create="i1")
    first.heartbeat(ReplicaRecord("replica-a", "http://10.0.0.1:8000", {"m": 1}, time.time(), 0.0))
    with pytest.raises(StoreError, match="--fresh would empty the shared journal") as e:
        open_store(Settings(journal=pg_url, state_dir=tmp_path / "b", fresh=True))
    assert "replica-a (http://10.0.0.1:8000)" in e.value.message
    assert first.heads()["m"].version == 1  # nothing was touched
    pg_cluster.execute("UPDATE replicas SET last_seen = last_seen - 60", _db(pg_url))  # it stopped a minute ago
    fresh = open_store(Settings(journal=pg_url, state_dir=tmp_path / "b", fresh=True))
    assert fresh.heads() == {} and first.heads() == {} and fresh.replicas() == []


def test_the_journal_setting_is_validated_without_repeating_its_password() -> None:
    for bad in ("mysql://u:hunter2@h/db", "postgresql://u:hunter2@h", "postgresql:///db", "sqlite3"):
        with pytest.raises(ValidationError) as e:
            Settings(journal=bad)
        assert "postgresql://user[:password]@host[:port]/database" in str(e.value) and "hunter2" not in str(e.value)
    assert Settings(journal="postgresql://u:p@db.internal:5432/morphserve").journal_url is not None
    assert Settings(journal="sqlite").journal_url is None
    with pytest.raises(ValidationError, match="blob_dir needs a journal"):
        Settings(journal="memory", blob_dir=Path("/tmp/x"))


def test_while_connecting_fails_an_attempt_knocks_first_and_fails_at_once() -> None:
    """Issue 27: on a partition a libpq connect waits out connect_timeout and TCP resends its SYN only after 1, 3,
    7 s; while connecting fails, each attempt first knocks on the port (PROBE_S) so that it fails at once, and a
    network that heals is found by the next attempt. A reachable database is never knocked at."""
    import socket

    from morphserve.store.pg_database import PROBE_S, Database

    with socket.socket() as s:  # a port nothing listens on (bound, never listening: connect is refused)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        db = Database(f"postgresql://u@127.0.0.1:{port}/db")
        db.knock()  # no failure yet: no knock, nothing raised
        db.failure = "connection refused"
        t0 = time.monotonic()
        with pytest.raises(psycopg.OperationalError, match=f"127.0.0.1:{port}"):
            db.knock()
        assert time.monotonic() - t0 < PROBE_S + 0.5
    assert Database("postgresql://u@/db?host=/var/run/postgresql")._tcp is None  # a socket: never knocked
    assert Database("postgresql://u@h1,h2/db")._tcp is None  # several hosts: never knocked
    assert Database("postgresql://u@db.example:6543/db")._tcp == ("db.example", 6543)


def test_a_reachable_database_is_connected_to_after_a_knock(pg_url: str) -> None:
    from morphserve.store.pg_database import Database

    db = Database(pg_url)
    db.failure = "it was down a moment ago"
    with db.connect("morphserve-test", "the test database") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert db.failure is None  # connected: the failure is over

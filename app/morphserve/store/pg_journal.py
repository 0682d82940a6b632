"""The shared journal: PostgreSQL, one row per committed version, followed by every replica.

Transactions and locks:
- `append` runs in one transaction that holds the sweep lock SHARED (`pg_advisory_xact_lock_shared`), so appends
  run concurrently with each other and never with a blob sweep, which holds it exclusively (see Store). The
  (model, version) primary key makes a number taken by another replica a `VersionConflictError`. The wake-up
  (`pg_notify`) is sent inside the transaction, so followers hear of a version only once it has committed.
- `synchronous_commit` is set `on` per connection (the pool's configure hook), whatever the server's or the
  database's default, so an acknowledged edit is on disk (and on a synchronous standby, where one is configured).
  Only heartbeats turn it off, per transaction: losing the last heartbeat in a crash costs nothing.
- `edit_lock` is a session-level advisory lock on a connection of its own (a separate small pool), held while an
  editor catches up, validates and commits; the database releases it if the replica dies. It is only an
  optimisation of who goes first: the primary key alone keeps two editors from committing the same version.

The pools reconnect by themselves: every call checks its connection first, and a call while the database is down
fails with `JournalUnreachableError` (Retry-After 1) instead of waiting for it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import Any

import psycopg
from psycopg import errors as pgerr

from .journal_reads import COLUMNS, DIGESTS_REFERENCED, VersionReads, check_rev
from .locks import EDIT_LOCK_TIMEOUT_S
from .pg_database import NOW, Database
from .pg_schema import EDIT_LOCKS, JOURNAL_TABLES, SWEEP_LOCK
from .records import (
    Doc,
    Head,
    JournalUnreachableError,
    Notice,
    ReplicaRecord,
    StorageFullError,
    VersionConflictError,
    VersionRecord,
)

log = logging.getLogger("morphserve.store")

#: The NOTIFY channel of every change feed.
CHANNEL = "morphserve"


def _sync_commit_on(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SET synchronous_commit TO on")


def _unlock_all(conn: psycopg.Connection[Any]) -> None:
    """Pool reset hook of the edit-lock connections: no lock survives its `with` block on a reused connection."""
    conn.execute("SELECT pg_advisory_unlock_all()")


class PostgresJournal(VersionReads):
    PARAM = "%s"

    def __init__(self, url: str, *, pool_size: int = 4, edit_lock_timeout_s: float = EDIT_LOCK_TIMEOUT_S) -> None:
        self.db = Database(url)
        self.where = self.db.where
        self.what = f"the journal {self.where}"
        self.edit_lock_timeout_s = edit_lock_timeout_s
        self.db.migrate(self.what)
        self._pool = self.db.pool("morphserve", self.what, max_size=pool_size, configure=_sync_commit_on)
        try:
            self._locks = self.db.pool("morphserve-lock", self.what, min_size=0, max_size=16, reset=_unlock_all)
        except BaseException:
            self._pool.close()
            raise

    def close(self) -> None:
        self._locks.close()
        self._pool.close()

    def _conn(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        return self.db.borrow(self._pool, self.what)

    def _rows(self, sql: str, args: tuple[Any, ...] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
        with self._conn() as conn:
            return conn.execute(sql, args).fetchall()

    def _write(self, *statements: tuple[str, tuple[Any, ...]]) -> None:
        with self._conn() as conn, conn.transaction():
            for sql, args in statements:
                conn.execute(sql, args)

    # -- writing -----------------------------------------------------------------------------------------
    def append(
        self, r: VersionRecord, before_commit: Callable[[], None] | None = None, *, create: str | None = None
    ) -> None:
        row = (
            r.model,
            r.version,
            r.parent,
            json.dumps(r.ops),
            json.dumps(r.spec),
            json.dumps(r.blobs),
            json.dumps(r.shapes),
            r.created_at,
            r.staged,
        )
        try:
            with self._conn() as conn:
                try:
                    with conn.transaction():
                        self._insert(conn, r, row, create, before_commit)
                except pgerr.IntegrityError as e:  # which rule the row broke, by the constraint's name
                    raise self._conflict(r, e.diag.constraint_name or "") from None
        except StorageFullError:
            needed = sum(len(v) for v in row if isinstance(v, str)) + 8192  # the row and about a page of index
            raise StorageFullError(
                f"no space left to journal {r.model} v{r.version} in {self.where}; about {needed} bytes were needed",
                needed,
            ) from None

    @staticmethod
    def _insert(
        conn: psycopg.Connection[Any],
        r: VersionRecord,
        row: tuple[Any, ...],
        create: str | None,
        before_commit: Callable[[], None] | None,
    ) -> None:
        conn.execute("SELECT pg_advisory_xact_lock_shared(%s, %s)", SWEEP_LOCK)
        if create is not None:
            conn.execute(
                f"INSERT INTO models (model, incarnation, created_at) VALUES (%s, %s, {NOW})", (r.model, create)
            )
        conn.execute(
            f"INSERT INTO versions ({COLUMNS}, committed_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, {NOW})", row
        )
        if not r.staged:  # it serves: the model's current version moves to it
            conn.execute("UPDATE models SET current = %s WHERE model = %s", (r.version, r.model))
        if r.blobs:
            conn.cursor().executemany(
                "INSERT INTO version_blobs VALUES (%s, %s, %s, %s)",
                [(r.model, r.version, n, d) for n, d in r.blobs.items()],
            )
        if before_commit is not None:
            before_commit()
        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, json.dumps({"model": r.model, "version": r.version})))

    def _conflict(self, r: VersionRecord, constraint: str) -> VersionConflictError:
        if constraint == "models_pkey":
            return VersionConflictError.exists(r.model, self.where)
        if constraint == "versions_model_fkey":
            return VersionConflictError.missing(r.model, self.where)
        return VersionConflictError.taken(r.model, r.version, self.where)

    def delete_versions(self, model: str, versions: Iterable[int]) -> None:
        numbers = list(versions)
        self._write(
            ("DELETE FROM versions WHERE model = %s AND version = ANY(%s)", (model, numbers)),
            ("DELETE FROM pins WHERE model = %s AND version = ANY(%s)", (model, numbers)),
        )

    def delete_model(self, model: str) -> None:
        payload = json.dumps({"model": model, "version": None})
        self._write(
            ("DELETE FROM models WHERE model = %s", (model,)),
            ("DELETE FROM pins WHERE model = %s", (model,)),
            ("SELECT pg_notify(%s, %s)", (CHANNEL, payload)),
        )

    def pin(self, model: str, version: int) -> None:
        self._write(("INSERT INTO pins VALUES (%s, %s) ON CONFLICT DO NOTHING", (model, version)))

    def unpin(self, model: str, version: int) -> None:
        self._write(("DELETE FROM pins WHERE model = %s AND version = %s", (model, version)))

    @contextmanager
    def sweep_lock(self) -> Iterator[set[str]]:
        with self._conn() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", SWEEP_LOCK)
            yield {d for (d,) in conn.execute(DIGESTS_REFERENCED)}

    def reset(self) -> None:
        self._write((f"TRUNCATE {', '.join(JOURNAL_TABLES)}", ()))

    def set_current(self, model: str, version: int) -> None:
        with self._conn() as conn, conn.transaction():
            self._lock_model(conn, model)
            self._set_current(conn, model, version)

    def _lock_model(self, conn: psycopg.Connection[Any], model: str) -> None:
        """Lock the model's row: its documents and current pointer change one writer at a time."""
        if conn.execute("SELECT 1 FROM models WHERE model = %s FOR UPDATE", (model,)).fetchone() is None:
            raise VersionConflictError.missing(model, self.where)

    def _set_current(self, conn: psycopg.Connection[Any], model: str, version: int) -> None:
        found = conn.execute("SELECT 1 FROM versions WHERE model = %s AND version = %s", (model, version))
        if found.fetchone() is None:
            raise VersionConflictError.missing_version(model, version, self.where)
        conn.execute("UPDATE models SET current = %s WHERE model = %s", (version, model))
        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, json.dumps({"model": model, "version": version})))

    def put_doc(
        self,
        model: str,
        kind: str,
        key: str,
        value: dict[str, Any],
        *,
        expect_rev: int | None = None,
        digest: str | None = None,
        current: int | None = None,
    ) -> Doc:
        with self._conn() as conn, conn.transaction():
            self._lock_model(conn, model)
            found = conn.execute(
                "SELECT rev FROM docs WHERE model = %s AND kind = %s AND key = %s", (model, kind, key)
            ).fetchone()
            rev = check_rev(model, kind, key, found[0] if found else 0, expect_rev)
            row = conn.execute(
                f"INSERT INTO docs VALUES (%s, %s, %s, %s, %s, {NOW}, %s) ON CONFLICT (model, kind, key) DO UPDATE "
                "SET value = excluded.value, rev = excluded.rev, updated_at = excluded.updated_at, "
                "digest = excluded.digest RETURNING updated_at",
                (model, kind, key, json.dumps(value), rev, digest),
            ).fetchone()
            if current is not None:
                self._set_current(conn, model, current)
            self._bump(conn, model)
        return Doc(model, kind, key, value, rev, float(row[0]) if row else 0.0, digest)

    def delete_doc(self, model: str, kind: str, key: str) -> None:
        with self._conn() as conn, conn.transaction():
            self._lock_model(conn, model)
            conn.execute("DELETE FROM docs WHERE model = %s AND kind = %s AND key = %s", (model, kind, key))
            self._bump(conn, model)

    @staticmethod
    def _bump(conn: psycopg.Connection[Any], model: str) -> None:
        conn.execute("UPDATE models SET docs_rev = docs_rev + 1 WHERE model = %s", (model,))
        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, json.dumps({"model": model, "version": 0})))

    @contextmanager
    def edit_lock(self, model: str, *, timeout_s: float | None = None) -> Iterator[None]:
        timeout = self.edit_lock_timeout_s if timeout_s is None else timeout_s
        key = (EDIT_LOCKS, f"edit:{model}")
        with self.db.borrow(self._locks, self.what) as conn:
            try:
                conn.execute("SELECT set_config('lock_timeout', %s, false)", (f"{max(1, int(timeout * 1000))}ms",))
                conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", key)
            except pgerr.LockNotAvailable:
                raise JournalUnreachableError(
                    f"another editor of {model!r} has held its edit lock in {self.where} for {timeout:g} s; try again"
                ) from None
            try:
                yield
            finally:
                try:
                    conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", key)
                except psycopg.Error:
                    conn.close()  # the server releases a dead session's locks; the pool drops the connection

    # -- replicas ----------------------------------------------------------------------------------------
    def heartbeat(self, replica: ReplicaRecord) -> None:
        with self._conn() as conn, conn.transaction():
            conn.execute("SET LOCAL synchronous_commit TO off")
            conn.execute(
                f"INSERT INTO replicas (id, address, applied, started_at, last_seen) VALUES (%s, %s, %s, %s, {NOW}) "
                "ON CONFLICT (id) DO UPDATE SET address = excluded.address, applied = excluded.applied, "
                "started_at = excluded.started_at, last_seen = excluded.last_seen",
                (replica.id, replica.address, json.dumps(replica.applied), replica.started_at),
            )

    def replicas(self) -> list[ReplicaRecord]:
        rows = self._rows("SELECT id, address, applied, started_at, last_seen FROM replicas ORDER BY last_seen DESC")
        return [ReplicaRecord(*row) for row in rows]

    def forget_replica(self, replica_id: str) -> None:
        self._write(("DELETE FROM replicas WHERE id = %s", (replica_id,)))

    def now(self) -> float:
        """The database's clock (seconds since the epoch): what `last_seen` and `committed_at` are measured by."""
        return float(self._rows(f"SELECT {NOW}")[0][0])

    def changes(self) -> PostgresChangeFeed:
        return PostgresChangeFeed(self.db, self.what)

    # -- reading -----------------------------------------------------------------------------------------
    @staticmethod
    def _record(row: tuple[Any, ...]) -> VersionRecord:
        return VersionRecord(row[0], row[1], row[2], row[3], row[4], row[5], row[7], row[6], bool(row[8]))

    def heads(self) -> dict[str, Head]:
        rows = self._rows(
            "SELECT m.model, m.incarnation, v.version, v.committed_at, COALESCE(m.current, v.version), m.docs_rev "
            "FROM models m CROSS JOIN LATERAL (SELECT version, committed_at FROM versions WHERE model = m.model "
            "ORDER BY version DESC LIMIT 1) v"
        )
        return {r[0]: Head(*r) for r in rows}

    def models(self) -> list[str]:
        return [r[0] for r in self._rows("SELECT DISTINCT model FROM versions ORDER BY model")]


class PostgresChangeFeed:
    """LISTEN on a connection of its own. It runs nothing but LISTEN (and is named `morphserve-feed`), so that a
    backend listing shows what it is; a notification the feed misses is caught up by the follower's poll."""

    def __init__(self, db: Database, what: str) -> None:
        self.what = what
        self._db = db
        self._conn = db.connect("morphserve-feed", what)
        try:
            self._conn.execute(f"LISTEN {CHANNEL}")
        except psycopg.Error as e:
            self._conn.close()
            raise JournalUnreachableError(f"{what} cannot be followed: {db.translate(e, what).message}") from None

    def wait(self, timeout: float) -> list[Notice]:
        try:
            got = list(self._conn.notifies(timeout=max(timeout, 0.0), stop_after=1))
            if got:  # and whatever else has arrived meanwhile, without waiting again
                got += self._conn.notifies(timeout=0.0)
        except psycopg.Error as e:
            cause = self._db.scrub(str(e))
            raise JournalUnreachableError(f"the change feed of {self.what} was cut off: {cause}") from None
        return [n for n in map(_notice, (g.payload for g in got)) if n is not None]

    def close(self) -> None:
        with suppress(psycopg.Error):
            self._conn.close()


def _notice(payload: str) -> Notice | None:
    try:
        data = json.loads(payload)
        version = data["version"]
        return Notice(str(data["model"]), None if version is None else int(version))
    except (ValueError, KeyError, TypeError):
        log.warning("ignoring a notification on channel %s that is not morphserve's: %.80r", CHANNEL, payload)
        return None

"""The embedded journal: SQLite in WAL mode under the state dir, one row per committed version.

`synchronous=FULL`: a commit is durable once `append` returns. Several processes may share the file (the workers
of `serve --workers N`): SQLite's write lock serialises their transactions (so the sweep lock, a write
transaction, excludes every append), and `busy_timeout` lets one wait for another instead of failing. Edits of one
model are serialised across those processes by a lock file per model under `<state_dir>/locks` (locks.py). There
is no change feed: followers poll `heads()`, which is one indexed query.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from typing import Any

from .journal_reads import COLUMNS, DIGESTS_REFERENCED, HEADS, VersionReads, check_rev
from .locks import EDIT_LOCK_TIMEOUT_S, file_lock
from .records import (
    Doc,
    Head,
    JournalError,
    JournalUnreachableError,
    ReplicaRecord,
    StorageFullError,
    StoreError,
    StoreUnavailableError,
    VersionConflictError,
    VersionRecord,
)
from .sqlite_wal import DAMAGED_SUFFIX, wal_damage

SCHEMA_VERSION = 4
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS versions (
    model      TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    parent     INTEGER,
    ops        TEXT    NOT NULL,
    spec       TEXT    NOT NULL,
    blobs      TEXT    NOT NULL,
    shapes     TEXT    NOT NULL,
    created_at REAL    NOT NULL,
    committed_at REAL,
    staged     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (model, version)
);
CREATE TABLE IF NOT EXISTS pins (
    model   TEXT    NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (model, version)
);
CREATE TABLE IF NOT EXISTS version_blobs (
    model   TEXT    NOT NULL,
    version INTEGER NOT NULL,
    node    TEXT    NOT NULL,
    digest  TEXT    NOT NULL,
    PRIMARY KEY (model, version, node)
);
CREATE INDEX IF NOT EXISTS version_blobs_digest ON version_blobs (digest);
CREATE TABLE IF NOT EXISTS models (
    model       TEXT PRIMARY KEY,
    incarnation TEXT NOT NULL,
    created_at  REAL NOT NULL,
    current     INTEGER,
    docs_rev    INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS docs (
    model      TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    value      TEXT    NOT NULL,
    rev        INTEGER NOT NULL,
    updated_at REAL    NOT NULL,
    digest     TEXT,
    PRIMARY KEY (model, kind, key)
);
CREATE TABLE IF NOT EXISTS replicas (
    id         TEXT PRIMARY KEY,
    address    TEXT NOT NULL,
    applied    TEXT NOT NULL,
    started_at REAL NOT NULL,
    last_seen  REAL NOT NULL
);
"""
_TABLES = ("versions", "pins", "version_blobs", "models", "replicas", "docs")
FILES = ("journal.sqlite3", "journal.sqlite3-wal", "journal.sqlite3-shm", "journal.sqlite3-wal" + DAMAGED_SUFFIX)


def translate(e: sqlite3.Error, where: str) -> StoreError:
    """The store error a SQLite failure means, by its result code (never by its message)."""
    code = getattr(e, "sqlite_errorcode", 0) & 0xFF
    if isinstance(e, sqlite3.IntegrityError):
        return VersionConflictError(f"journal {where}: {e}")
    if code == 13:  # SQLITE_FULL
        return StorageFullError(f"the disk under the journal {where} is full")
    if code in (3, 8, 14):  # SQLITE_PERM, SQLITE_READONLY, SQLITE_CANTOPEN
        return StoreUnavailableError(f"the journal {where} cannot be written: {e}")
    if code in (5, 6):  # SQLITE_BUSY, SQLITE_LOCKED: another process holds the write lock for too long
        return JournalUnreachableError(f"the journal {where} is busy: {e}")
    if code == 10:  # SQLITE_IOERR
        return StoreUnavailableError(f"the journal {where} cannot be written (I/O error): {e}")
    return JournalError(f"journal {where} cannot be read: {e}")


class SQLiteJournal(VersionReads):
    def __init__(self, path: Path, *, fsync: bool = True, edit_lock_timeout_s: float = EDIT_LOCK_TIMEOUT_S) -> None:
        self.path = path
        self.where = str(path)
        self.locks = path.parent / "locks"
        self.edit_lock_timeout_s = edit_lock_timeout_s
        self._lock = threading.Lock()
        #: Why this journal must take no writes (a damaged page or write-ahead log), or None. Reads go on: what
        #: can be read is served, and what cannot is reported by the read that fails.
        self.damage: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.damage = self._check_wal()  # before SQLite opens the log and discards what it cannot verify
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'OFF'}")
            self.damage = self.damage or self._check_pages()
            if self.damage is None:  # a damaged journal is left exactly as found, for recovery
                self._migrate()
        except OSError as e:
            raise StoreUnavailableError(f"journal {path} cannot be opened: {e.strerror or e}") from None
        except sqlite3.Error as e:
            raise translate(e, self.where) from None

    def _check_wal(self) -> str | None:
        """A damaged `-wal` file is copied aside before SQLite opens it (SQLite drops the frames it cannot verify
        and then overwrites them). While the copy is there, the journal takes no edits: the versions lost with
        those frames would otherwise be numbered again, for different graphs."""
        wal = self.path.with_name(self.path.name + "-wal")
        kept = wal.with_name(wal.name + DAMAGED_SUFFIX)
        if kept.exists():
            return (
                f"a damaged write-ahead log of the journal {self.path} is kept at {kept}: recover the versions "
                f"it lost, then move it away to take edits again"
            )
        damage = wal_damage(wal)
        if damage is None:
            return None
        try:
            shutil.copy2(wal, kept)
        except OSError as e:
            return f"{damage}; copying it to {kept} failed ({e.strerror or e}), so recover it from {wal} now"
        return f"{damage}; a copy is kept at {kept}: recover the versions it lost, then move it away to take edits"

    def _check_pages(self) -> str | None:
        """SQLite's `quick_check` (every page's structure, not index contents: milliseconds for a journal of
        thousands of versions): a damaged page would otherwise surface only when a query happens to read it."""
        try:
            problems = [r[0] for r in self._db.execute("PRAGMA quick_check(20)").fetchall()]
        except sqlite3.DatabaseError as e:
            return f"the journal {self.path} is damaged: {e}"
        if problems == ["ok"]:
            return None
        lines = [line for p in problems for line in p.splitlines() if line and not line.startswith("***")] or problems
        return (
            f"the journal {self.path} is damaged ({lines[0]}; {len(lines)} problem(s) found): recover what it "
            f"holds with `sqlite3 {self.path} .recover | sqlite3 NEW_FILE`"
        )

    def _migrate(self) -> None:
        """Create the schema, or bring a journal of an older release up to SCHEMA_VERSION."""
        with self._txn():
            for stmt in filter(None, (s.strip() for s in _SCHEMA.split(";"))):
                self._db.execute(stmt)
            row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            found = int(row[0]) if row else 1
            if found > SCHEMA_VERSION:
                raise JournalError(
                    f"journal {self.path} has schema {found}, newer than this release's "
                    f"{SCHEMA_VERSION}: upgrade morphserve"
                )
            if found < 2:  # release 1 kept blob references only inside each row's JSON
                for model, version, blobs in self._db.execute("SELECT model, version, blobs FROM versions").fetchall():
                    self._db.executemany(
                        "INSERT OR IGNORE INTO version_blobs VALUES (?,?,?,?)",
                        [(model, version, n, d) for n, d in json.loads(blobs).items()],
                    )
            if found < 3:  # schema 3: models (with incarnations), replicas, and when each row committed
                if "committed_at" not in {c[1] for c in self._db.execute("PRAGMA table_info(versions)")}:
                    self._db.execute("ALTER TABLE versions ADD COLUMN committed_at REAL")
                self._db.execute("UPDATE versions SET committed_at = created_at WHERE committed_at IS NULL")
                for model, created in self._db.execute(
                    "SELECT model, MIN(created_at) FROM versions GROUP BY model ORDER BY model"
                ).fetchall():
                    self._db.execute(
                        "INSERT OR IGNORE INTO models (model, incarnation, created_at) VALUES (?,?,?)",
                        (model, uuid.uuid4().hex, created),
                    )
            if found < 4:  # schema 4: staged versions, the current-version pointer, model documents
                if "staged" not in {c[1] for c in self._db.execute("PRAGMA table_info(versions)")}:
                    self._db.execute("ALTER TABLE versions ADD COLUMN staged INTEGER NOT NULL DEFAULT 0")
                columns = {c[1] for c in self._db.execute("PRAGMA table_info(models)")}
                if "current" not in columns:
                    self._db.execute("ALTER TABLE models ADD COLUMN current INTEGER")
                if "docs_rev" not in columns:
                    self._db.execute("ALTER TABLE models ADD COLUMN docs_rev INTEGER NOT NULL DEFAULT 0")
                self._db.execute(
                    "UPDATE models SET current = (SELECT MAX(version) FROM versions v WHERE v.model = models.model) "
                    "WHERE current IS NULL"
                )
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    @contextmanager
    def _txn(self) -> Iterator[None]:
        """One write transaction; on any failure it is rolled back if SQLite has not already done so (it does on
        SQLITE_FULL, and a second ROLLBACK would raise over the real cause)."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                yield
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    with suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                raise

    def _write(self, fn: Callable[[], None]) -> None:
        try:
            with self._txn():
                fn()
        except sqlite3.Error as e:
            raise translate(e, self.where) from None

    def _execute(self, sql: str, args: tuple[Any, ...]) -> None:
        self._db.execute(sql, args)

    def close(self) -> None:
        with self._lock:
            self._db.close()

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
            int(r.staged),
        )

        def insert() -> None:
            exists = self._db.execute("SELECT 1 FROM models WHERE model=?", (r.model,)).fetchone() is not None
            if create is not None and exists:
                raise VersionConflictError.exists(r.model, self.where)
            if create is None and not exists:
                raise VersionConflictError.missing(r.model, self.where)
            if create is not None:
                self._db.execute(
                    "INSERT INTO models (model, incarnation, created_at) VALUES (?,?,?)", (r.model, create, time.time())
                )
            if self._db.execute("SELECT 1 FROM versions WHERE model=? AND version=?", (r.model, r.version)).fetchone():
                raise VersionConflictError.taken(r.model, r.version, self.where)
            self._db.execute(
                f"INSERT INTO versions ({COLUMNS}, committed_at) VALUES (?,?,?,?,?,?,?,?,?,?)", (*row, time.time())
            )
            if not r.staged:  # it serves: the model's current version moves to it
                self._db.execute("UPDATE models SET current=? WHERE model=?", (r.version, r.model))
            self._db.executemany(
                "INSERT INTO version_blobs VALUES (?,?,?,?)", [(r.model, r.version, n, d) for n, d in r.blobs.items()]
            )
            if before_commit is not None:
                before_commit()

        try:
            self._write(insert)
        except StorageFullError:
            needed = sum(len(v) for v in row if isinstance(v, str)) + 4096  # the row and about a page of index
            raise StorageFullError(
                f"no space left to journal {r.model} v{r.version} in {self.where}; about {needed} bytes were needed",
                needed,
            ) from None

    def delete_versions(self, model: str, versions: Iterable[int]) -> None:
        rows = [(model, v) for v in versions]

        def delete() -> None:
            for table in ("versions", "pins", "version_blobs"):
                self._db.executemany(f"DELETE FROM {table} WHERE model=? AND version=?", rows)

        self._write(delete)

    def delete_model(self, model: str) -> None:
        def delete() -> None:
            for table in ("versions", "pins", "version_blobs", "models", "docs"):
                self._db.execute(f"DELETE FROM {table} WHERE model=?", (model,))

        self._write(delete)

    def pin(self, model: str, version: int) -> None:
        self._write(lambda: self._execute("INSERT OR IGNORE INTO pins VALUES (?,?)", (model, version)))

    def unpin(self, model: str, version: int) -> None:
        self._write(lambda: self._execute("DELETE FROM pins WHERE model=? AND version=?", (model, version)))

    @contextmanager
    def sweep_lock(self) -> Iterator[set[str]]:
        try:
            with self._txn():
                yield {d for (d,) in self._db.execute(DIGESTS_REFERENCED)}
        except sqlite3.Error as e:
            raise translate(e, self.where) from None

    def reset(self) -> None:
        def wipe() -> None:
            for table in _TABLES:
                self._db.execute(f"DELETE FROM {table}")

        self._write(wipe)

    def set_current(self, model: str, version: int) -> None:
        def update() -> None:
            self._check_version(model, version)
            self._db.execute("UPDATE models SET current=? WHERE model=?", (version, model))

        self._write(update)

    def _check_version(self, model: str, version: int) -> None:
        if self._db.execute("SELECT 1 FROM versions WHERE model=? AND version=?", (model, version)).fetchone() is None:
            raise VersionConflictError.missing_version(model, version, self.where)

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
        now = time.time()
        out: list[Doc] = []

        def write() -> None:
            if self._db.execute("SELECT 1 FROM models WHERE model=?", (model,)).fetchone() is None:
                raise VersionConflictError.missing(model, self.where)
            row = self._db.execute("SELECT rev FROM docs WHERE model=? AND kind=? AND key=?", (model, kind, key))
            found = row.fetchone()
            rev = check_rev(model, kind, key, found[0] if found else 0, expect_rev)
            self._db.execute(
                "INSERT OR REPLACE INTO docs VALUES (?,?,?,?,?,?,?)",
                (model, kind, key, json.dumps(value), rev, now, digest),
            )
            if current is not None:
                self._check_version(model, current)
                self._db.execute("UPDATE models SET current=? WHERE model=?", (current, model))
            self._db.execute("UPDATE models SET docs_rev = docs_rev + 1 WHERE model=?", (model,))
            out.append(Doc(model, kind, key, value, rev, now, digest))

        self._write(write)
        return out[0]

    def delete_doc(self, model: str, kind: str, key: str) -> None:
        def delete() -> None:
            self._db.execute("DELETE FROM docs WHERE model=? AND kind=? AND key=?", (model, kind, key))
            self._db.execute("UPDATE models SET docs_rev = docs_rev + 1 WHERE model=?", (model,))

        self._write(delete)

    def edit_lock(self, model: str, *, timeout_s: float | None = None) -> AbstractContextManager[None]:
        return file_lock(self.locks, model, self.edit_lock_timeout_s if timeout_s is None else timeout_s)

    # -- replicas ----------------------------------------------------------------------------------------
    def heartbeat(self, replica: ReplicaRecord) -> None:
        row = (replica.id, replica.address, json.dumps(replica.applied), replica.started_at, time.time())
        self._write(lambda: self._execute("INSERT OR REPLACE INTO replicas VALUES (?,?,?,?,?)", row))

    def replicas(self) -> list[ReplicaRecord]:
        rows = self._rows("SELECT id, address, applied, started_at, last_seen FROM replicas ORDER BY last_seen DESC")
        return [ReplicaRecord(i, a, json.loads(ap), s, seen) for i, a, ap, s, seen in rows]

    def forget_replica(self, replica_id: str) -> None:
        self._write(lambda: self._execute("DELETE FROM replicas WHERE id=?", (replica_id,)))

    def changes(self) -> None:
        return None  # followers poll heads()

    # -- reading -----------------------------------------------------------------------------------------
    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as e:
                raise translate(e, self.where) from None

    def _record(self, row: tuple[Any, ...]) -> VersionRecord:
        """A row as a record; a damaged row is a JournalError naming the file, the model and the version, so that
        the operator can find it (the registry reports it and serves the other models)."""
        try:
            return VersionRecord(
                row[0],
                row[1],
                row[2],
                json.loads(row[3]),
                json.loads(row[4]),
                json.loads(row[5]),
                row[7],
                json.loads(row[6]),
                bool(row[8]),
            )
        except (ValueError, TypeError) as e:
            raise JournalError(
                f"journal {self.path}: the row of {row[0]!r} version {row[1]} is damaged ({e})"
            ) from None

    def models(self) -> list[str]:
        return [r[0] for r in self._rows("SELECT DISTINCT model FROM versions ORDER BY model")]

    def heads(self) -> dict[str, Head]:
        return {r[0]: Head(*r) for r in self._rows(HEADS)}

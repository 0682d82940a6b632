"""The embedded journal: SQLite in WAL mode under the state dir, one row per committed version.

`synchronous=FULL`: a commit is durable once `append` returns. Several processes may share the file (the workers
of `serve --workers N`): SQLite's write lock serialises their transactions, and `busy_timeout` lets one wait for
another instead of failing.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from .records import (
    JournalError,
    JournalUnreachableError,
    StorageFullError,
    StoreError,
    StoreUnavailableError,
    VersionConflictError,
    VersionRecord,
)

SCHEMA_VERSION = 2
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
"""
_COLUMNS = "model, version, parent, ops, spec, blobs, shapes, created_at"
FILES = ("journal.sqlite3", "journal.sqlite3-wal", "journal.sqlite3-shm")


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


class SQLiteJournal:
    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        self.path = path
        self.where = str(path)
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'OFF'}")
            self._migrate()
        except OSError as e:
            raise StoreUnavailableError(f"journal {path} cannot be opened: {e.strerror or e}") from None
        except sqlite3.Error as e:
            raise translate(e, self.where) from None

    def _migrate(self) -> None:
        """Create the schema, or bring a journal of an older release up to SCHEMA_VERSION."""
        with self._txn():
            for stmt in filter(None, (s.strip() for s in _SCHEMA.split(";"))):
                self._db.execute(stmt)
            row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            found = int(row[0]) if row else 1
            if found > SCHEMA_VERSION:
                raise JournalError(f"journal {self.path} has schema {found}, newer than this release's "
                                   f"{SCHEMA_VERSION}: upgrade morphserve")  # fmt: skip
            if found < 2:  # release 1 kept blob references only inside each row's JSON
                for model, version, blobs in self._db.execute("SELECT model, version, blobs FROM versions").fetchall():
                    self._db.executemany("INSERT OR IGNORE INTO version_blobs VALUES (?,?,?,?)",
                                         [(model, version, n, d) for n, d in json.loads(blobs).items()])  # fmt: skip
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
    def append(self, r: VersionRecord, before_commit: Callable[[], None] | None = None) -> None:
        row = (r.model, r.version, r.parent, json.dumps(r.ops), json.dumps(r.spec), json.dumps(r.blobs),
               json.dumps(r.shapes), r.created_at)  # fmt: skip

        def insert() -> None:
            self._db.execute(f"INSERT INTO versions ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)", row)
            self._db.executemany("INSERT INTO version_blobs VALUES (?,?,?,?)",
                                 [(r.model, r.version, n, d) for n, d in r.blobs.items()])  # fmt: skip
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
            for table in ("versions", "pins", "version_blobs"):
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
                yield {d for (d,) in self._db.execute("SELECT DISTINCT digest FROM version_blobs")}
        except sqlite3.Error as e:
            raise translate(e, self.where) from None

    def reset(self) -> None:
        def wipe() -> None:
            for table in ("versions", "pins", "version_blobs"):
                self._db.execute(f"DELETE FROM {table}")

        self._write(wipe)

    # -- reading -----------------------------------------------------------------------------------------
    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as e:
                raise translate(e, self.where) from None

    @staticmethod
    def _record(row: tuple[Any, ...]) -> VersionRecord:
        return VersionRecord(row[0], row[1], row[2], json.loads(row[3]), json.loads(row[4]), json.loads(row[5]),
                             row[7], json.loads(row[6]))  # fmt: skip

    def models(self) -> list[str]:
        return [r[0] for r in self._rows("SELECT DISTINCT model FROM versions ORDER BY model")]

    def latest(self, model: str) -> VersionRecord | None:
        rows = self._rows(f"SELECT {_COLUMNS} FROM versions WHERE model=? ORDER BY version DESC LIMIT 1", (model,))
        return self._record(rows[0]) if rows else None

    def get(self, model: str, version: int) -> VersionRecord | None:
        rows = self._rows(f"SELECT {_COLUMNS} FROM versions WHERE model=? AND version=?", (model, version))
        return self._record(rows[0]) if rows else None

    def versions(self, model: str) -> list[VersionRecord]:
        rows = self._rows(f"SELECT {_COLUMNS} FROM versions WHERE model=? ORDER BY version", (model,))
        return [self._record(r) for r in rows]

    def version_numbers(self, model: str) -> list[int]:
        return [r[0] for r in self._rows("SELECT version FROM versions WHERE model=? ORDER BY version", (model,))]

    def pins(self, model: str) -> set[int]:
        return {r[0] for r in self._rows("SELECT version FROM pins WHERE model=?", (model,))}

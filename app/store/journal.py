"""The journal: one SQLite row per committed version, the source of truth for what exists.

SQLite in WAL mode with `synchronous=FULL`: a commit is durable once `append` returns. A version's row names
its parent, its ops, its architecture spec and the blob of each layer; the row is written only after those
blobs are durable, so a row never refers to weights that are not on disk.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_SCHEMA = """
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
"""


_COLUMNS = "model, version, parent, ops, spec, blobs, shapes, created_at"


class JournalError(Exception):
    """The journal cannot be opened or read."""


class JournalConflict(Exception):
    """A version number was already taken (another writer got there first)."""


@dataclass(frozen=True)
class VersionRecord:
    model: str
    version: int
    parent: int | None
    ops: list[dict[str, Any]]
    spec: dict[str, Any]
    blobs: dict[str, str]  # layer node id -> blob digest (layers without tensors are absent)
    created_at: float
    shapes: dict[str, Any] = field(default_factory=dict)  # node id -> [probe a, probe b, datatype]


class Journal:
    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'OFF'}")
            self._db.executescript(_SCHEMA)
            self._db.execute("SELECT count(*) FROM versions").fetchone()
        except sqlite3.DatabaseError as e:
            raise JournalError(f"journal {path} cannot be read: {e}") from None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def append(self, r: VersionRecord) -> None:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                row = self._db.execute("SELECT max(version) FROM versions WHERE model=?", (r.model,)).fetchone()
                latest = row[0] or 0
                if r.version <= latest:
                    self._db.execute("ROLLBACK")
                    raise JournalConflict(f"{r.model} v{r.version} exists (latest {latest})")
                self._db.execute(
                    "INSERT INTO versions (model, version, parent, ops, spec, blobs, shapes, created_at) "
                    "VALUES (?,?,?,?,?,?,?,?)",
                    (r.model, r.version, r.parent, json.dumps(r.ops), json.dumps(r.spec), json.dumps(r.blobs),
                     json.dumps(r.shapes), r.created_at),
                )  # fmt: skip
                self._db.execute("COMMIT")
            except sqlite3.DatabaseError:
                self._db.execute("ROLLBACK")
                raise

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.DatabaseError as e:
                raise JournalError(f"journal {self.path} cannot be read: {e}") from None

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
        return [
            self._record(r)
            for r in self._rows(f"SELECT {_COLUMNS} FROM versions WHERE model=? ORDER BY version", (model,))
        ]

    def delete_versions(self, model: str, versions: list[int]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("DELETE FROM versions WHERE model=? AND version=?", [(model, v) for v in versions])
            self._db.executemany("DELETE FROM pins WHERE model=? AND version=?", [(model, v) for v in versions])
            self._db.execute("COMMIT")

    def delete_model(self, model: str) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM versions WHERE model=?", (model,))
            self._db.execute("DELETE FROM pins WHERE model=?", (model,))
            self._db.execute("COMMIT")

    def pin(self, model: str, version: int) -> None:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO pins VALUES (?,?)", (model, version))

    def unpin(self, model: str, version: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM pins WHERE model=? AND version=?", (model, version))

    def pins(self, model: str) -> set[int]:
        return {r[0] for r in self._rows("SELECT version FROM pins WHERE model=?", (model,))}

    def referenced_blobs(self) -> set[str]:
        refs: set[str] = set()
        for (blobs,) in self._rows("SELECT blobs FROM versions"):
            refs.update(json.loads(blobs).values())
        return refs

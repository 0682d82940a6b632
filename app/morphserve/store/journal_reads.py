"""The journal's per-model reads, written once for both SQL journals (SQLite and PostgreSQL).

The two share the `versions` and `pins` tables column for column; only the parameter marker differs (`?` for
sqlite3, `%s` for psycopg), so each journal names its marker and supplies `_rows` (run a query, translating its
driver's errors) and `_record` (a row as a VersionRecord: SQLite decodes JSON text, PostgreSQL gets jsonb values).
"""

from __future__ import annotations

import json
from typing import Any

from .records import Doc, DocConflictError, VersionRecord

COLUMNS = "model, version, parent, ops, spec, blobs, shapes, created_at, staged"
#: Every model with its incarnation, newest version (and when it committed), current version and documents' rev.
HEADS = (
    "SELECT m.model, m.incarnation, v.version, v.committed_at, COALESCE(m.current, v.version), m.docs_rev "
    "FROM models m JOIN versions v ON v.model = m.model AND v.version = (SELECT MAX(version) FROM versions WHERE "
    "model = m.model)"
)
#: What gc must keep: every blob a version row or a document (a dataset) refers to.
DIGESTS_REFERENCED = (
    "SELECT DISTINCT digest FROM version_blobs UNION SELECT DISTINCT digest FROM docs WHERE digest IS NOT NULL"
)
DOC_COLUMNS = "model, kind, key, value, rev, updated_at, digest"


def check_rev(model: str, kind: str, key: str, have: int, expect: int | None) -> int:
    """The next rev of a document at `have` (0: none), or DocConflictError when the writer read another one."""
    if expect is not None and have != expect:
        state = "exists already" if expect == 0 else "was deleted" if have == 0 else f"is at rev {have}, not {expect}"
        raise DocConflictError(f"the {kind} {key!r} of {model!r} {state} (changed meanwhile)")
    return have + 1


class VersionReads:
    PARAM = "?"

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _record(self, row: tuple[Any, ...]) -> VersionRecord:
        raise NotImplementedError

    def latest(self, model: str) -> VersionRecord | None:
        p = self.PARAM
        rows = self._rows(f"SELECT {COLUMNS} FROM versions WHERE model = {p} ORDER BY version DESC LIMIT 1", (model,))
        return self._record(rows[0]) if rows else None

    def get(self, model: str, version: int) -> VersionRecord | None:
        p = self.PARAM
        rows = self._rows(f"SELECT {COLUMNS} FROM versions WHERE model = {p} AND version = {p}", (model, version))
        return self._record(rows[0]) if rows else None

    def versions(self, model: str) -> list[VersionRecord]:
        rows = self._rows(f"SELECT {COLUMNS} FROM versions WHERE model = {self.PARAM} ORDER BY version", (model,))
        return [self._record(r) for r in rows]

    def version_numbers(self, model: str) -> list[int]:
        sql = f"SELECT version FROM versions WHERE model = {self.PARAM} ORDER BY version"
        return [r[0] for r in self._rows(sql, (model,))]

    def docs(self, model: str, kind: str) -> list[Doc]:
        """A model's documents of one kind, most recently updated first."""
        p = self.PARAM
        sql = f"SELECT {DOC_COLUMNS} FROM docs WHERE model = {p} AND kind = {p} ORDER BY updated_at DESC, key"
        return [_doc(r) for r in self._rows(sql, (model, kind))]

    def doc(self, model: str, kind: str, key: str) -> Doc | None:
        p = self.PARAM
        sql = f"SELECT {DOC_COLUMNS} FROM docs WHERE model = {p} AND kind = {p} AND key = {p}"
        rows = self._rows(sql, (model, kind, key))
        return _doc(rows[0]) if rows else None

    def pins(self, model: str) -> set[int]:
        return {r[0] for r in self._rows(f"SELECT version FROM pins WHERE model = {self.PARAM}", (model,))}


def _doc(row: tuple[Any, ...]) -> Doc:
    value = row[3] if isinstance(row[3], dict) else json.loads(row[3])  # jsonb arrives decoded, SQLite's text not
    return Doc(row[0], row[1], row[2], value, row[4], row[5], row[6])

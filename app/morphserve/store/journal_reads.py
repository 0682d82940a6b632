"""The journal's per-model reads, written once for both SQL journals (SQLite and PostgreSQL).

The two share the `versions` and `pins` tables column for column; only the parameter marker differs (`?` for
sqlite3, `%s` for psycopg), so each journal names its marker and supplies `_rows` (run a query, translating its
driver's errors) and `_record` (a row as a VersionRecord: SQLite decodes JSON text, PostgreSQL gets jsonb values).
"""

from __future__ import annotations

from typing import Any

from .records import VersionRecord

COLUMNS = "model, version, parent, ops, spec, blobs, shapes, created_at"


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

    def pins(self, model: str) -> set[int]:
        return {r[0] for r in self._rows(f"SELECT version FROM pins WHERE model = {self.PARAM}", (model,))}

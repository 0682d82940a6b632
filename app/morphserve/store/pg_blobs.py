"""Weight blobs in the journal's PostgreSQL database, so that replicas share nothing but the database.

Content-addressed like the blob files: a `blobs` row (digest, size, written_at) and the bytes as ~1 MiB `bytea`
chunks in `blob_chunks` (pg_schema says why not large objects). One transaction per blob, so a blob is either
whole or absent, never torn; `put` of a digest that exists does nothing (ON CONFLICT DO NOTHING: two replicas
writing the same layer at once both succeed, one of them writing nothing). Chunks travel in binary COPY and come
back in binary, not hex-escaped.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import psycopg

from .pg_database import NOW, Database
from .pg_schema import BLOB_TABLES
from .records import BlobCorruptError, StorageFullError

CHUNK = 1 << 20


class PostgresBlobs:
    def __init__(self, url: str, *, pool_size: int = 4) -> None:
        self.db = Database(url)
        self.where = self.db.where
        self.what = f"the weight blobs in {self.where}"
        self.db.migrate(self.what)
        self._pool = self.db.pool("morphserve-blobs", self.what, max_size=pool_size)

    def _conn(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        return self.db.borrow(self._pool, self.what)

    def locate(self, digest: str) -> str:
        return f"{self.where} blobs/{digest}"

    def put(self, digest: str, data: bytes) -> None:
        view = memoryview(data)
        try:
            with self._conn() as conn, conn.transaction():
                cur = conn.execute(
                    f"INSERT INTO blobs (digest, size, written_at) VALUES (%s, %s, {NOW}) ON CONFLICT DO NOTHING",
                    (digest, len(data)),
                )
                if cur.rowcount == 0:  # committed already (a concurrent writer's commit is waited for)
                    return
                with cur.copy("COPY blob_chunks (digest, seq, data) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(["text", "int4", "bytea"])
                    for seq, start in enumerate(range(0, max(len(data), 1), CHUNK)):
                        copy.write_row((digest, seq, view[start : start + CHUNK]))
        except StorageFullError as e:
            raise StorageFullError(
                f"no space left for weight blob {self.locate(digest)}: {e.message}; {len(data)} bytes were needed",
                len(data),
            ) from None

    def get(self, digest: str) -> bytes:
        with self._conn() as conn:
            rows = (
                conn.cursor(binary=True)
                .execute("SELECT data FROM blob_chunks WHERE digest = %s ORDER BY seq", (digest,))
                .fetchall()
            )
        if not rows:
            raise BlobCorruptError(self.locate(digest), "it is missing")
        return b"".join(r[0] for r in rows)

    def repair(self, digest: str) -> bytes:
        return self.get(digest)  # no other copy to fall back on

    def present(self, digests: Iterable[str]) -> set[str]:
        wanted = list(digests)
        if not wanted:
            return set()
        with self._conn() as conn:
            return {r[0] for r in conn.execute("SELECT digest FROM blobs WHERE digest = ANY(%s)", (wanted,))}

    def listing(self) -> Iterator[tuple[str, float]]:
        with self._conn() as conn:
            rows = conn.execute("SELECT digest, written_at FROM blobs").fetchall()
        return iter([(d, float(t)) for d, t in rows])

    def delete(self, digests: Iterable[str]) -> int:
        doomed = list(digests)
        if not doomed:
            return 0
        with self._conn() as conn, conn.transaction():
            return conn.execute("DELETE FROM blobs WHERE digest = ANY(%s)", (doomed,)).rowcount

    def sweep_temporaries(self) -> int:
        return 0  # a blob is one transaction: a crash leaves nothing half-written

    def reset(self) -> None:
        with self._conn() as conn:
            conn.execute(f"TRUNCATE {', '.join(BLOB_TABLES)}")

    def close(self) -> None:
        self._pool.close()

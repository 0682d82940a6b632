"""The tables of a PostgreSQL journal (and of the weight blobs kept beside it), created or checked on start.

One schema version for both, in `morphserve_meta`; the same number as the SQLite journal's schema, whose tables it
mirrors. Replicas that start together migrate one at a time (a transaction-level advisory lock), since two
concurrent `CREATE TABLE IF NOT EXISTS` of one table can fail. A database with a newer schema is refused by name.

Why these shapes:
- `versions.model` references `models` (ON DELETE CASCADE): an append for a model deleted meanwhile fails (the key
  check locks the `models` row), and deleting a model takes its rows, and their `version_blobs`, with it.
- JSON columns (`json`, not `jsonb`): kept byte for byte, so a spec reads back with its keys in their order.
- Weights as ~1 MiB `bytea` chunks (`blob_chunks`, storage EXTERNAL: out of line and not compressed, since
  float tensors do not compress) under a `blobs` row, rather than large objects: plain rows are transactional
  with everything else, deleted by a cascade (large objects need `lo_unlink`, and leak when it is missed), covered
  by ordinary grants and by `pg_dump` of the tables, and read with one query.
"""

from __future__ import annotations

from typing import Any

import psycopg

from .records import JournalError

SCHEMA_VERSION = 4
META = "morphserve_meta"

#: Advisory lock keys, in the two-int form (classid, objid), which PostgreSQL keeps apart from the one-bigint form.
#: The class ids spell "ms" so that another application's locks in the same database are unlikely to collide.
LOCKS = 0x6D730000
MIGRATE_LOCK = (LOCKS, 1)
SWEEP_LOCK = (LOCKS, 2)
EDIT_LOCKS = LOCKS + 1  # objid: hashtext('edit:' || model)

_TABLES = f"""
CREATE TABLE IF NOT EXISTS {META} (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS models (
    model       text PRIMARY KEY,
    incarnation text NOT NULL,
    created_at  float8 NOT NULL,
    current     bigint,
    docs_rev    bigint NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS versions (
    model        text   NOT NULL REFERENCES models (model) ON DELETE CASCADE,
    version      bigint NOT NULL,
    parent       bigint,
    ops          json   NOT NULL,
    spec         json   NOT NULL,
    blobs        json   NOT NULL,
    shapes       json   NOT NULL,
    created_at   float8 NOT NULL,
    committed_at float8 NOT NULL,
    staged       boolean NOT NULL DEFAULT false,
    PRIMARY KEY (model, version)
);
CREATE TABLE IF NOT EXISTS pins (
    model   text   NOT NULL,
    version bigint NOT NULL,
    PRIMARY KEY (model, version)
);
CREATE TABLE IF NOT EXISTS version_blobs (
    model   text   NOT NULL,
    version bigint NOT NULL,
    node    text   NOT NULL,
    digest  text   NOT NULL,
    PRIMARY KEY (model, version, node),
    FOREIGN KEY (model, version) REFERENCES versions (model, version) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS version_blobs_digest ON version_blobs (digest);
CREATE TABLE IF NOT EXISTS replicas (
    id         text   PRIMARY KEY,
    address    text   NOT NULL,
    applied    json   NOT NULL,
    started_at float8 NOT NULL,
    last_seen  float8 NOT NULL
);
CREATE TABLE IF NOT EXISTS blobs (
    digest     text   PRIMARY KEY,
    size       bigint NOT NULL,
    written_at float8 NOT NULL
);
CREATE TABLE IF NOT EXISTS blob_chunks (
    digest text    NOT NULL REFERENCES blobs (digest) ON DELETE CASCADE,
    seq    integer NOT NULL,
    data   bytea   NOT NULL,
    PRIMARY KEY (digest, seq)
);
ALTER TABLE blob_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
CREATE TABLE IF NOT EXISTS docs (
    model      text   NOT NULL REFERENCES models (model) ON DELETE CASCADE,
    kind       text   NOT NULL,
    key        text   NOT NULL,
    value      json   NOT NULL,
    rev        bigint NOT NULL,
    updated_at float8 NOT NULL,
    digest     text,
    PRIMARY KEY (model, kind, key)
);
ALTER TABLE versions ADD COLUMN IF NOT EXISTS staged boolean NOT NULL DEFAULT false;
ALTER TABLE models ADD COLUMN IF NOT EXISTS current bigint;
ALTER TABLE models ADD COLUMN IF NOT EXISTS docs_rev bigint NOT NULL DEFAULT 0;
UPDATE models SET current = (SELECT MAX(version) FROM versions v WHERE v.model = models.model) WHERE current IS NULL
"""

JOURNAL_TABLES = ("models", "versions", "pins", "version_blobs", "replicas", "docs")
BLOB_TABLES = ("blobs", "blob_chunks")


def migrate(conn: psycopg.Connection[Any], where: str) -> None:
    """Create the schema on an empty database, or check the one there (`conn` in autocommit mode)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", MIGRATE_LOCK)
        found = _version(conn)
        if found == SCHEMA_VERSION:
            return
        if found is not None and found > SCHEMA_VERSION:
            raise JournalError(
                f"the journal {where} has schema {found}, newer than this release's {SCHEMA_VERSION}: "
                "upgrade morphserve"
            )
        for stmt in filter(None, (s.strip() for s in _TABLES.split(";"))):
            conn.execute(stmt)
        conn.execute(
            f"INSERT INTO {META} VALUES ('schema_version', %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(SCHEMA_VERSION),),
        )


def _version(conn: psycopg.Connection[Any]) -> int | None:
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (META,)).fetchone()
    if not exists or not exists[0]:
        return None
    row = conn.execute(f"SELECT value FROM {META} WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else None

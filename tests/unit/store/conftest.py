"""Store fixtures: every backend behind the same fixtures, so that one conformance suite runs against each.

`backend` names a (journal, blobs) pair; `make_store()` opens a Store over it, and calling it again opens a second
Store over the *same* storage (another process's view: for SQLite a new connection to the same file; for
PostgreSQL another replica: its own pools and its own blob cache).

- `sqlite+dir`: SQLite journal + blob files in the state dir (the default server).
- `memory`: both in memory (`--journal memory`).
- `postgresql`: PostgreSQL journal + blobs in the database, cached per replica (`--journal postgresql://...`).
- `postgresql+dir`: PostgreSQL journal + blobs in a shared directory, cached per replica (`--blob-dir`).

The PostgreSQL ones run against a real cluster (tests/pg.py), a new database per test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from morphserve.store import Store
from morphserve.store.blobs import DirBlobs
from morphserve.store.memory import MemoryBlobs, MemoryJournal
from morphserve.store.sqlite_journal import SQLiteJournal

BACKENDS = ["sqlite+dir", "memory", "postgresql", "postgresql+dir"]
#: Backends whose journal several processes share through a database server (and that have a change feed).
SHARED = {"postgresql", "postgresql+dir"}


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def open_postgres(url: str, blobs_in: Path | None, cache: Path, **kwargs: object) -> Store:
    """A replica's Store on a PostgreSQL journal, as open_store builds it: blobs in the database (or in the
    directory `blobs_in`), cached in `cache`."""
    from morphserve.store.cached_blobs import CachedBlobs
    from morphserve.store.pg_blobs import PostgresBlobs
    from morphserve.store.pg_journal import PostgresJournal

    journal = PostgresJournal(url)
    remote = DirBlobs(blobs_in) if blobs_in is not None else PostgresBlobs(url)
    return Store(journal, CachedBlobs(remote, DirBlobs(cache, fsync=False)), **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def make_store(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Store]]:
    opened: list[Store] = []
    shared = (MemoryJournal(), MemoryBlobs())
    url = str(request.getfixturevalue("pg_url")) if backend in SHARED else ""

    def factory(**kwargs: object) -> Store:
        if backend == "memory":
            store = Store(*shared, **kwargs)  # type: ignore[arg-type]
        elif backend in SHARED:
            shared_dir = tmp_path / "shared-blobs" if backend == "postgresql+dir" else None
            store = open_postgres(url, shared_dir, tmp_path / f"cache-{len(opened)}", **kwargs)
        else:
            store = Store(SQLiteJournal(tmp_path / "journal.sqlite3"), DirBlobs(tmp_path / "blobs"), **kwargs)  # type: ignore[arg-type]
        opened.append(store)
        return store

    yield factory
    for s in opened:
        s.close()

"""Store fixtures: every backend behind the same fixtures, so that one conformance suite runs against each.

`backend` names a (journal, blobs) pair; `make_store()` opens a Store over it, and calling it again opens a second
Store over the *same* storage (another process's view: for SQLite a new connection to the same file).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.store import Store
from app.store.blobs import DirBlobs
from app.store.memory import MemoryBlobs, MemoryJournal
from app.store.sqlite_journal import SQLiteJournal

BACKENDS = ["sqlite+dir", "memory"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_store(backend: str, tmp_path: Path) -> Iterator[Callable[..., Store]]:
    opened: list[Store] = []
    shared = (MemoryJournal(), MemoryBlobs())

    def factory(**kwargs: object) -> Store:
        if backend == "memory":
            store = Store(*shared, **kwargs)  # type: ignore[arg-type]
        else:
            store = Store(SQLiteJournal(tmp_path / "journal.sqlite3"), DirBlobs(tmp_path / "blobs"), **kwargs)  # type: ignore[arg-type]
        opened.append(store)
        return store

    yield factory
    for s in opened:
        s.close()

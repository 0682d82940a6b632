"""`open_store(settings)`: the one place that decides which journal and blob backends a server uses."""

from __future__ import annotations

import logging
import shutil

from app.settings import Settings

from .blobs import DirBlobs
from .memory import MemoryBlobs, MemoryJournal
from .records import StoreError
from .sqlite_journal import FILES, SQLiteJournal
from .store import Store

log = logging.getLogger("morphserve.store")


def open_store(settings: Settings) -> Store:
    """The store `settings` ask for: SQLite + blob files under the state dir (default), or memory.

    A state dir that cannot be opened is reported and left untouched: the server then serves from memory and
    refuses edits with the reason, rather than refusing to start.
    """
    if settings.journal == "memory":
        return Store(MemoryJournal(), MemoryBlobs())
    state = settings.state_dir
    if settings.fresh:
        # Files, not rows: a journal too damaged to open must still be removable by --fresh.
        for name in FILES:
            (state / name).unlink(missing_ok=True)
        shutil.rmtree(state / "blobs", ignore_errors=True)
        log.warning("--fresh: emptied the state dir %s", state)
    try:
        journal = SQLiteJournal(state / "journal.sqlite3", fsync=settings.fsync)
        blobs = DirBlobs(state / "blobs", fsync=settings.fsync)
    except StoreError as e:
        log.error("state dir %s unusable; serving from memory, edits are refused, nothing there is touched: %s",
                  state, e.message)  # fmt: skip
        return Store(MemoryJournal(), MemoryBlobs(), unavailable=f"the state dir {state} is unusable: {e.message}")
    return Store(journal, blobs)

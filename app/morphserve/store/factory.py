"""`open_store(settings)`: the one place that decides which journal and blob backends a server uses."""

from __future__ import annotations

import logging
import shutil
import time
from typing import TYPE_CHECKING

from morphserve.settings import Settings

from .backend import BlobBackend
from .blobs import DirBlobs
from .memory import MemoryBlobs, MemoryJournal
from .records import JournalUnreachableError, StoreError
from .sqlite_journal import FILES, SQLiteJournal
from .store import Store

if TYPE_CHECKING:
    from .pg_journal import PostgresJournal

log = logging.getLogger("morphserve.store")

#: How long a server keeps trying to reach its PostgreSQL journal at start before it gives up (exit 1): long enough
#: for a database started beside it (compose) to come up; a replica has nothing to serve without its journal.
START_WAIT_S = 30.0
#: A replica whose last heartbeat is younger than this is alive, and `--fresh` refuses to empty its journal.
LIVE_REPLICA_S = 30.0


def open_store(settings: Settings, *, wait_s: float = START_WAIT_S) -> Store:
    """The store `settings` ask for: SQLite + blob files under the state dir (default), memory, or a PostgreSQL
    journal shared with other replicas (blobs in the database or in `blob_dir`, cached under the state dir).

    A state dir that cannot be opened is reported and left untouched: the server then serves from memory and
    refuses edits with the reason, rather than refusing to start. A PostgreSQL journal that cannot be reached is
    retried for `wait_s` seconds, then `JournalUnreachableError` (as is any other StoreError of opening it): a
    replica cut off from the journal it must follow has nothing to serve, so the caller should exit.
    """
    if settings.journal == "memory":
        return Store(MemoryJournal(), MemoryBlobs())
    if settings.journal_url is not None:
        return _open_postgres(settings, settings.journal_url, wait_s)
    state = settings.state_dir
    if settings.fresh:
        # Files, not rows: a journal too damaged to open must still be removable by --fresh.
        for name in FILES:
            (state / name).unlink(missing_ok=True)
        if settings.blob_dir is None:
            shutil.rmtree(state / "blobs", ignore_errors=True)
        log.warning("--fresh: emptied the state dir %s", state)
    try:
        journal = SQLiteJournal(state / "journal.sqlite3", fsync=settings.fsync)
        blobs = DirBlobs(settings.blob_dir or state / "blobs", fsync=settings.fsync)
        if settings.fresh and settings.blob_dir is not None:
            blobs.reset()
    except StoreError as e:
        log.error(
            "state dir %s unusable; serving from memory, edits are refused, nothing there is touched: %s",
            state,
            e.message,
        )
        return Store(MemoryJournal(), MemoryBlobs(), unavailable=f"the state dir {state} is unusable: {e.message}")
    if journal.damage is not None:
        log.error("%s; serving what can be read, edits are refused", journal.damage)
    return Store(journal, blobs, damaged=journal.damage)


def _open_postgres(settings: Settings, url: str, wait_s: float) -> Store:
    from .cached_blobs import CachedBlobs  # psycopg is imported only by servers that use it
    from .pg_blobs import PostgresBlobs

    journal = _reach(url, wait_s)
    try:
        remote: BlobBackend
        remote = DirBlobs(settings.blob_dir, fsync=settings.fsync) if settings.blob_dir else PostgresBlobs(url)
        try:
            # No fsync: an entry a crash damaged fails its hash check and is fetched again.
            blobs: BlobBackend = CachedBlobs(remote, DirBlobs(settings.state_dir / "blob-cache", fsync=False))
        except StoreError as e:
            log.warning("no local blob cache (every load reads %s): %s", remote.where, e.message)
            blobs = remote
        store = Store(journal, blobs)
        if settings.fresh:
            _fresh(store, journal)
    except BaseException:
        journal.close()
        raise
    return store


def _reach(url: str, wait_s: float) -> PostgresJournal:
    """Open the journal, retrying with backoff while the database cannot be reached, for at most `wait_s`."""
    from .pg_journal import PostgresJournal

    deadline = time.monotonic() + wait_s
    pause = 0.5
    while True:
        try:
            return PostgresJournal(url)
        except JournalUnreachableError as e:
            left = deadline - time.monotonic()
            if left <= 0:
                raise JournalUnreachableError(f"{e.message} (tried for {wait_s:g} s)") from None
            log.warning("%s; trying again for %.0f s more", e.message, left)
            time.sleep(min(pause, left))
            pause = min(pause * 2, 5.0)


def _fresh(store: Store, journal: PostgresJournal) -> None:
    """`--fresh` on a shared journal empties it for every replica: only when no other replica is alive."""
    now = journal.now()
    live = [r for r in journal.replicas() if now - r.last_seen < LIVE_REPLICA_S]
    if live:
        names = ", ".join(f"{r.id} ({r.address})" for r in live[:5])
        raise StoreError(
            f"--fresh would empty the shared journal {journal.where}, which {len(live)} live replica(s) "
            f"follow: {names}; stop them first (a heartbeat older than {LIVE_REPLICA_S:g} s counts as "
            "stopped), or start without --fresh"
        )
    store.reset()
    log.warning("--fresh: emptied the shared journal %s and its blobs", journal.where)

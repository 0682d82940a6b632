"""A replica's local copy of shared weight blobs: reads from a directory under its state dir first, writes and
questions of existence go to the shared store (the truth).

With a PostgreSQL journal every replica keeps the blobs it has loaded in `<state_dir>/blob-cache`, so restarting
or rolling back reads local files, and a replica whose database is down still loads any version it has cached.
A cache entry is only a copy: the Store checks every blob's hash on read, and on a mismatch calls `repair`, which
fetches the blob from the shared store again and rewrites the entry (a damaged cache file costs one fetch, never
an error). A failure to write the cache (a full or read-only state dir) is logged and otherwise ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from .backend import BlobBackend
from .blobs import DirBlobs
from .records import StoreError

log = logging.getLogger("morphserve.store")


class CachedBlobs:
    def __init__(self, remote: BlobBackend, local: DirBlobs) -> None:
        self.remote = remote
        self.local = local
        self.where = remote.where

    def locate(self, digest: str) -> str:
        return self.remote.locate(digest)

    def _keep(self, digest: str, data: bytes) -> None:
        try:
            self.local.put(digest, data)
        except StoreError as e:
            log.warning("blob %s not cached in %s: %s", digest[:12], self.local.where, e.message)

    def put(self, digest: str, data: bytes) -> None:
        self.remote.put(digest, data)
        self._keep(digest, data)

    def get(self, digest: str) -> bytes:
        if self.local.present([digest]):
            try:
                return self.local.get(digest)
            except StoreError:
                pass  # unreadable cache entry: fetch it again
        data = self.remote.get(digest)
        self._keep(digest, data)
        return data

    def repair(self, digest: str) -> bytes:
        """The bytes of the shared blob, after a cached copy failed its hash check: the entry is rewritten."""
        self.local.delete([digest])
        data = self.remote.get(digest)
        self._keep(digest, data)
        log.warning("cached blob %s was damaged; fetched again from %s", digest[:12], self.remote.where)
        return data

    def present(self, digests: Iterable[str]) -> set[str]:
        return self.remote.present(digests)

    def listing(self) -> Iterator[tuple[str, float]]:
        return self.remote.listing()

    def delete(self, digests: Iterable[str]) -> int:
        doomed = list(digests)
        self.local.delete(doomed)
        return self.remote.delete(doomed)

    def sweep_temporaries(self) -> int:
        """Half-written files in both, and cache entries of blobs that other replicas' gc has deleted since."""
        swept = self.local.sweep_temporaries() + self.remote.sweep_temporaries()
        cached = [d for d, _ in self.local.listing()]
        if cached:
            gone = set(cached) - self.remote.present(cached)
            if gone:
                self.local.delete(gone)
                log.info("dropped %d cached blob(s) no longer in %s", len(gone), self.remote.where)
        return swept

    def reset(self) -> None:
        self.remote.reset()
        self.local.reset()

    def close(self) -> None:
        self.remote.close()
        self.local.close()

"""In-memory journal and blobs: a store for servers that keep nothing (`--journal memory`), and the stand-in when
the state dir cannot be used, so the rest of the server never asks "is there a store?"."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from .records import BlobCorruptError, VersionConflictError, VersionRecord


class MemoryJournal:
    where = "memory"

    def __init__(self) -> None:
        self._rows: dict[str, dict[int, VersionRecord]] = {}
        self._pins: dict[str, set[int]] = {}
        self._lock = threading.RLock()

    def append(self, record: VersionRecord, before_commit: Callable[[], None] | None = None) -> None:
        with self._lock:
            rows = self._rows.setdefault(record.model, {})
            if record.version in rows:
                raise VersionConflictError(f"{record.model} v{record.version} exists")
            rows[record.version] = record
            if before_commit is not None:
                try:
                    before_commit()
                except BaseException:
                    del rows[record.version]
                    raise

    def get(self, model: str, version: int) -> VersionRecord | None:
        with self._lock:
            return self._rows.get(model, {}).get(version)

    def latest(self, model: str) -> VersionRecord | None:
        with self._lock:
            rows = self._rows.get(model)
            return rows[max(rows)] if rows else None

    def versions(self, model: str) -> list[VersionRecord]:
        with self._lock:
            rows = self._rows.get(model, {})
            return [rows[v] for v in sorted(rows)]

    def version_numbers(self, model: str) -> list[int]:
        with self._lock:
            return sorted(self._rows.get(model, {}))

    def models(self) -> list[str]:
        with self._lock:
            return sorted(m for m, rows in self._rows.items() if rows)

    def pin(self, model: str, version: int) -> None:
        with self._lock:
            self._pins.setdefault(model, set()).add(version)

    def unpin(self, model: str, version: int) -> None:
        with self._lock:
            self._pins.get(model, set()).discard(version)

    def pins(self, model: str) -> set[int]:
        with self._lock:
            return set(self._pins.get(model, set()))

    def delete_versions(self, model: str, versions: Iterable[int]) -> None:
        with self._lock:
            for v in versions:
                self._rows.get(model, {}).pop(v, None)
                self._pins.get(model, set()).discard(v)

    def delete_model(self, model: str) -> None:
        with self._lock:
            self._rows.pop(model, None)
            self._pins.pop(model, None)

    @contextmanager
    def sweep_lock(self) -> Iterator[set[str]]:
        with self._lock:
            yield {d for rows in self._rows.values() for r in rows.values() for d in r.blobs.values()}

    def reset(self) -> None:
        with self._lock:
            self._rows.clear()
            self._pins.clear()

    def close(self) -> None:
        pass


class MemoryBlobs:
    where = "memory"

    def __init__(self) -> None:
        self._data: dict[str, tuple[bytes, float]] = {}
        self._lock = threading.Lock()

    def put(self, digest: str, data: bytes) -> None:
        with self._lock:
            self._data.setdefault(digest, (data, time.time()))

    def get(self, digest: str) -> bytes:
        with self._lock:
            hit = self._data.get(digest)
        if hit is None:
            raise BlobCorruptError(self.locate(digest), "it is missing")
        return hit[0]

    def present(self, digests: Iterable[str]) -> set[str]:
        with self._lock:
            return {d for d in digests if d in self._data}

    def listing(self) -> Iterator[tuple[str, float]]:
        with self._lock:
            items = [(d, t) for d, (_, t) in self._data.items()]
        return iter(items)

    def delete(self, digests: Iterable[str]) -> int:
        with self._lock:
            return sum(self._data.pop(d, None) is not None for d in list(digests))

    def locate(self, digest: str) -> str:
        return f"memory:{digest[:16]}"

    def sweep_temporaries(self) -> int:
        return 0

    def reset(self) -> None:
        with self._lock:
            self._data.clear()

    def close(self) -> None:
        pass

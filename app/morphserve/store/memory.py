"""In-memory journal and blobs: a store for servers that keep nothing (`--journal memory`), and the stand-in when
the state dir cannot be used, so the rest of the server never asks "is there a store?"."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from .journal_reads import check_rev
from .locks import EDIT_LOCK_TIMEOUT_S, ModelLocks
from .records import BlobCorruptError, Doc, Head, ReplicaRecord, VersionConflictError, VersionRecord


class MemoryJournal:
    where = "memory"

    def __init__(self, *, edit_lock_timeout_s: float = EDIT_LOCK_TIMEOUT_S) -> None:
        self._rows: dict[str, dict[int, VersionRecord]] = {}
        self._committed: dict[tuple[str, int], float] = {}
        self._models: dict[str, str] = {}  # model -> incarnation
        self._pins: dict[str, set[int]] = {}
        self._replicas: dict[str, ReplicaRecord] = {}
        self._current: dict[str, int] = {}
        self._docs: dict[tuple[str, str, str], Doc] = {}
        self._docs_rev: dict[str, int] = {}
        self._lock = threading.RLock()
        self._edit_locks = ModelLocks()
        self.edit_lock_timeout_s = edit_lock_timeout_s

    def append(
        self, record: VersionRecord, before_commit: Callable[[], None] | None = None, *, create: str | None = None
    ) -> None:
        m, v = record.model, record.version
        with self._lock:
            if create is not None and m in self._models:
                raise VersionConflictError.exists(m, self.where)
            if create is None and m not in self._models:
                raise VersionConflictError.missing(m, self.where)
            rows = self._rows.setdefault(m, {})
            if v in rows:
                raise VersionConflictError.taken(m, v, self.where)
            if before_commit is not None:
                before_commit()  # nothing is visible before it returns, so a failure leaves nothing to undo
            rows[v] = record
            self._committed[(m, v)] = time.time()
            if create is not None:
                self._models[m] = create
            if not record.staged:
                self._current[m] = v

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
                self._committed.pop((model, v), None)
                self._pins.get(model, set()).discard(v)

    def delete_model(self, model: str) -> None:
        with self._lock:
            for v in self._rows.pop(model, {}):
                self._committed.pop((model, v), None)
            self._pins.pop(model, None)
            self._models.pop(model, None)
            self._current.pop(model, None)
            self._docs_rev.pop(model, None)
            for k in [k for k in self._docs if k[0] == model]:
                del self._docs[k]

    def heads(self) -> dict[str, Head]:
        with self._lock:
            tops = {m: max(rows) for m, rows in self._rows.items() if rows and m in self._models}
            return {
                m: Head(
                    m, self._models[m], v, self._committed[(m, v)], self._current.get(m, v), self._docs_rev.get(m, 0)
                )
                for m, v in tops.items()
            }

    def set_current(self, model: str, version: int) -> None:
        with self._lock:
            self._check_version(model, version)
            self._current[model] = version

    def _check_version(self, model: str, version: int) -> None:
        if model not in self._models:
            raise VersionConflictError.missing(model, self.where)
        if version not in self._rows.get(model, {}):
            raise VersionConflictError.missing_version(model, version, self.where)

    def put_doc(
        self,
        model: str,
        kind: str,
        key: str,
        value: dict[str, Any],
        *,
        expect_rev: int | None = None,
        digest: str | None = None,
        current: int | None = None,
    ) -> Doc:
        with self._lock:
            if model not in self._models:
                raise VersionConflictError.missing(model, self.where)
            found = self._docs.get((model, kind, key))
            rev = check_rev(model, kind, key, found.rev if found else 0, expect_rev)
            if current is not None:
                self._check_version(model, current)
                self._current[model] = current
            doc = Doc(model, kind, key, copy.deepcopy(value), rev, time.time(), digest)
            self._docs[(model, kind, key)] = doc
            self._docs_rev[model] = self._docs_rev.get(model, 0) + 1
            return doc

    def delete_doc(self, model: str, kind: str, key: str) -> None:
        with self._lock:
            self._docs.pop((model, kind, key), None)
            self._docs_rev[model] = self._docs_rev.get(model, 0) + 1

    def docs(self, model: str, kind: str) -> list[Doc]:
        with self._lock:
            found = [d for (m, k, _), d in self._docs.items() if m == model and k == kind]
        return sorted(found, key=lambda d: (-d.updated_at, d.key))

    def doc(self, model: str, kind: str, key: str) -> Doc | None:
        with self._lock:
            return self._docs.get((model, kind, key))

    def edit_lock(self, model: str, *, timeout_s: float | None = None) -> AbstractContextManager[None]:
        return self._edit_locks.hold(model, self.edit_lock_timeout_s if timeout_s is None else timeout_s)

    def heartbeat(self, replica: ReplicaRecord) -> None:
        with self._lock:
            self._replicas[replica.id] = ReplicaRecord(
                replica.id, replica.address, dict(replica.applied), replica.started_at, time.time()
            )

    def replicas(self) -> list[ReplicaRecord]:
        with self._lock:
            return sorted(self._replicas.values(), key=lambda r: r.last_seen, reverse=True)

    def forget_replica(self, replica_id: str) -> None:
        with self._lock:
            self._replicas.pop(replica_id, None)

    def changes(self) -> None:
        return None  # one process: followers (if any) poll heads()

    @contextmanager
    def sweep_lock(self) -> Iterator[set[str]]:
        with self._lock:
            yield {d for rows in self._rows.values() for r in rows.values() for d in r.blobs.values()} | {
                d.digest for d in self._docs.values() if d.digest is not None
            }

    def reset(self) -> None:
        with self._lock:
            for table in (
                self._rows,
                self._committed,
                self._models,
                self._pins,
                self._replicas,
                self._current,
                self._docs,
                self._docs_rev,
            ):
                table.clear()

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

    def repair(self, digest: str) -> bytes:
        return self.get(digest)  # no other copy to fall back on

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

"""The two seams of the store: where version rows live (journal) and where weight bytes live (blobs).

Each has an embedded implementation (SQLite / a local directory), an in-memory one, and room for a shared one
(PostgreSQL) that several replicas use at once. The conformance suite in tests/unit/store runs against every
implementation, so a backend is done when that suite passes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Protocol

from .records import VersionRecord


class JournalBackend(Protocol):
    #: Where the journal is, for messages (a file path, a database URL without its password).
    where: str

    def append(self, record: VersionRecord, before_commit: Callable[[], None] | None = None) -> None:
        """Insert one version row and its `version_blobs` rows in one transaction.

        Version numbers are allocated optimistically by the caller; the (model, version) unique constraint
        turns a number already taken into `VersionConflictError`. `before_commit` runs inside the transaction,
        while no blob sweep can run (see `sweep_lock`): the store uses it to check the version's blobs exist.
        """

    def get(self, model: str, version: int) -> VersionRecord | None: ...

    def latest(self, model: str) -> VersionRecord | None: ...

    def versions(self, model: str) -> list[VersionRecord]:
        """All rows of a model, oldest first."""

    def version_numbers(self, model: str) -> list[int]:
        """The version numbers of a model, oldest first, without reading the rows."""

    def models(self) -> list[str]: ...

    def pin(self, model: str, version: int) -> None: ...

    def unpin(self, model: str, version: int) -> None: ...

    def pins(self, model: str) -> set[int]: ...

    def delete_versions(self, model: str, versions: Iterable[int]) -> None:
        """Delete rows, their pins and their blob references in one transaction."""

    def delete_model(self, model: str) -> None:
        """Delete every row of a model in one transaction."""

    def sweep_lock(self) -> AbstractContextManager[set[str]]:
        """Exclusive against `append` (of any process): yields every digest a row references, so that the blobs
        deleted inside cannot be ones a concurrent commit is about to reference."""

    def reset(self) -> None:
        """Delete everything (`--fresh`)."""

    def close(self) -> None: ...


class BlobBackend(Protocol):
    where: str

    def put(self, digest: str, data: bytes) -> None:
        """Store `data` under `digest` durably (idempotent: an existing blob is left as it is)."""

    def get(self, digest: str) -> bytes:
        """The bytes of a blob; `BlobCorruptError` naming its location when it cannot be read."""

    def present(self, digests: Iterable[str]) -> set[str]:
        """Which of `digests` exist."""

    def listing(self) -> Iterator[tuple[str, float]]:
        """Every blob as (digest, time it was written, seconds since the epoch)."""

    def delete(self, digests: Iterable[str]) -> int: ...

    def locate(self, digest: str) -> str:
        """Where a blob is, for messages."""

    def sweep_temporaries(self) -> int:
        """Remove half-written leftovers of a crash; how many."""

    def reset(self) -> None: ...

    def close(self) -> None: ...

"""The two seams of the store: where version rows live (journal) and where weight bytes live (blobs).

Each has an embedded implementation (SQLite / a local directory), an in-memory one, and a shared one that several
replicas use at once (PostgreSQL: pg_journal, pg_blobs; blobs also in a shared directory, each replica keeping a
local copy in a CachedBlobs). The conformance suite in tests/unit/store runs against every
implementation, so a backend is done when that suite passes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol

from .records import Doc, Head, Notice, ReplicaRecord, VersionRecord


class JournalBackend(Protocol):
    #: Where the journal is, for messages (a file path, a database URL without its password).
    where: str

    def append(
        self, record: VersionRecord, before_commit: Callable[[], None] | None = None, *, create: str | None = None
    ) -> None:
        """Insert one version row and its `version_blobs` rows in one transaction, and wake followers.

        Version numbers are allocated optimistically by the caller; the (model, version) unique constraint
        turns a number already taken into `VersionConflictError`. `create` (an incarnation id) marks the first
        row of a new model: its `models` row is inserted in the same transaction, and a model of that name that
        exists already is a `VersionConflictError` too. `before_commit` runs inside the transaction, while no
        blob sweep can run (see `sweep_lock`): the store uses it to check the version's blobs exist. A backend
        with a change feed sends a `Notice(model, version)` when the transaction commits. A row that is not
        `staged` becomes the model's current version in the same transaction.
        """

    def set_current(self, model: str, version: int) -> None:
        """Make an existing version the model's current one (a promotion); `VersionConflictError` if it is gone."""

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
        """Write a model's document in one transaction and bump the model's `docs_rev` (followers re-read).
        `expect_rev`: None writes whatever is there; 0 requires that the document does not exist; n requires it is
        at rev n (else `DocConflictError`). `current` also makes that version current, atomically with the write
        (a rollout's promotion). `digest`: a blob gc keeps while the document exists."""

    def delete_doc(self, model: str, kind: str, key: str) -> None: ...

    def docs(self, model: str, kind: str) -> list[Doc]:
        """A model's documents of one kind, most recently updated first."""

    def doc(self, model: str, kind: str, key: str) -> Doc | None: ...

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
        """Delete every row of a model (its `models` row too) in one transaction; a change feed sends
        `Notice(model, None)` when it commits."""

    def heads(self) -> dict[str, Head]:
        """Every model that exists, with its incarnation, newest and current version and documents' rev: one
        cheap query, polled by followers."""

    def edit_lock(self, model: str, *, timeout_s: float | None = None) -> AbstractContextManager[None]:
        """Held by an editor from catching up to committing: serialises the edits of one model across every process
        sharing this journal (a PostgreSQL advisory lock, a lock file for SQLite). Waits up to `timeout_s` (default
        the journal's, 30 s) for another holder, then raises `JournalUnreachableError` (busy: retry)."""

    def heartbeat(self, replica: ReplicaRecord) -> None:
        """Insert or update this replica's row (`last_seen` becomes the journal's now)."""

    def replicas(self) -> list[ReplicaRecord]:
        """Every replica row, newest heartbeat first."""

    def forget_replica(self, replica_id: str) -> None:
        """Remove a replica's row (it stopped cleanly)."""

    def changes(self) -> ChangeFeed | None:
        """A new change feed (its own connection), or None for a backend followers can only poll."""

    def sweep_lock(self) -> AbstractContextManager[set[str]]:
        """Exclusive against `append` (of any process): yields every digest a row references, so that the blobs
        deleted inside cannot be ones a concurrent commit is about to reference."""

    def reset(self) -> None:
        """Delete everything (`--fresh`)."""

    def close(self) -> None: ...


class ChangeFeed(Protocol):
    """Wake-ups for followers (PostgreSQL LISTEN/NOTIFY). Lossy by nature: followers poll the journal too."""

    def wait(self, timeout: float) -> list[Notice]:
        """Block until notices arrive or `timeout` seconds pass (then []). `JournalUnreachableError` when the
        connection is lost: the caller opens a new feed once the journal is back, and re-reads the journal."""

    def close(self) -> None: ...


class BlobBackend(Protocol):
    where: str

    def put(self, digest: str, data: bytes) -> None:
        """Store `data` under `digest` durably (idempotent: an existing blob is left as it is)."""

    def get(self, digest: str) -> bytes:
        """The bytes of a blob; `BlobCorruptError` naming its location when it cannot be read."""

    def repair(self, digest: str) -> bytes:
        """The bytes of a blob once more, from the source of truth, after what `get` returned failed its hash check:
        a cache fetches the shared copy again and rewrites its own; a backend without a copy reads again."""

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

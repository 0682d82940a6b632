"""What the store hands out and what it raises, shared by every backend and by its callers.

Kept apart from the backends so that serving and the HTTP layer name records and errors without importing
SQLite or PostgreSQL code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class VersionRecord:
    """One committed version as the journal keeps it: enough to rebuild it exactly, with its weights in blobs."""

    model: str
    version: int
    parent: int | None
    ops: list[dict[str, Any]]
    spec: dict[str, Any]
    blobs: dict[str, str]  # layer node id -> blob digest (layers without tensors are absent)
    created_at: float
    shapes: dict[str, Any] = field(default_factory=dict)  # node id -> [probe a, probe b, datatype]
    #: Committed without becoming current (`"stage": true`): it serves requests that name it until promoted.
    staged: bool = False


@dataclass(frozen=True)
class Head:
    """The newest committed version of one model, as the journal has it (what a follower catches up to)."""

    model: str
    #: A fresh id each time a model of this name is created: a model deleted and created again between two polls
    #: is a different model, though its version numbers start over.
    incarnation: str
    version: int
    committed_at: float  # seconds since the epoch, when the head's row committed
    #: The version requests that name none run on: the newest unstaged version, or the one last promoted.
    current: int = 0
    #: Bumped by every change to the model's documents (rollouts, datasets, evaluations, jobs): followers re-read
    #: them when it moves.
    docs_rev: int = 0

    def __post_init__(self) -> None:
        if self.current == 0:  # a journal that predates staging: the newest version is the current one
            object.__setattr__(self, "current", self.version)


@dataclass(frozen=True)
class Doc:
    """A model's document in the journal: a rollout and its decisions, a dataset, an evaluation, a fit job. Written
    with optimistic concurrency (`rev`), so that of two replicas deciding the same rollout only one wins."""

    model: str
    kind: str
    key: str
    value: dict[str, Any]
    rev: int
    updated_at: float
    #: A blob the document refers to (a dataset's safetensors), kept by gc while the document exists.
    digest: str | None = None


@dataclass(frozen=True)
class ReplicaRecord:
    """One server process following the journal, as its heartbeat row says."""

    id: str
    address: str  # where clients reach it, e.g. http://10.0.0.7:8000
    applied: dict[str, int]  # model -> version live on this replica
    started_at: float
    last_seen: float  # set by the journal when the heartbeat is written


@dataclass(frozen=True)
class Notice:
    """A wake-up from the journal's change feed. Only a hint: the journal itself is the truth."""

    model: str
    version: int | None  # None: the model was deleted


@dataclass(frozen=True)
class GcResult:
    removed_versions: list[int]
    removed_blobs: int


class StoreError(Exception):
    """Base of the store's errors. `retry_after_s` is set where retrying the same request can succeed."""

    retry_after_s: int | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class JournalError(StoreError):
    """The journal cannot be opened or read (a damaged file, a schema from a newer release)."""


class StoreUnavailableError(StoreError):
    """The store cannot take writes now: a read-only or unusable state dir, or a database that is down."""


class JournalUnreachableError(StoreUnavailableError):
    """The journal's database cannot be reached; a retry may succeed once it is back."""

    retry_after_s = 1


class StorageFullError(StoreError):
    """The device under the store is full. `needed` is the number of bytes the write wanted, when known."""

    def __init__(self, message: str, needed: int | None = None) -> None:
        super().__init__(message)
        self.needed = needed


class VersionConflictError(StoreError):
    """A version number was already taken (another writer committed first), or the model the row belongs to was
    created or deleted meanwhile. The constructors word each case the same in every backend."""

    @classmethod
    def taken(cls, model: str, version: int, where: str) -> VersionConflictError:
        return cls(f"{model} v{version} exists in the journal {where} (another writer committed it first)")

    @classmethod
    def exists(cls, model: str, where: str) -> VersionConflictError:
        return cls(f"model {model!r} exists in the journal {where} already")

    @classmethod
    def missing_version(cls, model: str, version: int, where: str) -> VersionConflictError:
        return cls(f"{model} v{version} does not exist in the journal {where} (deleted meanwhile?)")

    @classmethod
    def missing(cls, model: str, where: str) -> VersionConflictError:
        return cls(f"model {model!r} does not exist in the journal {where} (deleted meanwhile, or never created)")


class DocConflictError(StoreError):
    """A document changed since it was read (another writer, maybe another replica, got there first)."""


class BlobCorruptError(StoreError):
    """A blob's content does not match its name, it cannot be parsed, or it is missing."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"weight blob {where} is corrupt: {reason}")
        self.where = where

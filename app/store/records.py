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
    """A version number was already taken (another writer committed first)."""


class BlobCorruptError(StoreError):
    """A blob's content does not match its name, it cannot be parsed, or it is missing."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"weight blob {where} is corrupt: {reason}")
        self.where = where

"""Durability: the journal of versions and the content-addressed weight blobs, behind two small backends."""

from .backend import BlobBackend, ChangeFeed, JournalBackend
from .factory import open_store
from .records import (
    BlobCorruptError,
    Doc,
    DocConflictError,
    GcResult,
    Head,
    JournalError,
    JournalUnreachableError,
    Notice,
    ReplicaRecord,
    StorageFullError,
    StoreError,
    StoreUnavailableError,
    VersionConflictError,
    VersionRecord,
)
from .store import Store

__all__ = [
    "BlobBackend",
    "BlobCorruptError",
    "ChangeFeed",
    "Doc",
    "DocConflictError",
    "GcResult",
    "Head",
    "JournalBackend",
    "JournalError",
    "JournalUnreachableError",
    "Notice",
    "ReplicaRecord",
    "StorageFullError",
    "Store",
    "StoreError",
    "StoreUnavailableError",
    "VersionConflictError",
    "VersionRecord",
    "open_store",
]

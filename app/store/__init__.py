"""Durability: the journal of versions and the content-addressed weight blobs, behind two small backends."""

from .backend import BlobBackend, JournalBackend
from .factory import open_store
from .records import (
    BlobCorruptError,
    GcResult,
    JournalError,
    JournalUnreachableError,
    StorageFullError,
    StoreError,
    StoreUnavailableError,
    VersionConflictError,
    VersionRecord,
)
from .store import Store

__all__ = [
    "BlobBackend", "BlobCorruptError", "GcResult", "JournalBackend", "JournalError", "JournalUnreachableError",
    "StorageFullError", "Store", "StoreError", "StoreUnavailableError", "VersionConflictError", "VersionRecord",
    "open_store",
]  # fmt: skip

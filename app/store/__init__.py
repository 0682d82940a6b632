"""Durability: the journal of versions and the content-addressed weight blobs under the state dir."""

from .blobs import BlobCorruptError
from .journal import JournalError
from .store import GcResult, Store

__all__ = ["BlobCorruptError", "GcResult", "JournalError", "Store"]

"""Durable versions: the journal (what exists) plus content-addressed blobs (the weights).

Commit order, per edit: (1) write and fsync the blobs of layers this version changed, (2) commit the
journal row, (3) the caller swaps the version in, (4) the caller answers. A crash before (2) leaves only
unreferenced blobs (swept by gc); after (2) the version exists in full. Hence every acknowledged edit is
durable, and no half-written version can appear on restart.
"""

from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from app.graph import ModelVersion, NotFoundError, parse_spec, spec_json
from app.graph.version import make_version

from .blobs import BlobCorruptError, BlobStore
from .journal import Journal, JournalError, VersionRecord

log = logging.getLogger("morphserve.store")

__all__ = ["BlobCorruptError", "GcResult", "JournalError", "Store"]


@dataclass(frozen=True)
class GcResult:
    removed_versions: list[int]
    removed_blobs: int


class Store:
    def __init__(self, state_dir: Path, *, fsync: bool = True) -> None:
        self.state_dir = state_dir
        self.journal = Journal(state_dir / "journal.sqlite3", fsync=fsync)
        self.blobs = BlobStore(state_dir / "blobs", fsync=fsync)
        swept = self.blobs.sweep_temporaries()
        if swept:
            log.info("removed %d half-written blob(s) left by an earlier crash", swept)
        self._lock = threading.Lock()
        # Digest of each live module, so a version re-hashes only the layers it changed.
        self._digests: dict[int, tuple[weakref.ref[nn.Module], str | None]] = {}
        # Modules loaded from blobs, shared between versions loaded later (same layer, same weights).
        self._loaded: weakref.WeakValueDictionary[tuple[str, str], nn.Module] = weakref.WeakValueDictionary()

    def close(self) -> None:
        self.journal.close()

    # -- writing -------------------------------------------------------------------------------------------
    def _digest(self, module: nn.Module) -> str | None:
        hit = self._digests.get(id(module))
        if hit is not None and hit[0]() is module and (hit[1] is None or self.blobs.path(hit[1]).exists()):
            return hit[1]
        tensors = module.state_dict()
        digest = self.blobs.put(tensors) if tensors else None
        self._digests[id(module)] = (weakref.ref(module), digest)
        return digest

    def commit(self, v: ModelVersion) -> None:
        """Make `v` durable: blobs first (fsynced), then the journal row. Returns once both are on disk."""
        with self._lock:
            if len(self._digests) > 4096:
                self._digests = {k: e for k, e in self._digests.items() if e[0]() is not None}
            blobs = {nid: d for nid, m in v.modules.items() if (d := self._digest(m)) is not None}
            self.journal.append(VersionRecord(v.model, v.version, v.parent, list(v.ops), spec_json(v), blobs,
                                              v.created_at, v.recorded_shapes()))  # fmt: skip

    # -- reading -------------------------------------------------------------------------------------------
    def models(self) -> list[str]:
        return self.journal.models()

    def records(self, model: str) -> list[VersionRecord]:
        return self.journal.versions(model)

    def has(self, model: str) -> bool:
        return self.journal.latest(model) is not None

    def load(self, model: str, version: int | None = None, previous: ModelVersion | None = None) -> ModelVersion:
        """A version rebuilt from its journal row and blobs (each blob's hash checked)."""
        r = self.journal.latest(model) if version is None else self.journal.get(model, version)
        if r is None:
            raise NotFoundError(f"model {model!r} has no version {version} in the journal", version=version)
        spec = parse_spec(r.spec)
        modules: dict[str, nn.Module] = {}
        for node in spec.nodes:
            if node.layer is None:
                continue
            digest = r.blobs.get(node.id)
            key = (digest or "", node.layer.model_dump_json())
            module = self._loaded.get(key)
            if module is None:
                module = node.layer.build()
                if digest is not None:
                    module.load_state_dict(self.blobs.get(digest))
                self._loaded[key] = module
                self._digests[id(module)] = (weakref.ref(module), digest)
            modules[node.id] = module
        return make_version(model, r.version, r.parent, spec, modules, previous=previous, ops=tuple(r.ops),
                            created_at=r.created_at, recorded_shapes=r.shapes)  # fmt: skip

    # -- retention -----------------------------------------------------------------------------------------
    def pin(self, model: str, version: int) -> None:
        if self.journal.get(model, version) is None:
            raise NotFoundError(f"model {model!r} has no version {version}", version=version)
        self.journal.pin(model, version)

    def unpin(self, model: str, version: int) -> None:
        self.journal.unpin(model, version)

    def pins(self, model: str) -> set[int]:
        return self.journal.pins(model)

    def gc(self, model: str, keep: int, also_keep: set[int] = frozenset()) -> GcResult:  # type: ignore[assignment]
        """Drop all but the last `keep` versions (never the current or a pinned one), then unreferenced blobs."""
        with self._lock:
            records = self.journal.versions(model)
            if not records:
                raise NotFoundError(f"model {model!r} has no versions in the journal")
            protected = {r.version for r in records[-max(keep, 1):]} | self.journal.pins(model) | set(also_keep)
            doomed = [r.version for r in records if r.version not in protected]
            if doomed:
                self.journal.delete_versions(model, doomed)
            return GcResult(doomed, self._sweep())

    def delete_model(self, model: str) -> None:
        with self._lock:
            self.journal.delete_model(model)
            self._sweep()

    def _sweep(self) -> int:
        unreferenced = self.blobs.digests() - self.journal.referenced_blobs()
        for d in unreferenced:
            self.blobs.delete(d)
        return len(unreferenced)

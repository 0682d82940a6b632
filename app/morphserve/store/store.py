"""Durable versions: a journal backend (what exists) plus a blob backend (the weights), and the rules that tie
them together.

Commit order, per edit: (1) write the blobs of layers this version changed (durable when `put` returns),
(2) append the journal row, checking inside its transaction that every blob it names exists, (3) the caller
swaps the version in, (4) the caller answers. A crash before (2) leaves only unreferenced blobs (swept by gc);
after (2) the version exists in full. Blob sweeps run under the journal's sweep lock, which excludes (2) in any
process: a sweep that ran between a commit's (1) and (2) may delete a blob that commit wrote or reused, but (2)
then finds it missing and writes it again before its row commits, so no row ever names a missing blob. A grace
period (unreferenced blobs younger than it survive) can spare such commits the rewrite.

With a shared journal (PostgreSQL) the same order holds across replicas: the sweep lock is a database lock that
every append takes shared, and each replica also edits under `edit_lock(model)`, which the serving layer holds
from catching up to the head until the commit, so that editors of one model take turns.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from morphserve.graph.bundle import spec_json
from morphserve.graph.errors import NotFoundError
from morphserve.graph.precision import conform
from morphserve.graph.spec import parse_spec
from morphserve.graph.version import ModelVersion, make_version

from .backend import BlobBackend, ChangeFeed, JournalBackend
from .records import BlobCorruptError, Doc, GcResult, Head, ReplicaRecord, StoreUnavailableError, VersionRecord

log = logging.getLogger("morphserve.store")

#: Unreferenced blobs younger than this survive a sweep (a commit in flight may have written them already; it would
#: rewrite them if swept, so 0 is safe and frees space at once).
SWEEP_GRACE_S = 0.0


def encode(tensors: dict[str, torch.Tensor]) -> tuple[str, bytes]:
    """A layer's tensors as safetensors bytes and their SHA-256 (sorted keys: same tensors, same digest)."""
    data = st_save({k: v.detach().contiguous().cpu() for k, v in sorted(tensors.items())})
    return hashlib.sha256(data).hexdigest(), data


class Store:
    def __init__(
        self,
        journal: JournalBackend,
        blobs: BlobBackend,
        *,
        unavailable: str | None = None,
        damaged: str | None = None,
        sweep_grace_s: float = SWEEP_GRACE_S,
    ) -> None:
        """`unavailable`: why this store takes no writes (the state dir could not be opened, so the store is in
        memory); reads still work. `damaged`: why `journal` itself takes no writes, not even the first version of
        a model the server was told to serve: nothing is written over a damaged journal before it is recovered."""
        self.journal = journal
        self.blobs = blobs
        self.unavailable = unavailable or damaged
        self.damaged = damaged
        self.sweep_grace_s = sweep_grace_s
        self._lock = threading.Lock()
        # Digest of each live module, so a version re-hashes only the layers it changed.
        self._digests: dict[int, tuple[weakref.ref[nn.Module], str | None]] = {}
        # Modules loaded from blobs, shared between versions loaded later (same layer, same weights).
        self._loaded: weakref.WeakValueDictionary[tuple[str, str], nn.Module] = weakref.WeakValueDictionary()
        swept = blobs.sweep_temporaries()
        if swept:
            log.info("removed %d half-written blob(s) left by an earlier crash", swept)

    @property
    def where(self) -> str:
        return self.journal.where

    def close(self) -> None:
        self.journal.close()
        self.blobs.close()

    def _writable(self) -> None:
        if self.unavailable is not None:
            raise StoreUnavailableError(f"edits are not possible: {self.unavailable}")

    # -- writing -------------------------------------------------------------------------------------------
    def _digest(self, module: nn.Module) -> str | None:
        hit = self._digests.get(id(module))
        if hit is not None and hit[0]() is module:
            return hit[1]
        tensors = module.state_dict()
        digest = None
        if tensors:
            digest, data = encode(tensors)
            self.blobs.put(digest, data)
        self._digests[id(module)] = (weakref.ref(module), digest)
        return digest

    def write_blobs(self, v: ModelVersion) -> None:
        """Write (and fsync) the blobs of `v` that are new, before its commit: the pipeline runs this beside the
        build and warm-up, and `commit` then finds every digest cached and appends only the journal row. A blob
        whose version never commits is unreferenced, and the next sweep removes it like any other."""
        self._writable()
        with self._lock:
            for m in v.modules.values():
                self._digest(m)

    def commit(
        self, v: ModelVersion, *, startup: bool = False, create: bool = False, stage: bool = False
    ) -> str | None:
        """Make `v` durable: blobs first, then the journal row. Returns once both are.

        `startup`: a model the server was told to serve, recorded even by a store that takes no edits (it then
        lives in memory), so that its history and views work like any other's.
        `create`: `v` is the first version of a new model; its `models` row gets a fresh incarnation id (uuid4
        hex), which is returned (else None). A model of that name existing already is a `VersionConflictError`,
        and so is a version of a model that does not exist (any more) without `create`.
        `stage`: the version is durable but does not become the model's current one (a promotion does that).
        """
        if not startup or self.damaged:
            self._writable()
        incarnation = uuid.uuid4().hex if create else None
        with self._lock:
            if len(self._digests) > 4096:
                self._digests = {k: e for k, e in self._digests.items() if e[0]() is not None}
            blobs = {nid: d for nid, m in v.modules.items() if (d := self._digest(m)) is not None}
            record = VersionRecord(
                v.model,
                v.version,
                v.parent,
                list(v.ops),
                spec_json(v),
                blobs,
                v.created_at,
                v.recorded_shapes(),
                staged=stage,
            )
        # The journal serialises writers itself: a slow database must not hold up other models' commits here.
        self.journal.append(record, before_commit=self._ensure_blobs(v, blobs), create=incarnation)
        return incarnation

    def _ensure_blobs(self, v: ModelVersion, blobs: dict[str, str]) -> Callable[[], None]:
        """Inside the journal transaction: any blob a sweep removed since it was written (or reused) is written
        again before the row that names it commits."""

        def check() -> None:
            missing = set(blobs.values()) - self.blobs.present(set(blobs.values()))
            for nid, digest in blobs.items():
                if digest in missing:
                    log.info("blob %s of %s v%d was swept meanwhile; writing it again", digest[:12], v.model, v.version)
                    self.blobs.put(*encode(v.modules[nid].state_dict()))
                    missing.discard(digest)

        return check

    def set_current(self, model: str, version: int) -> None:
        """Promote: `version` (committed, maybe staged) becomes the one requests that name none run on."""
        self._writable()
        self.journal.set_current(model, version)

    # -- documents (rollouts, datasets, evaluations, jobs) -----------------------------------------------------
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
        self._writable()
        return self.journal.put_doc(model, kind, key, value, expect_rev=expect_rev, digest=digest, current=current)

    def delete_doc(self, model: str, kind: str, key: str) -> None:
        self._writable()
        self.journal.delete_doc(model, kind, key)

    def docs(self, model: str, kind: str) -> list[Doc]:
        return self.journal.docs(model, kind)

    def doc(self, model: str, kind: str, key: str) -> Doc | None:
        return self.journal.doc(model, kind, key)

    def put_blob(self, data: bytes) -> str:
        """Store bytes that a document refers to (a dataset), content-addressed; their digest."""
        self._writable()
        digest = hashlib.sha256(data).hexdigest()
        self.blobs.put(digest, data)
        return digest

    def blob(self, digest: str) -> bytes:
        """A document's blob, its hash checked (a cached copy is repaired once from the shared one)."""
        data = self.blobs.get(digest)
        if hashlib.sha256(data).hexdigest() != digest:
            data = self.blobs.repair(digest)
            if hashlib.sha256(data).hexdigest() != digest:
                raise BlobCorruptError(self.blobs.locate(digest), "its content does not hash to its name")
        return data

    # -- reading -------------------------------------------------------------------------------------------
    def models(self) -> list[str]:
        return self.journal.models()

    def records(self, model: str) -> list[VersionRecord]:
        return self.journal.versions(model)

    def version_numbers(self, model: str) -> list[int]:
        return self.journal.version_numbers(model)

    def has(self, model: str) -> bool:
        return self.journal.latest(model) is not None

    def heads(self) -> dict[str, Head]:
        """Every model with its incarnation and newest version: what followers poll."""
        return self.journal.heads()

    def changes(self) -> ChangeFeed | None:
        """A new wake-up feed (PostgreSQL LISTEN), or None where followers can only poll."""
        return self.journal.changes()

    # -- coordination --------------------------------------------------------------------------------------
    def edit_lock(self, model: str, *, timeout_s: float | None = None) -> AbstractContextManager[None]:
        """Held from catching up to the head until the commit: one editor of `model` at a time, in every process
        sharing the journal."""
        return self.journal.edit_lock(model, timeout_s=timeout_s)

    def heartbeat(self, replica: ReplicaRecord) -> None:
        self.journal.heartbeat(replica)

    def replicas(self) -> list[ReplicaRecord]:
        return self.journal.replicas()

    def forget_replica(self, replica_id: str) -> None:
        self.journal.forget_replica(replica_id)

    def tensors(self, digest: str) -> dict[str, torch.Tensor]:
        """The tensors of a blob, after checking that its content still hashes to its name. A mismatch is given one
        `repair` (a replica's cached copy is fetched again from the shared store) before it is corruption."""
        where = self.blobs.locate(digest)
        data = self.blobs.get(digest)
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            data = self.blobs.repair(digest)
            actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise BlobCorruptError(where, f"its content hashes to {actual[:16]}…")
        try:
            return st_load(data)
        except Exception as e:  # noqa: BLE001 - a parse failure is corruption too
            raise BlobCorruptError(where, f"not a safetensors file ({e})") from None

    def load(self, model: str, version: int | None = None, previous: ModelVersion | None = None) -> ModelVersion:
        """A version rebuilt from its journal row and blobs (each blob's hash checked)."""
        if version is None:  # the current version (not a newer staged one)
            head = self.journal.heads().get(model)
            r = None if head is None else self.journal.get(model, head.current)
        else:
            r = self.journal.get(model, version)
        if r is None:
            raise NotFoundError(f"model {model!r} has no version {version} in the journal", version=version)
        spec = parse_spec(r.spec)
        modules: dict[str, nn.Module] = {}
        for node in spec.nodes:
            what = node.layer if node.layer is not None else node.parameter
            if what is None:  # a function: nothing to load
                continue
            digest = r.blobs.get(node.id)
            key = (digest or "", what.model_dump_json())
            module = self._loaded.get(key)
            if module is None:
                module = conform(node.build_module(), spec.compute_datatype)  # a BF16 model's blobs are BF16
                if digest is not None:
                    module.load_state_dict(self.tensors(digest))
                self._loaded[key] = module
                self._digests[id(module)] = (weakref.ref(module), digest)
            modules[node.id] = module
        return make_version(
            model,
            r.version,
            r.parent,
            spec,
            modules,
            previous=previous,
            ops=tuple(r.ops),
            created_at=r.created_at,
            recorded_shapes=r.shapes,
        )

    # -- retention -----------------------------------------------------------------------------------------
    def pin(self, model: str, version: int) -> None:
        self._writable()
        if self.journal.get(model, version) is None:
            raise NotFoundError(f"model {model!r} has no version {version}", version=version)
        self.journal.pin(model, version)

    def unpin(self, model: str, version: int) -> None:
        self._writable()
        self.journal.unpin(model, version)

    def pins(self, model: str) -> set[int]:
        return self.journal.pins(model)

    def gc(self, model: str, keep: int, also_keep: set[int] | frozenset[int] = frozenset()) -> GcResult:
        """Drop all but the last `keep` versions (never the current or a pinned one), then unreferenced blobs."""
        self._writable()
        numbers = self.journal.version_numbers(model)
        if not numbers:
            raise NotFoundError(f"model {model!r} has no versions in the journal")
        protected = set(numbers[-max(keep, 1) :]) | self.journal.pins(model) | set(also_keep)
        doomed = [v for v in numbers if v not in protected]
        if doomed:
            self.journal.delete_versions(model, doomed)
        return GcResult(doomed, self.sweep())

    def delete_model(self, model: str) -> None:
        self._writable()
        self.journal.delete_model(model)
        self.sweep()

    def sweep(self) -> int:
        """Delete blobs no row references, except those younger than the grace period. Not over a damaged
        journal: the rows it lost still need their blobs to be recovered."""
        if self.damaged:
            return 0
        cutoff = time.time() - self.sweep_grace_s
        with self.journal.sweep_lock() as referenced:
            doomed = [d for d, written in self.blobs.listing() if d not in referenced and written < cutoff]
            return self.blobs.delete(doomed)

    def reset(self) -> None:
        """Forget everything (`--fresh`)."""
        self.journal.reset()
        self.blobs.reset()
        self._digests.clear()

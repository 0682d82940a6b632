"""The model registry: the serving layer's one entry point for the HTTP layer.

It owns, per model, the version history (graph library), the device worker and an edit lock. Edits run
in the caller's thread (the HTTP layer uses a thread pool): validate and build off the hot path, place on
the device, warm up, then hand the swap to the worker and wait until it is live.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app.graph import (
    GraphDiff,
    GraphError,
    LiveModel,
    ModelVersion,
    NotFoundError,
    SpecError,
    diff,
    from_spec,
    load_zoo,
    read_bundle,
)
from app.graph.edits import EditError, Op, SetWeightsOp
from app.graph.errors import short_message
from app.graph.zoo import ZOO
from app.settings import Settings
from app.store import BlobCorruptError, GcResult, JournalError, Store
from app.store.journal import VersionRecord

from .errors import BadInputError, InferenceTimeoutError, ModelExistsError, NotResidentError, UnavailableError
from .events import EventHub  # events hook
from .metrics import Metrics
from .placement import Placement, resolve_device
from .worker import DeviceWorker, InferItem, InferResult

log = logging.getLogger("morphserve.registry")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_NUMPY_OF = {torch.bool: np.bool_, torch.int8: np.int8, torch.int16: np.int16, torch.int32: np.int32,
             torch.int64: np.int64, torch.uint8: np.uint8, torch.uint16: np.uint16, torch.uint32: np.uint32,
             torch.uint64: np.uint64, torch.float16: np.float16, torch.float32: np.float32,
             torch.float64: np.float64}  # fmt: skip


@dataclass
class ServedModel:
    live: LiveModel
    worker: DeviceWorker
    placement: Placement
    edit_lock: threading.Lock
    load_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def name(self) -> str:
        return self.live.name


@dataclass(frozen=True)
class EditOutcome:
    model: str
    version: ModelVersion
    previous: ModelVersion
    diff: GraphDiff
    timings_ms: dict[str, float]
    dry_run: bool


def numpy_dtype(dtype: torch.dtype) -> np.dtype[Any]:
    return np.dtype(_NUMPY_OF[dtype])


class Registry:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.device = resolve_device(settings.device)
        self._models: dict[str, ServedModel] = {}
        self._lock = threading.Lock()
        #: Models of the state dir that could not be restored, with the reason (they are not served).
        self.failed: dict[str, str] = {}
        self.events = EventHub()  # events hook
        self.store: Store | None = self._open_store()

    def _open_store(self) -> Store | None:
        state = self.settings.state_dir
        if self.settings.fresh:
            for name in ("journal.sqlite3", "journal.sqlite3-wal", "journal.sqlite3-shm", "blobs"):
                target = state / name
                if target.is_dir():
                    shutil.rmtree(target)
                else:
                    target.unlink(missing_ok=True)
            log.warning("--fresh: emptied state dir %s", state)
        try:
            return Store(state, fsync=self.settings.fsync)
        except (JournalError, OSError) as e:
            # Serve what we can, write nothing: the unreadable journal stays as it is for an operator to inspect.
            log.error("state dir unusable, edits will not be durable and nothing there is touched: %s", e)
            self.failed["*"] = str(e)
            return None

    # -- lifecycle ---------------------------------------------------------------------------------------
    def load_from_settings(self) -> None:
        """Restore every model of the state dir at its last version, then load `--model`s not already there."""
        if self.store is not None:
            for name in self.store.models():
                try:
                    first = self.store.load(name)
                except (BlobCorruptError, JournalError, GraphError, ValueError, RuntimeError) as e:
                    log.error("model %s cannot be restored from the state dir and is not served: %s", name, e)
                    self.failed[name] = str(e)
                    continue
                log.info("model %s: restored version %d from %s", name, first.version, self.settings.state_dir)
                self.add(first, persist=False)
        for entry in self.settings.models:
            name, _, source = entry.partition("=") if "=" in entry else (None, "", entry)
            key = name or (source if source in ZOO else None)
            if key is not None and (key in self._models or key in self.failed):
                if key in self._models:
                    log.info("model %s: --model %s given, resuming from the state dir at version %d instead",
                             key, entry, self._models[key].live.current.version)  # fmt: skip
                continue
            first = self._load_source(source, name)
            if first.model in self._models or first.model in self.failed:
                log.info("model %s: already in the state dir, resuming from it", first.model)
                continue
            self.add(first)

    def _load_source(self, source: str, name: str | None) -> ModelVersion:
        if source in ZOO:
            return load_zoo(source, as_name=name or source)
        path = Path(source)
        if not path.exists():
            raise SpecError(f"model source {source!r} is neither a zoo model ({', '.join(ZOO)}) nor a file")
        spec, tensors = read_bundle(path)
        return from_spec(spec, tensors, name=name or spec.get("name") or path.stem)

    def add(self, first: ModelVersion, *, persist: bool = True) -> ServedModel:
        """Serve a model from `first` (its latest version); `persist` journals it as a new model."""
        if not _NAME.match(first.model):
            raise SpecError(f"model name {first.model!r} must match {_NAME.pattern}")
        with self._lock:
            if first.model in self._models:
                raise ModelExistsError(f"model {first.model!r} already exists")
            if persist and self.store is not None and self.store.has(first.model):
                raise ModelExistsError(f"model {first.model!r} exists in the state dir")
            placement = Placement(self.device)
            worker = DeviceWorker(
                first.model, self.device, max_batch_size=self.settings.max_batch_size,
                max_batch_delay_s=self.settings.max_batch_delay_ms / 1000, max_queue=self.settings.max_queue,
                resident_limit=self.settings.resident_versions, metrics=self.metrics,
            )  # fmt: skip
            runnable = placement.place(first)
            _warm_up(first, runnable, self.device)
            if persist and self.store is not None:
                self.store.commit(first)
            live = LiveModel(first, loader=self._loader(first.model))
            served = ServedModel(live, worker, placement, threading.Lock())
            worker.start(first.version, runnable)
            self._models[first.model] = served
            self.events.model_created(first.model, first.version)  # events hook
        log.info("model %s: serving version %d on %s", first.model, first.version, self.device)
        return served

    def _loader(self, name: str) -> Any:
        store = self.store
        if store is None:
            return None
        return lambda version: store.load(name, version, previous=self._models[name].live.current)

    def add_zoo(self, name: str, zoo: str, options: Mapping[str, Any]) -> ServedModel:
        return self.add(load_zoo(zoo, as_name=name, **options))

    def add_spec(self, name: str, spec: Mapping[str, Any], tensors: Mapping[str, torch.Tensor] | None = None) -> ServedModel:
        return self.add(from_spec(dict(spec), tensors, name=name))

    def remove(self, name: str) -> None:
        with self._lock:
            served = self.get(name)
            del self._models[name]
        served.worker.stop()
        if self.store is not None:
            with served.edit_lock:
                self.store.delete_model(name)
        log.info("model %s: removed", name)
        self.events.model_deleted(name)  # events hook

    def close(self) -> None:
        """Stop every worker (the state dir keeps the models for the next start)."""
        with self._lock:
            models, self._models = list(self._models.values()), {}
        for served in models:
            served.worker.stop()
        if self.store is not None:
            self.store.close()

    # -- lookups -------------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(self._models)

    def get(self, name: str) -> ServedModel:
        served = self._models.get(name)
        if served is None:
            raise NotFoundError(f"model {name!r} does not exist", model=name)
        return served

    def version(self, name: str, version: int | None = None) -> ModelVersion:
        return self.get(name).live.get(version)

    def resident(self, name: str) -> list[int]:
        return self.get(name).worker.resident_versions()

    def output_names(self, name: str) -> list[str]:
        """Output names, in order. They are fixed for a model's life (edits rewire outputs, never rename them),
        so the current version's apply to whichever version computed a result."""
        return [o.name for o in self.get(name).live.current.outputs]

    def history(self, name: str) -> list[VersionRecord]:
        """Every version of a model: from the journal when durable, else those in memory."""
        served = self.get(name)
        if self.store is not None:
            return self.store.records(name)
        return [VersionRecord(name, v.version, v.parent, list(v.ops), {}, {}, v.created_at)
                for v in served.live.versions()]  # fmt: skip

    def pins(self, name: str) -> set[int]:
        self.get(name)
        return self.store.pins(name) if self.store is not None else set()

    def pin(self, name: str, version: int, pinned: bool = True) -> None:
        self.get(name)
        if self.store is None:
            raise UnavailableError("pinning needs a usable state dir")
        if pinned:
            self.store.pin(name, version)
        else:
            self.store.unpin(name, version)

    def gc(self, name: str, keep: int) -> GcResult:
        """Drop old versions (never the current or a pinned one) and the blobs nothing references any more."""
        served = self.get(name)
        if self.store is None:
            raise UnavailableError("gc needs a usable state dir")
        with served.edit_lock:
            result = self.store.gc(name, keep, {served.live.current.version})
            self._forget(served, result.removed_versions)
        return result

    @staticmethod
    def _forget(served: ServedModel, versions: list[int]) -> None:
        for v in versions:
            served.live.forget(v)
        if versions:
            served.worker.drop(set(versions)).result()

    # -- inference -----------------------------------------------------------------------------------------
    def prepare_inputs(self, served: ServedModel, arrays: Mapping[str, np.ndarray], version: ModelVersion
                       ) -> tuple[torch.Tensor, ...]:  # fmt: skip
        """Check names, ranks, shapes and dtypes against the signature; tensors in signature order."""
        sig = version.inputs
        names = [t.name for t in sig]
        unknown = [k for k in arrays if k not in names]
        if unknown:
            raise BadInputError(f"model {served.name!r} has no input {unknown[0]!r}; its inputs are {names}",
                                expected=names, got=list(arrays))  # fmt: skip
        tensors = []
        rows: int | None = None
        for t in sig:
            if t.name not in arrays:
                raise BadInputError(f"missing input {t.name!r}", expected=names, got=list(arrays))
            a = arrays[t.name]
            want = numpy_dtype(t.dtype)
            if a.dtype != want:
                raise BadInputError(f"input {t.name!r}: expected datatype {t.datatype}, got {a.dtype.name}",
                                    expected=t.datatype, got=a.dtype.name)  # fmt: skip
            ok = a.ndim == len(t.shape) and all(d == -1 or d == s for d, s in zip(t.shape, a.shape, strict=False))
            if not ok or a.shape[0] == 0 or 0 in a.shape:
                raise BadInputError(f"input {t.name!r}: expected shape {list(t.shape)}, got {list(a.shape)}",
                                    expected=list(t.shape), got=list(a.shape))  # fmt: skip
            if rows is not None and a.shape[0] != rows:
                raise BadInputError(f"inputs disagree on the batch size: {rows} vs {a.shape[0]}")
            rows = a.shape[0]
            tensors.append(torch.from_numpy(np.ascontiguousarray(a)))
        return tuple(tensors)

    async def infer(self, name: str, arrays: Mapping[str, np.ndarray], version: int | None = None) -> InferResult:
        served = self.get(name)
        started = time.perf_counter()  # metrics hook: per-model latency
        runnable = None
        if version is not None:
            target = served.live.get(version)  # 404 for a version that never existed
            if version not in served.worker.resident_versions():
                if self.store is None:
                    raise NotResidentError(
                        f"version {version} of {name!r} is not resident on the device (resident: "
                        f"{', '.join(map(str, served.worker.resident_versions()))}); infer on a resident version",
                        version=version,
                    )  # fmt: skip
                runnable = await asyncio.to_thread(self._make_resident, served, target)
        else:
            target = served.live.current
        inputs = self.prepare_inputs(served, arrays, target)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[InferResult] = loop.create_future()

        def _resolve(r: InferResult | BaseException) -> None:
            if fut.done():
                return
            if isinstance(r, BaseException):
                fut.set_exception(r)
            else:
                self.metrics.inference_latency.labels(name).observe(time.perf_counter() - started)  # metrics hook
                fut.set_result(r)

        item = InferItem(inputs, version, lambda r: loop.call_soon_threadsafe(_resolve, r), runnable=runnable)
        for attempt in range(3):
            try:
                served.worker.submit(item)
                break
            except NotResidentError:
                # An edit (or another old version brought back) evicted it after the check above: load it again.
                if version is None or self.store is None or attempt == 2:
                    raise
                item.runnable = await asyncio.to_thread(self._make_resident, served, target)
        try:
            return await asyncio.wait_for(fut, self.settings.request_timeout_s)
        except TimeoutError:
            raise InferenceTimeoutError(
                f"inference on {name!r} took longer than {self.settings.request_timeout_s} s"
            ) from None
        finally:
            if not fut.done() or fut.cancelled():
                served.worker.cancel(item)

    def _make_resident(self, served: ServedModel, version: ModelVersion) -> Any:
        """Bring an evicted version back onto the device (it joins the resident set, not as current); returns its
        runnable for the request that asked (which may run on it even if others evict it again meanwhile), or
        None when it was resident already."""
        with served.load_lock:
            if version.version in served.worker.resident_versions():
                return None
            runnable = served.placement.place(version)
            _warm_up(version, runnable, self.device)
            served.worker.swap(version.version, runnable, make_current=False).result()
            return runnable

    # -- edits ---------------------------------------------------------------------------------------------
    def edit(self, name: str, ops: list[Op] | list[dict[str, Any]], *, if_version: int | None = None,
             dry_run: bool = False, allow_output_change: bool = False) -> EditOutcome:  # fmt: skip
        served = self.get(name)
        return self._commit(served, lambda: served.live.propose(ops, if_version=if_version,
                                                                allow_output_change=allow_output_change),
                            dry_run=dry_run)  # fmt: skip

    def set_weights(self, name: str, node: str, tensors: dict[str, torch.Tensor], *,
                    if_version: int | None = None) -> EditOutcome:  # fmt: skip
        return self.edit(name, [SetWeightsOp.from_tensors(node, tensors)], if_version=if_version)

    def rollback(self, name: str, to: int, *, if_version: int | None = None) -> EditOutcome:
        served = self.get(name)
        return self._commit(served, lambda: served.live.propose_rollback(to, if_version=if_version), dry_run=False)

    def _commit(self, served: ServedModel, propose: Any, *, dry_run: bool) -> EditOutcome:
        with served.edit_lock:
            t0 = time.perf_counter()
            previous = served.live.current
            try:
                candidate: ModelVersion = propose()
                t1 = time.perf_counter()
                candidate.graph_module  # noqa: B018 - build (fx codegen) off the hot path
                if dry_run:
                    t2 = time.perf_counter()
                    return EditOutcome(served.name, candidate, previous, diff(previous, candidate),
                                       _ms(validate=t1 - t0, build=t2 - t1, persist=0.0, swap=0.0, total=t2 - t0),
                                       True)  # fmt: skip
                runnable = served.placement.place(candidate)
                _warm_up(candidate, runnable, self.device)
                t2 = time.perf_counter()
            except Exception:
                self.metrics.edits.labels(served.name, "rejected").inc()
                raise
            if self.store is not None:
                self.store.commit(candidate)  # durable before it serves and before we answer
            t3 = time.perf_counter()
            # Publish to the history first, so that any version a response reports is already known to it.
            served.live.commit(candidate)
            served.worker.swap(candidate.version, runnable).result()
            self.events.version_committed(candidate)  # events hook
            self._after_commit(served)
            t4 = time.perf_counter()
        self.metrics.edits.labels(served.name, "committed").inc()
        self.metrics.edit_latency.labels(served.name).observe(t4 - t0)
        log.info("model %s: version %d live (from %d, %.1f ms)", served.name, candidate.version, previous.version,
                 (t4 - t0) * 1000)  # fmt: skip
        return EditOutcome(served.name, candidate, previous, diff(previous, candidate),
                           _ms(validate=t1 - t0, build=t2 - t1, persist=t3 - t2, swap=t4 - t3, total=t4 - t0),
                           False)  # fmt: skip

    def _after_commit(self, served: ServedModel) -> None:
        """Retention and memory: auto-gc, then keep in memory only what the device holds (the store has the rest)."""
        if self.store is not None and self.settings.keep_versions is not None:
            result = self.store.gc(served.name, self.settings.keep_versions, {served.live.current.version})
            self._forget(served, result.removed_versions)
        resident = set(served.worker.resident_versions())
        if self.store is not None:
            for v in [v.version for v in served.live.versions() if v.version not in resident]:
                served.live.forget(v)
        served.placement.retain(v for v in served.live.versions() if v.version in resident)


def _ms(**seconds: float) -> dict[str, float]:
    return {k: round(v * 1000, 3) for k, v in seconds.items()}


def _warm_up(version: ModelVersion, runnable: Any, device: torch.device) -> None:
    """One forward on a one-row input before the version may serve: it must run, not just type-check."""
    args = []
    for t in version.inputs:
        shape = [1 if i == 0 else (32 if d == -1 else d) for i, d in enumerate(t.shape)]
        args.append(torch.zeros(shape, dtype=t.dtype, device=device))
    try:
        with torch.inference_mode():
            runnable(*args)
    except Exception as e:  # noqa: BLE001 - any failure means the version must not go live
        raise EditError(f"the new version failed its warm-up forward: {short_message(e)}") from None

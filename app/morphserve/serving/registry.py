"""The registry: the serving layer's one entry point for the HTTP layer (a facade over sources, the edit pipeline,
inference and the store).

Every method the HTTP layer calls is one call per route. Methods that may block (store reads, reloads of evicted
versions, graph rendering, edits) are coroutines that run their work on a worker thread, so the event loop never
waits on them; the routes decide nothing about threads.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel

from morphserve.graph import GraphError, ModelVersion, NotFoundError, SetWeightsOp, TensorSpec, parse_spec, shapes
from morphserve.graph.bundle import BundleLimits
from morphserve.graph.edits import recast
from morphserve.graph.views import describe
from morphserve.settings import Settings, worker_index
from morphserve.store import (
    GcResult,
    Store,
    StoreError,
    StoreUnavailableError,
    VersionConflictError,
    VersionRecord,
    open_store,
)

from .budget import MemoryBudget
from .errors import ModelExistsError, ModelTooLargeError
from .events import EventHub  # events hook
from .inference import Inference
from .metrics import Metrics
from .pipeline import EditOutcome, EditPipeline, weights_op
from .placement import Placement, resolve_device
from .priority import SwitchIntervalBoost
from .render import Renders
from .replication import ReplicasView, Replication, ReplicaWait, advertised_address
from .residency import Residency
from .served import ServedModel
from .sources import ModelSource, UploadedBundle, parse_entry
from .worker import DeviceWorker, InferResult

log = logging.getLogger("morphserve.registry")


class ModelStatus(BaseModel):
    """What a served model is now: its version, signature, residency and load (the API's model info)."""

    name: str
    version: int
    versions: int
    resident_versions: list[int]
    device: str
    queue_depth: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    params: int
    #: What the layers compute in; `inputs` and `outputs` show the wire datatypes clients send and receive.
    compute_datatype: str = "FP32"


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str | None = None


class Registry:
    def __init__(self, settings: Settings, metrics: Metrics, store: Store | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.device = resolve_device(settings.device, worker_index())
        torch.set_num_threads(settings.threads_per_worker())
        self.store = store if store is not None else open_store(settings)
        self.budget = MemoryBudget(settings.model_bytes_limit, settings.max_batch_size)
        self.inference = Inference(settings.request_timeout_s)
        self.events = EventHub()  # events hook: committed versions, models created and deleted (SSE)
        self.pipeline = EditPipeline(
            self.store,
            metrics,
            self.budget,
            settings.keep_versions,
            on_commit=lambda _served, v: self.events.version_committed(v),  # events hook
            priority=SwitchIntervalBoost(settings.edit_switch_interval_us / 1e6 or None),
        )
        self.renders = Renders(settings.render_workers, settings.render_timeout_s, settings.max_render_nodes)
        #: The graph JSON of each version in memory, made once (versions never change; a large model's takes
        #: tens of milliseconds of the interpreter each time).
        self._graph_json: weakref.WeakKeyDictionary[ModelVersion, bytes] = weakref.WeakKeyDictionary()
        self._models: dict[str, ServedModel] = {}
        self._deleting: set[str] = set()
        self._lock = threading.Lock()
        #: Models the server was asked to serve (state dir and --model) that could not be loaded, with why.
        self.failed: dict[str, str] = {}
        #: Why the journal's list of models could not be read at start (a damaged journal), or None.
        self.unreadable: str | None = None
        kind = settings.journal.split(":", 1)[0]
        self.replication = Replication(
            self,
            apply=self.pipeline.apply,
            store=self.store,
            metrics=metrics,
            journal_kind="postgresql" if kind.startswith("postgres") else kind,
            interval_s=settings.follow_interval_ms / 1000,
            wait_s=settings.min_version_wait_ms / 1000,
            address=advertised_address(settings.host, settings.port),
        )

    # -- lifecycle ---------------------------------------------------------------------------------------
    def load_from_settings(self) -> None:
        """Restore every model of the journal at its last version, load `--model`s not already there, then follow
        the journal (other replicas' edits, creations and deletions)."""
        try:
            heads = self.store.heads()
        except StoreError as e:  # a damaged journal: report it and serve what --model asks, if it can be journalled
            log.error("the models of %s cannot be read and are not served: %s", self.store.where, e)
            self.unreadable = str(e)
            heads = {}
        for name, head in heads.items():
            self._restore(name, head.incarnation)
        for entry in self.settings.models:
            asked, source = parse_entry(entry)
            if asked is not None and (asked in self._models or asked in self.failed):
                if asked in self._models:
                    log.info(
                        "model %s: --model %s given, resuming from the journal at version %d instead",
                        asked,
                        entry,
                        self._models[asked].serving_version(),
                    )
                continue
            first = source.load(asked, self.budget)
            if first.model in self._models or first.model in self.failed:
                log.info("model %s: already in the journal, resuming from it", first.model)
                continue
            try:
                self._serve(
                    recast(first, self.settings.dtype) if self.settings.dtype else first, persist=True, startup=True
                )
            except (VersionConflictError, ModelExistsError):  # a replica starting beside this one created it first
                self._restore(first.model, self.store.heads()[first.model].incarnation)
            except StoreError as e:  # a damaged journal takes no writes, not even this
                log.error("model %s is not served: %s", first.model, e)
                self.failed[first.model] = str(e)
        # Restored versions skip shape propagation (the journal recorded it), so the first edit would pay its
        # start-up cost (seconds): pay it beside serving instead.
        threading.Thread(target=shapes.prime, name="prime-shapes", daemon=True).start()
        if self.store.unavailable is None:
            self.replication.start()

    def _restore(self, name: str, incarnation: str) -> None:
        try:
            self._check_head(name)  # before its weights are loaded
            first = self.store.load(name)
        except (StoreError, GraphError, ValueError, RuntimeError) as e:
            log.error("model %s cannot be restored from %s and is not served: %s", name, self.store.where, e)
            self.failed[name] = str(e)
            return
        log.info("model %s: restored version %d from %s", name, first.version, self.store.where)
        try:
            self._serve(first, persist=False, incarnation=incarnation)
        except ModelTooLargeError as e:  # its shapes were not recorded, so only the built version could be sized
            log.error("model %s is not served: %s", name, e)
            self.failed[name] = str(e)

    def _check_head(self, name: str) -> None:
        """Size the journal's newest version of `name` against the memory budget from its row alone (the spec for
        the weights, the recorded shapes for the activations): a model over the budget is never loaded."""
        record = self.store.journal.latest(name)
        if record is not None:
            self.budget.check_record(parse_spec(record.spec), record.shapes, f"model {name!r} in the journal")

    def _serve(
        self, first: ModelVersion, *, persist: bool, startup: bool = False, incarnation: str | None = None
    ) -> ServedModel:
        """Serve `first` (a model's latest version); `persist` journals it as a new model."""
        with self._lock:
            if first.model in self._models:
                raise ModelExistsError(f"model {first.model!r} already exists")
            if persist and self.store.has(first.model):
                raise ModelExistsError(f"model {first.model!r} exists in the journal {self.store.where}")
            self.budget.check_version(first, f"model {first.model!r}")  # before its warm-up allocates activations
            placement = Placement(self.device)
            runnable = placement.prepare(first)
            if persist:
                incarnation = self.store.commit(first, startup=startup, create=True)  # a new model: its first row
            name = first.model
            residency = Residency(
                name,
                first,
                runnable,
                capacity=self.settings.resident_versions,
                prepare=placement.prepare,
                load=lambda n: self.store.load(name, n, previous=residency.current()),
                on_evict=placement.retain,
            )
            worker = DeviceWorker(
                residency,
                self.device,
                max_batch_size=self.settings.max_batch_size,
                max_batch_delay_s=self.settings.max_batch_delay_ms / 1000,
                max_queue=self.settings.max_queue,
                metrics=self.metrics,
                batch_wait=self.settings.batch_wait,
            )
            served = ServedModel(residency, worker, incarnation=incarnation)
            worker.start()
            self._models[first.model] = served
            self.events.model_created(first.model, first.version)  # events hook
        log.info("model %s: serving version %d on %s", first.model, first.version, self.device)
        return served

    # -- following other replicas (called by the follower thread, via Replication) ----------------------------
    def local(self, name: str) -> ServedModel | None:
        return self._models.get(name)

    def deleting(self, name: str) -> bool:
        return name in self._deleting

    def may_adopt(self, name: str) -> bool:
        return name not in self.failed and name not in self._deleting

    def adopt(self, name: str, incarnation: str) -> None:
        """Serve a model another replica created (unless it is over this replica's memory budget: then it is
        reported, like a model that failed to load at start, and not tried again on every poll)."""
        try:
            self._check_head(name)
            first = self.store.load(name)
            self._serve(first, persist=False, incarnation=incarnation)
        except ModelTooLargeError as e:
            log.error("model %s (created by another replica) is not served here: %s", name, e)
            self.failed[name] = str(e)

    def drop_local(self, name: str) -> None:
        """Stop serving a model another replica deleted (the journal has no rows of it any more)."""
        with self._lock:
            served = self._models.pop(name, None)
        if served is None:
            return
        with served.edit_lock:
            served.deleted = True
        served.worker.stop()
        self.metrics.forget(name)
        self.events.model_deleted(name)  # events hook
        log.info("model %s: deleted by another replica", name)

    def close(self) -> None:
        """Stop following and every worker (the store keeps the models for the next start)."""
        self.replication.stop()
        with self._lock:
            models, self._models = list(self._models.values()), {}
        for served in models:
            served.worker.stop()
        self.renders.close()
        self.pipeline.close()
        self.store.close()

    # -- models ------------------------------------------------------------------------------------------
    def add(self, name: str, source: ModelSource, dtype: str | None = None) -> ServedModel:
        """Create and serve a new model (blocking: it loads, warms up and journals the first version); `dtype`: the
        datatype it computes in (FP16/BF16; inputs and outputs stay as they are)."""
        if name in self._models:  # before loading anything: a taken name costs nothing
            raise ModelExistsError(f"model {name!r} already exists")
        first = source.load(name, self.budget)
        return self._serve(recast(first, dtype) if dtype else first, persist=True)

    async def create(self, name: str, source: ModelSource, dtype: str | None = None) -> ModelStatus:
        await asyncio.to_thread(self.add, name, source, dtype)
        return await self.status(name)

    def upload_spool(self, name: str) -> UploadedBundle:
        """A source for a bundle the client is uploading, spooled under the state dir (the system temp dir, often
        RAM, only with `--journal memory`); load it with `create(name, spool)` once complete. Refused before a
        byte is read when the model could not be journalled anyway."""
        if self.store.unavailable is not None:
            raise StoreUnavailableError(f"models cannot be created: {self.store.unavailable}")
        spool = self.settings.state_dir / "uploads" if self.settings.journal != "memory" else None  # PostgreSQL too
        return UploadedBundle(name, spool, BundleLimits(max_spec_bytes=self.settings.max_spec_bytes))

    async def remove(self, name: str) -> None:
        served = self.get(name)

        def remove() -> None:
            with self._lock:  # from now on the name is unknown to new requests, and waiting edits find it deleted
                if self._models.get(name) is not served:
                    raise NotFoundError(f"model {name!r} does not exist", model=name)
                del self._models[name]
                served.deleted = True
                self._deleting.add(name)  # the follower must not bring it back before its rows are gone
            try:
                served.worker.stop()  # queued requests and swaps get 503; the batch in flight finishes
                with served.edit_lock, self.store.edit_lock(name):  # after the edit in progress: its row goes too
                    self.store.delete_model(name)
            finally:
                self._deleting.discard(name)

        await asyncio.to_thread(remove)
        self.metrics.forget(name)
        log.info("model %s: removed", name)
        self.events.model_deleted(name)  # events hook

    # -- lookups -----------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(self._models)

    def get(self, name: str) -> ServedModel:
        served = self._models.get(name)
        if served is None:
            raise NotFoundError(f"model {name!r} does not exist", model=name)
        return served

    def current(self, name: str) -> ModelVersion:
        return self.get(name).current()

    async def version(self, name: str, version: int | None = None) -> ModelVersion:
        residency = self.get(name).residency
        if version is None:
            return residency.current()
        held = residency.cached(version)
        return held if held is not None else await asyncio.to_thread(residency.get, version)

    def resident(self, name: str) -> list[int]:
        return self.get(name).residency.resident_versions()

    async def status(self, name: str) -> ModelStatus:
        served = self.get(name)
        count = len(await asyncio.to_thread(self.store.version_numbers, name))
        v = served.current()
        return ModelStatus(
            name=name,
            version=v.version,
            versions=count,
            resident_versions=served.residency.resident_versions(),
            device=str(self.device),
            queue_depth=served.worker.queue_depth(),
            inputs=list(v.inputs),
            outputs=[TensorSpec(name=o.name, datatype=o.datatype or "FP32", shape=o.shape or (-1,)) for o in v.outputs],
            params=v.total_params(),
            compute_datatype=v.spec.compute_datatype or "FP32",
        )

    def readiness(self) -> Readiness:
        """Ready when everything the server was asked to serve is served (an empty server is ready)."""
        if self.unreadable is not None:
            return Readiness(False, f"the journal's models could not be read: {self.unreadable}")
        if self.failed:
            names = ", ".join(sorted(self.failed))
            return Readiness(False, f"model(s) {names} could not be loaded; see the server log")
        return Readiness(True)

    def queue_depths(self) -> dict[str, int]:
        return {name: s.worker.queue_depth() for name, s in list(self._models.items())}

    async def history(self, name: str) -> list[VersionRecord]:
        self.get(name)
        return await asyncio.to_thread(self.store.records, name)

    async def pins(self, name: str) -> set[int]:
        self.get(name)
        return await asyncio.to_thread(self.store.pins, name)

    async def pin(self, name: str, version: int, pinned: bool = True) -> None:
        self.get(name)
        await asyncio.to_thread(self.store.pin if pinned else self.store.unpin, name, version)

    async def gc(self, name: str, keep: int) -> GcResult:
        served = self.get(name)
        return await asyncio.to_thread(self.pipeline.gc, served, keep)

    async def graph_json(self, v: ModelVersion) -> bytes:
        """`describe(v)` as JSON, made once per version."""
        body = self._graph_json.get(v)
        if body is None:
            body = await asyncio.to_thread(lambda: describe(v).model_dump_json().encode())
            self._graph_json[v] = body
        return body

    async def run(self, fn: Any, *args: Any) -> Any:
        """Run a pure, possibly slow function of the graph library (rendering, export) off the event loop."""
        return await asyncio.to_thread(fn, *args)

    # -- inference and edits -----------------------------------------------------------------------------
    async def infer(
        self, name: str, arrays: Mapping[str, np.ndarray], version: int | None = None, *, min_version: int | None = None
    ) -> InferResult:
        """`min_version`: read-your-writes across replicas (wait, bounded, until this replica has applied it)."""
        started = time.perf_counter()  # metrics hook: per-model latency
        if min_version is not None:
            await self.replication.wait_for(name, min_version)
        result = await self.inference.infer(self.get(name), arrays, version)
        self.metrics.inference_latency.labels(name).observe(time.perf_counter() - started)  # metrics hook
        return result

    async def replicas(self) -> ReplicasView:
        return await asyncio.to_thread(self.replication.view)

    async def wait_replicas(self, name: str, version: int, wanted: str, timeout: float) -> ReplicaWait:
        return await self.replication.wait_replicas(name, version, wanted, timeout)

    async def edit(
        self,
        name: str,
        ops: list[Any],
        *,
        if_version: int | None = None,
        dry_run: bool = False,
        allow_output_change: bool = False,
    ) -> EditOutcome:
        served = self.get(name)
        return await asyncio.to_thread(
            self.pipeline.edit,
            served,
            ops,
            if_version=if_version,
            dry_run=dry_run,
            allow_output_change=allow_output_change,
        )

    async def set_weights(
        self, name: str, node: str, tensors: dict[str, torch.Tensor], *, if_version: int | None = None
    ) -> EditOutcome:
        return await self.edit(name, [SetWeightsOp.from_tensors(node, tensors)], if_version=if_version)

    async def upload_weights(self, name: str, node: str, data: bytes, *, if_version: int | None = None) -> EditOutcome:
        """`set_weights` from a safetensors file (keys `<tensor>` or `<node>.<tensor>`), parsed off the loop."""
        served = self.get(name)
        return await asyncio.to_thread(
            lambda: self.pipeline.edit(served, [weights_op(node, data)], if_version=if_version)
        )

    async def rollback(self, name: str, to: int, *, if_version: int | None = None) -> EditOutcome:
        served = self.get(name)
        return await asyncio.to_thread(self.pipeline.rollback, served, to, if_version=if_version)

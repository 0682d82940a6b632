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
    Head,
    Store,
    StoreError,
    StoreUnavailableError,
    VersionConflictError,
    VersionRecord,
    open_store,
)

from .budget import MemoryBudget
from .compile import Compiler
from .cuda_shm import CudaSharedMemory
from .datasets import Datasets
from .errors import BadInputError, ModelExistsError, ModelTooLargeError, RolloutConflictError
from .events import EventHub  # events hook
from .feedback import FeedbackWindow
from .fit import FitJobs, FitSpec
from .inference import Inference
from .metrics import Metrics
from .pipeline import EditOutcome, EditPipeline, weights_op
from .placement import Placement, resolve_device
from .priority import SwitchIntervalBoost
from .render import Renders
from .replication import ReplicasView, Replication, ReplicaWait, advertised_address
from .residency import Residency
from .rollout import Rollout, RolloutSpec
from .rollouts import Rollouts
from .served import ServedModel
from .shm import SharedMemory, SystemSharedMemory
from .sources import ModelSource, UploadedBundle, bundles_in, parse_entry
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
    #: The newest version number, staged ones included (`version` is the one unversioned requests run on).
    latest: int = 0
    #: Bytes of the tensors of every resident version, each shared tensor once: versions cost what they changed.
    resident_bytes: int = 0
    #: The rollout running on this model (its id), if one is.
    rollout: str | None = None
    #: The compile of the current version (`--compile`): mode, state (queued, compiling, serving, failed), times.
    compile: dict[str, Any] | None = None
    #: When `version` went live on this replica (seconds since the epoch; None: it is the version the server started
    #: with). With the journal row's committed_at, the commit-to-serving lag of this replica.
    live_at: float | None = None


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
            on_commit=lambda _served, v, staged: self.events.version_committed(v, staged),  # events hook
            priority=SwitchIntervalBoost(settings.edit_switch_interval_us / 1e6 or None),
            on_promote=lambda served, v: self.events.promoted(served.name, v.version),  # events hook
        )
        self.datasets = Datasets(self.store, min(settings.max_dataset_bytes, settings.max_body_bytes))
        self.rollouts = Rollouts(
            self.store,
            metrics,
            self.events,
            self.pipeline,
            self.datasets,
            replica=lambda: self.replication.follower.id,
            max_batch_size=settings.max_batch_size,
            lookup=self.local,
        )
        self.jobs = FitJobs(
            self.store,
            self.datasets,
            self.pipeline,
            self.events,
            self.budget,
            replica=lambda: self.replication.follower.id,
            max_steps=settings.max_fit_steps,
            max_seconds=settings.max_fit_seconds,
            max_batch_size=settings.max_batch_size,
        )
        self.feedback = FeedbackWindow(settings.feedback_window, settings.max_body_bytes)
        self.renders = Renders(settings.render_workers, settings.render_timeout_s, settings.max_render_nodes)
        #: The graph JSON of each version in memory, made once (versions never change; a large model's takes
        #: tens of milliseconds of the interpreter each time).
        self._graph_json: weakref.WeakKeyDictionary[ModelVersion, bytes] = weakref.WeakKeyDictionary()
        self._models: dict[str, ServedModel] = {}
        self._primer: threading.Thread | None = None
        self.compiler = Compiler(
            settings.compile,
            settings.compile_cache_dir or settings.state_dir / "compile-cache",
            busy=self._busy,
            max_batch_size=settings.max_batch_size,
        )
        #: Shared memory regions clients registered (Triton's extension); one process's own.
        self.shm = SharedMemory(
            SystemSharedMemory(
                enabled=settings.workers == 1 and worker_index() is None,  # a worker of --workers N has an index
                why_not="it runs several worker processes (--workers), and a request may reach one that never saw "
                "the registration (serve with --workers 1)",
            ),
            CudaSharedMemory(self.device),
        )
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
            on_docs=lambda served, _head: self.rollouts.sync(served),
            boost=self.pipeline.priority.boosted,  # the follower's pass, as an edit: ahead of a loaded loop
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
            self._restore(name, head)
        entries = [(entry, *parse_entry(entry)) for entry in self.settings.models]
        if self.settings.model_dir is not None:  # a model repository (KServe's /mnt/models)
            found = bundles_in(self.settings.model_dir, self.settings.model_name)
            entries += [(str(source), asked, source) for asked, source in found]
        for entry, asked, source in entries:
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
                self._restore(first.model, self.store.heads()[first.model])
            except StoreError as e:  # a damaged journal takes no writes, not even this
                log.error("model %s is not served: %s", first.model, e)
                self.failed[first.model] = str(e)
        # Restored versions skip shape propagation (the journal recorded it), so the first edit would pay its
        # start-up cost (seconds): pay it beside serving instead.
        self._primer = threading.Thread(target=shapes.prime, name="prime-shapes", daemon=True)
        self._primer.start()
        for served in list(self._models.values()):  # a rollout that ran before a restart runs on; a job does not
            self.rollouts.sync(served)
            self.jobs.recover(served.name)
        if self.store.unavailable is None:
            self.replication.start()

    def _restore(self, name: str, head: Head) -> None:
        try:
            self._check_head(name)  # before its weights are loaded
            first = self.store.load(name)
        except (StoreError, GraphError, ValueError, RuntimeError) as e:
            log.error("model %s cannot be restored from %s and is not served: %s", name, self.store.where, e)
            self.failed[name] = str(e)
            return
        log.info("model %s: restored version %d from %s", name, first.version, self.store.where)
        try:
            self._serve(first, persist=False, incarnation=head.incarnation, latest=head.version)
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
        self,
        first: ModelVersion,
        *,
        persist: bool,
        startup: bool = False,
        incarnation: str | None = None,
        latest: int | None = None,
    ) -> ServedModel:
        """Serve `first` (a model's current version); `persist` journals it as a new model; `latest`: the newest
        version the journal has of it (a staged one may be newer than the current)."""
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
                latest=latest,
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
            worker.on_swap = lambda v, s=served: self.compiler.schedule(s, v)  # compile hook: each new current version
            worker.start()
            self._models[first.model] = served
            self.events.model_created(first.model, first.version)  # events hook
        log.info("model %s: serving version %d on %s", first.model, first.version, self.device)
        self._compile_first(served, first)
        return served

    def _compile_first(self, served: ServedModel, first: ModelVersion) -> None:
        """The model's own compile mode (journalled at create), then its first version's compile, if any."""
        try:
            doc = self.store.doc(served.name, "settings", "compile")
        except StoreError:  # a journal that cannot say: the server's mode
            doc = None
        if doc is not None:
            self.compiler.set_mode(served.name, str(doc.value.get("mode")))
        self.compiler.schedule(served, first)

    def _busy(self) -> bool:
        """Whether any live request waits or runs now (the compile thread then yields the interpreter)."""
        return any(s.worker.queue_depth() > 0 or s.worker.busy for s in list(self._models.values()))

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
            head = self.store.heads().get(name)
            first = self.store.load(name)
            self._serve(first, persist=False, incarnation=incarnation, latest=head.version if head else None)
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
        self.rollouts.forget(name)
        self.compiler.forget(name)
        self.jobs.forget(name)
        self.feedback.forget(name)
        self.metrics.forget(name)
        self.events.model_deleted(name)  # events hook
        log.info("model %s: deleted by another replica", name)

    def close(self) -> None:
        """Stop following and every worker (the store keeps the models for the next start)."""
        self.replication.stop()
        self.rollouts.close()
        self.compiler.close()
        self.shm.close()
        with self._lock:
            models, self._models = list(self._models.values()), {}
        for served in models:
            served.worker.stop()
        self.renders.close()
        self.pipeline.close()
        self.store.close()

    # -- models ------------------------------------------------------------------------------------------
    def add(
        self, name: str, source: ModelSource, dtype: str | None = None, compile_mode: str | None = None
    ) -> ServedModel:
        """Create and serve a new model (blocking: it loads, warms up and journals the first version); `dtype`: the
        datatype it computes in (FP16/BF16; inputs and outputs stay as they are); `compile_mode`: its own
        `--compile` mode (journalled with it), None for the server's."""
        if name in self._models:  # before loading anything: a taken name costs nothing
            raise ModelExistsError(f"model {name!r} already exists")
        first = source.load(name, self.budget)
        if compile_mode is not None:
            if self._primer is not None:  # its imports and the compiler's must not interleave (compile.preload)
                self._primer.join()
            self.compiler.set_mode(name, compile_mode)  # before it serves: its first compile follows it
        try:
            served = self._serve(recast(first, dtype) if dtype else first, persist=True)
        except BaseException:
            self.compiler.set_mode(name, None)
            raise
        if compile_mode is not None:
            try:
                self.store.put_doc(name, "settings", "compile", {"mode": compile_mode})
            except StoreError as e:  # served and journalled; only a restart would forget the mode
                log.warning("model %s: its compile mode %s is not journalled: %s", name, compile_mode, e)
        return served

    async def create(
        self, name: str, source: ModelSource, dtype: str | None = None, compile_mode: str | None = None
    ) -> ModelStatus:
        await asyncio.to_thread(self.add, name, source, dtype, compile_mode)
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
        self.rollouts.forget(name)
        self.compiler.forget(name)
        self.jobs.forget(name)
        self.feedback.forget(name)
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
        numbers = await asyncio.to_thread(self.store.version_numbers, name)
        v = served.current()
        rollout = self.rollouts.active(name)
        return ModelStatus(
            name=name,
            version=v.version,
            versions=len(numbers),
            resident_versions=served.residency.resident_versions(),
            device=str(self.device),
            queue_depth=served.worker.queue_depth(),
            inputs=list(v.inputs),
            outputs=[TensorSpec(name=o.name, datatype=o.datatype or "FP32", shape=o.shape or (-1,)) for o in v.outputs],
            params=v.total_params(),
            compute_datatype=v.spec.compute_datatype or "FP32",
            latest=max(served.residency.latest, numbers[-1] if numbers else 0),
            resident_bytes=resident_bytes(served.residency.resident()),
            rollout=None if rollout is None else rollout.id,
            compile=self.compiler.status(name),
            live_at=served.live_since(v.version),
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
    def sticky(self, name: str, headers: Mapping[str, str]) -> str | None:
        """The value of the running rollout's sticky header in a request's headers (None: no rollout, no such
        header, or the request does not carry it)."""
        rollout = self.rollouts.active(name)
        if rollout is None or rollout.spec.sticky_header is None:
            return None
        return headers.get(rollout.spec.sticky_header)

    async def infer(
        self,
        name: str,
        arrays: Mapping[str, np.ndarray],
        version: int | None = None,
        *,
        min_version: int | None = None,
        sticky: str | None = None,
        request_id: str | None = None,
    ) -> InferResult:
        """`min_version`: read-your-writes across replicas (wait, bounded, until this replica has applied it).
        `sticky`: the value of the running rollout's sticky header in this request, if any: it picks the side."""
        started = time.perf_counter()  # metrics hook: per-model latency
        if min_version is not None:
            await self.replication.wait_for(name, min_version)
        served = self.get(name)
        if request_id is not None and self.feedback.enabled:
            self.feedback.keep(name, request_id, arrays)
        rollout = self.rollouts.active(name) if version is None else None
        try:
            if rollout is None:
                result = await self.inference.infer(served, arrays, version)
            else:
                result = await self._infer_in_rollout(served, rollout, arrays, sticky)
        except Exception:  # statistics hook: Triton counts failed requests by version too
            spent = time.perf_counter() - started
            served.worker.stats.request(version or served.serving_version(), int(spent * 1e9), False)
            raise
        spent = time.perf_counter() - started
        served.worker.stats.request(result.version, int(spent * 1e9), True)  # statistics hook
        self.metrics.inference_latency.labels(name).observe(spent)  # metrics hook
        return result

    async def _infer_in_rollout(
        self, served: ServedModel, rollout: Rollout, arrays: Mapping[str, np.ndarray], sticky: str | None
    ) -> InferResult:
        """An unversioned request while a rollout runs: the canary side answers from the candidate; the current
        side's answer may be shadowed on the candidate, after the client has it."""
        role = "candidate" if rollout.route(sticky) else "current"
        started = time.perf_counter()
        try:
            result = await self.inference.infer(served, arrays, rollout.candidate if role == "candidate" else None)
        except BadInputError as e:  # the client's input: no side's fault, unless the model could not compute on it
            if "cannot compute" in e.message:
                self.rollouts.observe(served.name, rollout, role, time.perf_counter() - started, True)
            raise
        except Exception:
            self.rollouts.observe(served.name, rollout, role, time.perf_counter() - started, True)
            raise
        self.rollouts.observe(served.name, rollout, role, time.perf_counter() - started, False)
        if role == "current" and rollout.shadow():
            self.rollouts.shadow(served, rollout, arrays, result)
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
        stage: bool = False,
    ) -> EditOutcome:
        served = self.get(name)
        return await asyncio.to_thread(
            self.pipeline.edit,
            served,
            ops,
            if_version=if_version,
            dry_run=dry_run,
            allow_output_change=allow_output_change,
            stage=stage,
        )

    async def set_weights(
        self,
        name: str,
        node: str,
        tensors: dict[str, torch.Tensor],
        *,
        if_version: int | None = None,
        stage: bool = False,
    ) -> EditOutcome:
        return await self.edit(name, [SetWeightsOp.from_tensors(node, tensors)], if_version=if_version, stage=stage)

    async def upload_weights(
        self, name: str, node: str, data: bytes, *, if_version: int | None = None, stage: bool = False
    ) -> EditOutcome:
        """`set_weights` from a safetensors file (keys `<tensor>` or `<node>.<tensor>`), parsed off the loop."""
        served = self.get(name)
        return await asyncio.to_thread(
            lambda: self.pipeline.edit(served, [weights_op(node, data)], if_version=if_version, stage=stage)
        )

    async def rollback(self, name: str, to: int, *, if_version: int | None = None, stage: bool = False) -> EditOutcome:
        served = self.get(name)
        return await asyncio.to_thread(self.pipeline.rollback, served, to, if_version=if_version, stage=stage)

    async def promote(self, name: str, version: int) -> EditOutcome:
        """Make a committed version (a staged one) current, by hand. Refused while a rollout runs: it decides."""
        served = self.get(name)
        running = self.rollouts.active(name)
        if running is not None:
            raise RolloutConflictError(
                f"rollout {running.id} of {name!r} is running: promote through it (POST .../rollout/promote)",
                rollout=running.id,
            )
        return await asyncio.to_thread(self.pipeline.promote, served, version)

    # -- rollouts and datasets ---------------------------------------------------------------------------------
    async def start_rollout(self, name: str, spec: RolloutSpec) -> dict[str, Any]:
        served = self.get(name)
        return await asyncio.to_thread(self.rollouts.start, served, spec)

    async def rollout(self, name: str) -> dict[str, Any]:
        served = self.get(name)
        return await asyncio.to_thread(self.rollouts.view, served)

    async def end_rollout(self, name: str, action: str) -> dict[str, Any]:
        """`promote` or `abort` the running rollout by hand."""
        served = self.get(name)
        end = self.rollouts.promote if action == "promote" else self.rollouts.abort
        return await asyncio.to_thread(end, served)

    async def put_dataset(self, name: str, dataset: str, data: bytes) -> dict[str, Any]:
        served = self.get(name)
        doc = await asyncio.to_thread(self.datasets.put, name, dataset, data, served.current())
        return dict(doc.value, updated_at=doc.updated_at)

    async def datasets_of(self, name: str) -> list[dict[str, Any]]:
        self.get(name)
        docs = await asyncio.to_thread(self.datasets.list, name)
        return [dict(d.value, updated_at=d.updated_at) for d in docs]

    async def delete_dataset(self, name: str, dataset: str) -> None:
        self.get(name)
        await asyncio.to_thread(self.datasets.delete, name, dataset)

    # -- fit jobs and feedback ---------------------------------------------------------------------------------
    async def fit(self, name: str, spec: FitSpec) -> dict[str, Any]:
        served = self.get(name)
        return await asyncio.to_thread(self.jobs.start, served, spec)

    async def job(self, name: str, job_id: str) -> dict[str, Any]:
        served = self.get(name)
        return await asyncio.to_thread(self.jobs.get, served, job_id)

    async def jobs_of(self, name: str) -> list[dict[str, Any]]:
        served = self.get(name)
        return await asyncio.to_thread(self.jobs.jobs, served)

    async def cancel_job(self, name: str, job_id: str) -> dict[str, Any]:
        served = self.get(name)
        return await asyncio.to_thread(self.jobs.cancel, served, job_id)

    async def give_feedback(self, name: str, dataset: str, labels: Mapping[str, Any], kind: str) -> dict[str, Any]:
        """Label earlier requests (by request id) and add them to `dataset` (created, or extended)."""
        served = self.get(name)
        if not self.feedback.enabled:
            raise BadInputError("feedback needs the server to keep recent inputs: start it with --feedback-window N")
        found = self.feedback.find(name, list(labels))
        missing = [r for r in labels if r not in found]
        if not found:
            raise NotFoundError(
                f"none of the {len(labels)} request id(s) is in the feedback window of {name!r} "
                f"(the last {self.settings.feedback_window} requests)",
                missing=missing[:20],
            )
        doc = await asyncio.to_thread(
            self.datasets.extend, name, dataset, served.current(), {r: found[r] for r in found}, labels, kind
        )
        return {**dict(doc.value), "added": len(found), "missing": missing}

    async def evaluations(self, name: str) -> dict[int, list[dict[str, Any]]]:
        """Every evaluation score recorded of each version (rollouts' evaluation gates write them)."""
        self.get(name)
        docs = await asyncio.to_thread(self.store.docs, name, "evaluation")
        out: dict[int, list[dict[str, Any]]] = {}
        for d in docs:
            out.setdefault(int(d.value["version"]), []).append(d.value)
        return out


def resident_bytes(versions: list[ModelVersion]) -> int:
    """Bytes of the tensors the versions hold, each storage counted once: a version that shares its unchanged layers
    with another costs only what it changed."""
    seen: set[int] = set()
    total = 0
    for v in versions:
        for module in v.modules.values():
            for t in module.state_dict(keep_vars=True).values():
                storage = t.untyped_storage()
                if storage.data_ptr() not in seen:
                    seen.add(storage.data_ptr())
                    total += storage.nbytes()
    return total

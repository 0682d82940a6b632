"""The edit pipeline: from proposed ops to a version that is durable and live, or to an error that changed nothing.

Per edit, under the model's edit lock: size it against the memory budget (before allocating), validate and build
it (graph library), place it on the device and warm it up, make it durable (store), publish it to the history,
swap it in between two batches (worker), then apply retention. The order is the guarantee: nothing is journalled
that failed to run, and nothing serves that is not durable (docs/ARCHITECTURE.md, "Commit order").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from safetensors.torch import load as load_safetensors

from morphserve.graph import GraphDiff, ModelVersion, SetWeightsOp, apply_edit, diff, parse_ops
from morphserve.graph.edits import Op
from morphserve.graph.live import check_base, rollback_version
from morphserve.store import GcResult, Store

from .budget import MemoryBudget
from .errors import BadInputError
from .metrics import Metrics
from .priority import SwitchIntervalBoost
from .served import ServedModel

log = logging.getLogger("morphserve.edits")


@dataclass(frozen=True)
class EditOutcome:
    model: str
    version: ModelVersion
    previous: ModelVersion
    diff: GraphDiff
    timings_ms: dict[str, float]
    dry_run: bool
    live_at: float | None = None  # time.time() once the worker swapped it in (edit-to-live, measured from outside)


class EditPipeline:
    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        budget: MemoryBudget,
        keep_versions: int | None,
        on_commit: Callable[[ServedModel, ModelVersion], None] | None = None,
        priority: SwitchIntervalBoost | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.budget = budget
        self.keep_versions = keep_versions
        self.on_commit = on_commit
        self.priority = priority or SwitchIntervalBoost(None)
        self._blob_writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edit-blobs")

    def close(self) -> None:
        """Let a blob write in flight finish and end the writer's thread (one per registry, else one idle thread
        per closed registry stays behind for the life of the process)."""
        self._blob_writer.shutdown(wait=True)

    def edit(
        self,
        served: ServedModel,
        ops: Sequence[Op] | Sequence[dict[str, Any]],
        *,
        if_version: int | None = None,
        dry_run: bool = False,
        allow_output_change: bool = False,
    ) -> EditOutcome:
        def propose() -> ModelVersion:
            parsed = parse_ops(ops)
            base = served.current()
            kept = served.residency.kept_beside_new()
            self.budget.check_edit(base, parsed, kept)
            latest = served.residency.latest
            check_base(served.name, latest, if_version)
            candidate = apply_edit(base, parsed, version=latest + 1, allow_output_change=allow_output_change)
            self.budget.check_version(candidate, "the edited model", kept)  # its activations, before its warm-up
            return candidate

        return self._run(served, propose, dry_run=dry_run)

    def rollback(self, served: ServedModel, to: int, *, if_version: int | None = None) -> EditOutcome:
        def propose() -> ModelVersion:
            latest = served.residency.latest
            check_base(served.name, latest, if_version)
            candidate = rollback_version(served.current(), served.residency.get(to), latest + 1)
            self.budget.check_version(candidate, "the rolled-back model", served.residency.kept_beside_new())
            return candidate

        return self._run(served, propose, dry_run=False)

    def _run(self, served: ServedModel, propose: Callable[[], ModelVersion], *, dry_run: bool) -> EditOutcome:
        # This process's lock, then the journal's (every replica's): the editor catches up to the head, validates,
        # persists and commits while no other replica can commit a version of this model.
        with served.edit_lock, self.store.edit_lock(served.name), self.priority.boosted():
            served.check_alive()  # a delete that won the lock meanwhile: nothing may be journalled for it
            t0 = time.perf_counter()
            self._catch_up(served)
            previous = served.current()
            try:
                candidate = propose()
                t1 = time.perf_counter()
                if dry_run:
                    candidate.graph_module  # noqa: B018 - a dry run builds too: it reports what would serve
                    t2 = time.perf_counter()
                    return EditOutcome(
                        served.name,
                        candidate,
                        previous,
                        diff(previous, candidate),
                        _ms(validate=t1 - t0, build=t2 - t1, persist=0.0, swap=0.0, total=t2 - t0),
                        True,
                    )
                # The new blobs are hashed, written and fsynced beside the build and warm-up (file I/O and
                # hashing release the GIL); the journal row, which makes the version exist, waits for both.
                blobs = self._blob_writer.submit(self.store.write_blobs, candidate)
                try:
                    candidate.graph_module  # noqa: B018 - build (fx codegen) off the hot path
                    runnable = served.residency.prepare(candidate)
                finally:
                    wait([blobs])  # never leave a write running behind a failed edit
                t2 = time.perf_counter()
                blobs.result()
                self.store.commit(candidate)  # durable before it serves and before we answer
            except Exception:
                self.metrics.edits.labels(served.name, "rejected").inc()
                raise
            t3 = time.perf_counter()
            live_at = self._go_live(served, candidate, runnable)
            t4 = time.perf_counter()
        self.metrics.edits.labels(served.name, "committed").inc()
        self.metrics.edit_latency.labels(served.name).observe(t4 - t0)
        log.info(
            "model %s: version %d live (from %d, %.1f ms)",
            served.name,
            candidate.version,
            previous.version,
            (t4 - t0) * 1000,
        )
        if self.on_commit is not None:
            self.on_commit(served, candidate)
        return EditOutcome(
            served.name,
            candidate,
            previous,
            diff(previous, candidate),
            _ms(validate=t1 - t0, build=t2 - t1, persist=t3 - t2, swap=t4 - t3, total=t4 - t0),
            False,
            live_at,
        )

    def _go_live(self, served: ServedModel, v: ModelVersion, runnable: Any) -> float:
        """Swap `v` in; the wall-clock time it went live."""
        # Published to the history first, so that the next edit numbers after it even if the swap fails.
        served.residency.publish(v)
        served.worker.swap(v, runnable).result()
        live_at = time.time()
        self.retain(served)
        served.went_live(v.version)
        return live_at

    def _catch_up(self, served: ServedModel) -> None:
        """Under the journal's edit lock: apply what other replicas committed since this one last looked."""
        head = self.store.heads().get(served.name)
        if head is not None and head.version > served.residency.latest:
            self._apply_locked(served, head.version)

    def apply(self, served: ServedModel, version: int) -> bool:
        """Bring `served` to `version`, committed elsewhere (the follower's step); False when there was nothing to do.
        Loaded, built and warmed up off the hot path, then swapped in between two batches, like a local edit."""
        with served.edit_lock, self.priority.boosted():
            return self._apply_locked(served, version)

    def _apply_locked(self, served: ServedModel, version: int) -> bool:
        current = served.current()
        if served.deleted or version <= served.residency.latest:
            return False
        v = self.store.load(served.name, version, previous=current)
        runnable = served.residency.prepare(v)
        self._go_live(served, v, runnable)
        log.info("model %s: version %d applied from the journal (was %d)", served.name, version, current.version)
        if self.on_commit is not None:
            self.on_commit(served, v)
        return True

    def gc(self, served: ServedModel, keep: int) -> GcResult:
        with served.edit_lock:
            served.check_alive()
            result = self.store.gc(served.name, keep, {served.serving_version()})
            served.residency.evict(result.removed_versions)
        return result

    def retain(self, served: ServedModel) -> None:
        """After a commit: auto-gc (`--keep-versions`). What stays in memory is the residency's business."""
        if self.keep_versions is None:
            return
        try:
            result = self.store.gc(served.name, self.keep_versions, {served.serving_version()})
        except Exception as e:  # noqa: BLE001 - the edit is durable and live; retention can wait for the next
            log.warning("model %s: retention after the edit failed: %s", served.name, e)
        else:
            served.residency.evict(result.removed_versions)


def weights_op(node: str, data: bytes) -> SetWeightsOp:
    """The set_weights op of an uploaded safetensors file; BadInputError when it is not one."""
    try:
        tensors = load_safetensors(data)
    except Exception as e:  # noqa: BLE001 - any parse failure is the client's file
        raise BadInputError(f"the body is not a valid safetensors file: {str(e)[:200]}") from None
    if not tensors:
        raise BadInputError("the safetensors file holds no tensors")
    prefix = node + "."
    return SetWeightsOp.from_tensors(node, {k.removeprefix(prefix): v for k, v in tensors.items()})


def _ms(**seconds: float) -> dict[str, float]:
    return {k: round(v * 1000, 3) for k, v in seconds.items()}

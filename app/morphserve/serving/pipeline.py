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
from morphserve.store import GcResult, Head, Store

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
    #: Committed without becoming current (`"stage": true`): it serves requests that name it until promoted.
    staged: bool = False


class EditPipeline:
    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        budget: MemoryBudget,
        keep_versions: int | None,
        on_commit: Callable[[ServedModel, ModelVersion, bool], None] | None = None,
        priority: SwitchIntervalBoost | None = None,
        on_promote: Callable[[ServedModel, ModelVersion], None] | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.budget = budget
        self.keep_versions = keep_versions
        self.on_commit = on_commit
        self.on_promote = on_promote
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
        stage: bool = False,
    ) -> EditOutcome:
        """An edit of the current version (`if_version` names it, as If-Match does); a new version numbered after
        every version the history has, staged ones included. `stage`: durable, but the current version stays."""

        def propose() -> ModelVersion:
            parsed = parse_ops(ops)
            base = served.current()
            kept = served.residency.kept_beside_new()
            self.budget.check_edit(base, parsed, kept)
            check_base(served.name, base.version, if_version)
            latest = served.residency.latest
            candidate = apply_edit(base, parsed, version=latest + 1, allow_output_change=allow_output_change)
            self.budget.check_version(candidate, "the edited model", kept)  # its activations, before its warm-up
            return candidate

        return self._run(served, propose, dry_run=dry_run, stage=stage)

    def rollback(
        self, served: ServedModel, to: int, *, if_version: int | None = None, stage: bool = False
    ) -> EditOutcome:
        def propose() -> ModelVersion:
            base = served.current()
            check_base(served.name, base.version, if_version)
            candidate = rollback_version(base, served.residency.get(to), served.residency.latest + 1)
            self.budget.check_version(candidate, "the rolled-back model", served.residency.kept_beside_new())
            return candidate

        return self._run(served, propose, dry_run=False, stage=stage)

    def commit_version(
        self, served: ServedModel, propose: Callable[[int], ModelVersion], *, stage: bool
    ) -> EditOutcome:
        """Commit a version built elsewhere (a fit job's), numbered under the model's edit locks: `propose(n)`
        builds version n. Validated, warmed up, made durable and (unless staged) swapped in like any edit."""
        return self._run(served, lambda: propose(served.residency.latest + 1), dry_run=False, stage=stage)

    def promote(
        self, served: ServedModel, version: int, *, journal: Callable[[int], None] | None = None
    ) -> EditOutcome:
        """Make a committed version (a staged one, usually) current: a swap like any edit's. `journal(v)` records
        the promotion durably (default: the store's current pointer; a rollout also writes its decision in the same
        transaction). Current versions only move forward, so that `?min_version=` keeps its meaning: a version
        older than the current one is promoted as a new version equal to it, as a rollback would make it."""
        record = journal or (lambda v: self.store.set_current(served.name, v))
        with served.edit_lock, self.store.edit_lock(served.name), self.priority.boosted():
            served.check_alive()
            t0 = time.perf_counter()
            self._catch_up(served)
            previous = served.current()
            if version == previous.version:
                record(version)
                spent = time.perf_counter() - t0
                timings = _ms(validate=0.0, build=0.0, persist=spent, swap=0.0, total=spent)
                return EditOutcome(served.name, previous, previous, diff(previous, previous), timings, False)
            if version < previous.version:
                target = served.residency.get(version)
                candidate = rollback_version(previous, target, served.residency.latest + 1)
                runnable = served.residency.prepare(candidate)
                self.store.commit(candidate)
                record(candidate.version)
            else:
                candidate = served.residency.get(version)
                runnable = served.residency.runnable(version) or served.residency.prepare(candidate)
                record(version)
            t1 = time.perf_counter()
            live_at = self._go_live(served, candidate, runnable)
            t2 = time.perf_counter()
        log.info("model %s: version %d promoted (from %d)", served.name, candidate.version, previous.version)
        if self.on_commit is not None and candidate.version != version:  # a new version was made for it
            self.on_commit(served, candidate, False)
        if self.on_promote is not None:
            self.on_promote(served, candidate)
        return EditOutcome(
            served.name,
            candidate,
            previous,
            diff(previous, candidate),
            _ms(validate=0.0, build=0.0, persist=t1 - t0, swap=t2 - t1, total=t2 - t0),
            False,
            live_at,
        )

    def _run(
        self, served: ServedModel, propose: Callable[[], ModelVersion], *, dry_run: bool, stage: bool = False
    ) -> EditOutcome:
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
                self.store.commit(candidate, stage=stage)  # durable before it serves and before we answer
            except Exception:
                self.metrics.edits.labels(served.name, "rejected").inc()
                raise
            t3 = time.perf_counter()
            if stage:  # resident, so that requests naming it need no reload; not current
                served.residency.publish(candidate)
                served.residency.install(candidate, runnable)
                live_at = None
            else:
                live_at = self._go_live(served, candidate, runnable)
            t4 = time.perf_counter()
        self.metrics.edits.labels(served.name, "committed").inc()
        self.metrics.edit_latency.labels(served.name).observe(t4 - t0)
        log.info(
            "model %s: version %d %s (from %d, %.1f ms)",
            served.name,
            candidate.version,
            "staged" if stage else "live",
            previous.version,
            (t4 - t0) * 1000,
        )
        if self.on_commit is not None:
            self.on_commit(served, candidate, stage)
        return EditOutcome(
            served.name,
            candidate,
            previous,
            diff(previous, candidate),
            _ms(validate=t1 - t0, build=t2 - t1, persist=t3 - t2, swap=t4 - t3, total=t4 - t0),
            False,
            live_at,
            stage,
        )

    def _go_live(self, served: ServedModel, v: ModelVersion, runnable: Any) -> float:
        """Swap `v` in; the wall-clock time it went live."""
        # Recorded in the history first, so that the next edit numbers after it even if the swap fails.
        served.residency.saw(v.version)
        served.worker.swap(v, runnable).result()
        live_at = time.time()
        self.retain(served)
        served.went_live(v.version, live_at)
        return live_at

    def catch_up(self, served: ServedModel) -> None:
        """Under the model's edit locks (this process's, then the journal's): apply what other replicas committed
        since this one last looked."""
        self._catch_up(served)

    def _catch_up(self, served: ServedModel) -> None:
        """Under the journal's edit lock: apply what other replicas committed since this one last looked."""
        head = self.store.heads().get(served.name)
        if head is not None:
            self._apply_locked(served, head)

    def apply(self, served: ServedModel, head: Head) -> bool:
        """Bring `served` to the journal's `head`, committed elsewhere (the follower's step): numbers after its
        newest version, and its current version live here; False when there was nothing to do. Loaded, built and
        warmed up off the hot path, then swapped in between two batches, like a local edit."""
        with served.edit_lock, self.priority.boosted():
            return self._apply_locked(served, head)

    def _apply_locked(self, served: ServedModel, head: Head) -> bool:
        if served.deleted:
            return False
        served.residency.saw(head.version)
        current = served.current()
        if head.current <= current.version:  # current versions only move forward (see `promote`)
            return False
        t0 = time.perf_counter()
        v = served.residency.cached(head.current) or self.store.load(served.name, head.current, previous=current)
        t1 = time.perf_counter()
        runnable = served.residency.runnable(v.version) or served.residency.prepare(v)
        t2 = time.perf_counter()
        self._go_live(served, v, runnable)
        t3 = time.perf_counter()
        log.info(
            "model %s: version %d applied from the journal (was %d; load %.1f ms, prepare %.1f ms, swap %.1f ms)",
            served.name,
            v.version,
            current.version,
            (t1 - t0) * 1000,
            (t2 - t1) * 1000,
            (t3 - t2) * 1000,
        )
        if self.on_commit is not None:
            self.on_commit(served, v, False)
        return True

    def gc(self, served: ServedModel, keep: int) -> GcResult:
        with served.edit_lock:
            served.check_alive()
            result = self.store.gc(served.name, keep, {served.serving_version(), *served.residency.pinned()})
            served.residency.evict(result.removed_versions)
        return result

    def retain(self, served: ServedModel) -> None:
        """After a commit: auto-gc (`--keep-versions`). What stays in memory is the residency's business."""
        if self.keep_versions is None:
            return
        try:
            result = self.store.gc(
                served.name, self.keep_versions, {served.serving_version(), *served.residency.pinned()}
            )
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

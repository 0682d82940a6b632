"""The device worker: one thread per model that owns the model on its device.

It is the only consumer of the model's queue. Each loop iteration either applies one control command (a
version swap) or forms one batch (requests with equal trailing shapes and dtypes, up to `max_batch_size` rows
or `max_batch_delay`) and runs it with the version that is current at that moment. Which versions are resident and
which one is current belongs to the model's `Residency`; the swap command, run by this thread between batches, is the
only place the current version changes. So no batch can mix versions, and every request queued after a swap
completed runs on the new version (or a later one).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from morphserve.graph.errors import short_message

from .devices import ops_for
from .errors import BadInputError, NotResidentError, QueueFullError, UnavailableError
from .metrics import Metrics
from .residency import Residency, Runnable
from .stats import ModelStats

log = logging.getLogger("morphserve.worker")


@dataclass(frozen=True)
class InferResult:
    version: int
    outputs: tuple[np.ndarray, ...]
    #: Output names in order (filled in by the inference path from the version the request was checked against).
    names: tuple[str, ...] = ()
    #: The forward of the batch this request ran in (seconds): what a rollout compares between two versions.
    compute_s: float = 0.0


@dataclass(eq=False)
class InferItem:
    """One queued inference request: its inputs in signature order, rows in dimension 0, where to deliver."""

    inputs: tuple[torch.Tensor, ...]
    version: int | None
    deliver: Callable[[InferResult | BaseException], None]
    rows: int = 0
    key: tuple[Any, ...] = ()
    cancelled: bool = False
    #: For an explicit version: its runnable, taken when the request is accepted, so that an edit evicting the
    #: version from the resident set meanwhile cannot fail a request already queued for it.
    runnable: Runnable | None = None
    #: `live` (a client waits), or background work that never delays live traffic by more than one slice: `shadow`
    #: (a rollout's copy of a live request: run only while no live request waits, dropped when it cannot run soon)
    #: or `job` (an evaluation's batch: it waits, and gets slices even under full load, a bounded share of the
    #: worker's time, so that it finishes).
    lane: str = "live"
    queued_at: float = 0.0

    def __post_init__(self) -> None:
        self.rows = int(self.inputs[0].shape[0])
        self.key = (self.version, self.lane, tuple((tuple(t.shape[1:]), t.dtype) for t in self.inputs))
        self.queued_at = time.monotonic()


@dataclass(eq=False)
class Slice:
    """Background work that is not a batch (a training step): `run()` on the worker thread, between two batches."""

    run: Callable[[], None]
    lane: str = "job"
    queued_at: float = field(default_factory=time.monotonic)


class DroppedError(Exception):
    """A shadow run that could not run soon enough and was dropped (the live traffic had the device)."""


@dataclass(eq=False)
class _Swap:
    """Control command: make `version` (placed and warmed up: `runnable`) resident and current."""

    version: Any
    runnable: Runnable
    done: Future[None] = field(default_factory=Future)


@dataclass(eq=False)
class _Replace:
    """Control command: run resident version `version` with `runnable` from the next batch on (its compiled graph);
    the future tells whether it was still resident."""

    version: int
    runnable: Runnable
    done: Future[bool] = field(default_factory=Future)


class DeviceWorker:
    """Runs one model's batches on one device, and swaps its versions between them."""

    def __init__(
        self,
        residency: Residency[Any],
        device: torch.device,
        *,
        max_batch_size: int,
        max_batch_delay_s: float,
        max_queue: int,
        metrics: Metrics,
        batch_wait: str = "adaptive",
        background_limit: int = 256,
        job_interval_s: float = 0.01,
        job_share: float = 0.2,
        live_window_s: float = 0.01,
        shadow_max_age_s: float = 0.5,
        shadow_rows: int | None = None,
    ) -> None:
        """Background work (`submit_background`): at most `background_limit` items wait. While live traffic flows
        (requests queue, or a live batch ended within `live_window_s`), background work gets at most `job_share` of
        the worker's time; while live requests queue, only a job, a slice at most every `job_interval_s`; a shadow run
        never starts then, waits at most `shadow_max_age_s` (then it is dropped), and runs in slices of at most
        `shadow_rows` rows (default an eighth of a batch), so that a live request arriving meanwhile waits little."""
        self.residency = residency
        self.model = residency.model
        self.device = device
        self._ops = ops_for(device)
        self.max_batch_size = max_batch_size
        self.max_batch_delay_s = max_batch_delay_s
        self.max_queue = max_queue
        self.batch_wait = batch_wait
        self._metrics = metrics
        self._queue: collections.deque[InferItem | _Swap | _Replace] = collections.deque()
        self._background: collections.deque[InferItem | Slice] = collections.deque()
        self.background_limit = background_limit
        self.job_interval_s = job_interval_s
        self.job_share = job_share
        self.live_window_s = live_window_s
        self.shadow_max_age_s = shadow_max_age_s
        self.shadow_rows = shadow_rows or max(1, max_batch_size // 8)
        self.shadow_queue = max(16, 2 * max_batch_size)
        self._last_background = 0.0  # when the last background slice ended
        self._background_took = 0.0  # how long it ran
        self._last_live = 0.0  # when the last live batch ended
        self._background_at = 0.0  # when held-back background work may run next (a live request wakes it sooner)
        self._waiting = 0  # inference items in the queue (swaps never count against max_queue)
        self._cond = threading.Condition()
        self._stopping = False
        # For the batching policy (`_worth_waiting`): requests that arrived while a batch ran, and the smoothed rate
        # of such arrivals (requests/s) over recent batches.
        self._busy = False
        self._arrived_busy = 0
        self._busy_rate = 0.0
        self._thread = threading.Thread(target=self._loop, name=f"worker-{self.model}", daemon=True)
        #: Triton's statistics of the live batches (and, from the registry, of each request's outcome).
        self.stats = ModelStats()
        #: Called on this thread after each swap with the version now current (the compiler's cue); must not block.
        self.on_swap: Callable[[Any], None] | None = None

    # -- called from other threads -------------------------------------------------------------------------
    def start(self) -> None:
        self._metrics.version.labels(self.model).set(self.residency.current_version())
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after failing whatever is still queued (the model is going away)."""
        with self._cond:
            self._stopping = True
            pending: list[InferItem | _Swap | _Replace | Slice] = [*self._queue, *self._background]
            self._queue.clear()
            self._background.clear()
            self._waiting = 0
            self._cond.notify_all()
        for item in pending:
            if isinstance(item, _Swap | _Replace):
                item.done.set_exception(UnavailableError(f"model {self.model!r} is shutting down"))
            elif isinstance(item, Slice):
                continue  # its job sees the model go away on its own
            else:
                item.deliver(UnavailableError(f"model {self.model!r} is shutting down"))
        if self._thread.is_alive():
            self._thread.join(timeout)

    def queue_depth(self) -> int:
        return self._waiting

    @property
    def busy(self) -> bool:
        """Whether a batch (or a background slice) runs now."""
        return self._busy

    def submit(self, item: InferItem) -> None:
        """Queue a request; QueueFullError when `max_queue` requests are already waiting."""
        with self._cond:
            if self._stopping:
                raise UnavailableError(f"model {self.model!r} is shutting down")
            if self._waiting >= self.max_queue:
                raise QueueFullError(f"model {self.model!r} has {self._waiting} requests queued; retry shortly")
            if item.version is not None and item.runnable is None:
                item.runnable = self.residency.runnable(item.version)
                if item.runnable is None:
                    raise self._not_resident(item.version)
            self._queue.append(item)
            self._waiting += 1
            if self._busy:
                self._arrived_busy += 1
            self._metrics.queue_depth.labels(self.model).set(self._waiting)
            self._cond.notify()

    def submit_background(self, item: InferItem | Slice) -> bool:
        """Queue background work; False (nothing queued) when the model is stopping, the background queue is full,
        or, for a shadow run, live requests are waiting already (the device is busy: the copy is dropped)."""
        with self._cond:
            if self._stopping or len(self._background) >= self.background_limit:
                return False
            if item.lane == "shadow" and not self.takes_shadow():
                return False
            if isinstance(item, InferItem) and item.version is not None and item.runnable is None:
                item.runnable = self.residency.runnable(item.version)
                if item.runnable is None:
                    raise self._not_resident(item.version)
            self._background.append(item)
            self._cond.notify()
            return True

    def takes_shadow(self) -> bool:
        """Whether a shadow copy submitted now may run: no live request waits, and fewer than `shadow_queue` items
        wait in the background (more would only age out while live traffic flows). Read without the lock by the
        event loop too, as a hint that spares it building a copy that would be dropped: under load nearly every
        copy is, and building them cost the loop more than the shadow runs cost the worker."""
        return self._waiting == 0 and len(self._background) < self.shadow_queue

    def background_depth(self) -> int:
        return len(self._background)

    def cancel(self, item: InferItem) -> None:
        """Give back a queued request's slot (its client went away); the worker will skip it."""
        with self._cond:
            if not item.cancelled:
                item.cancelled = True
                try:
                    self._queue.remove(item)
                except ValueError:
                    return  # already taken into a batch
                self._waiting -= 1
                self._metrics.queue_depth.labels(self.model).set(self._waiting)

    def swap(self, version: Any, runnable: Runnable) -> Future[None]:
        """Make `version` (placed and warmed up: `runnable`) current between two batches; the future resolves once
        it is live."""
        cmd = _Swap(version, runnable)
        self._command(cmd)
        return cmd.done

    def replace(self, version: int, runnable: Runnable) -> Future[bool]:
        """Run resident version `version` with another runnable of the same graph (its compiled one) from the next
        batch on; the future resolves to False when the version is no longer resident. Queued like a swap: ahead of
        queued inference, behind the batch in flight."""
        cmd = _Replace(version, runnable)
        self._command(cmd)
        return cmd.done

    def _command(self, cmd: _Swap | _Replace) -> None:
        """Queue a control command ahead of queued inference (behind earlier commands): it waits for the batch in
        flight only, not for everything queued. Still safe for a swap: requests sent after the edit's response are
        queued after it."""
        with self._cond:
            if self._stopping:
                raise UnavailableError(f"model {self.model!r} is shutting down")
            ahead = 0
            while ahead < len(self._queue) and not isinstance(self._queue[ahead], InferItem):
                ahead += 1
            self._queue.insert(ahead, cmd)
            self._cond.notify()

    # -- the worker thread --------------------------------------------------------------------------------
    def _loop(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            with self._cond:
                while not self._queue and not self._background and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                work = self._next_background()
                if isinstance(work, Slice):
                    job: Slice | None = work
                    batch = []
                elif work is not None:
                    job, batch = None, [work]
                    self._fill_background(batch)
                else:
                    job = None
                    if not self._queue:  # background held back while live traffic flows: wait for its turn
                        self._cond.wait(max(self._background_at - time.monotonic(), 0.0005))
                        continue
                    first = self._queue.popleft()
                    if isinstance(first, _Swap):
                        self._apply_swap(first)
                        continue
                    if isinstance(first, _Replace):
                        first.done.set_result(self.residency.replace(first.version, first.runnable))
                        continue
                    self._waiting -= 1
                    batch = [first]
                    self._fill(batch)
                    self._metrics.queue_depth.labels(self.model).set(self._waiting)
                self._busy, self._arrived_busy = True, 0
            started = time.monotonic()
            background = job is not None or batch[0].lane != "live"
            if job is not None:
                try:
                    job.run()
                except BaseException:
                    log.exception("model %s: a background slice failed", self.model)
            else:
                try:
                    self._execute(batch)
                except BaseException as e:
                    log.exception("model %s: batch failed unexpectedly", self.model)
                    for item in batch:
                        item.deliver(e)
            with self._cond:
                ended = time.monotonic()
                if background:
                    self._last_background, self._background_took = ended, ended - started
                else:
                    self._last_live = ended
                    rate = self._arrived_busy / max(ended - started, 1e-6)
                    self._busy_rate = 0.5 * (self._busy_rate + rate)
                self._busy = False

    def _next_background(self) -> InferItem | Slice | None:
        """Under the lock: the background work to run now, if any. Live requests and swaps come first; a job still
        gets one slice per `job_interval_s` while they queue, and a shadow run too old to matter is dropped."""
        now = time.monotonic()
        while self._background and self._background[0].lane == "shadow":
            head = self._background[0]
            if now - head.queued_at <= self.shadow_max_age_s:
                break
            self._background.popleft()
            if isinstance(head, InferItem):
                head.deliver(DroppedError("the live traffic had the device"))
        if not self._background:
            return None
        if self._flowing(now):
            # Background work gets at most `job_share` of the worker's time, and while requests wait, only a job,
            # at most every `job_interval_s`. Held to that only while requests queued, a training step or an
            # evaluation batch filled every short gap between live batches, and took the interpreter from the
            # event loop serving them (issue 25's and 29's p99 under load).
            gap = self._background_took * (1 - self.job_share) / self.job_share
            if self._queue:
                gap = max(self.job_interval_s, gap)
            if now - self._last_background < gap:
                self._background_at = self._last_background + gap
                return None
        if self._queue:
            found = next((w for w in self._background if w.lane == "job"), None)
            if found is None:
                return None
            self._background.remove(found)
            return found
        return self._background.popleft()

    def _flowing(self, now: float) -> bool:
        """Under the lock: whether live traffic flows (requests queue, or a live batch ended within `live_window_s`:
        closed-loop clients leave the queue empty between their batches). Background work is held to its share then."""
        return bool(self._queue) or now - self._last_live < self.live_window_s

    def _fill_background(self, batch: list[InferItem]) -> None:
        """Add queued background items with the same key (version, lane, shapes) up to a slice: `shadow_rows` for
        shadow copies; a job's items (an evaluation's eighth batches) up to a full batch when no live traffic flows,
        else one at a time, since merged they made a slice as long as a full batch, which a live request waited
        behind."""
        key, rows = batch[0].key, batch[0].rows
        if batch[0].lane == "shadow":
            limit = self.shadow_rows
        elif self._flowing(time.monotonic()):
            limit = rows
        else:
            limit = self.max_batch_size
        kept: collections.deque[InferItem | Slice] = collections.deque()
        while self._background:
            item = self._background.popleft()
            if isinstance(item, InferItem) and item.key == key and rows + item.rows <= limit:
                batch.append(item)
                rows += item.rows
            else:
                kept.append(item)
        self._background = kept

    def _fill(self, batch: list[InferItem]) -> None:
        """Add compatible queued requests (same key) until the batch is full or a swap is next; then wait for more
        only while waiting can pay (`_worth_waiting`), and never longer than `max_batch_delay`."""
        key, rows = batch[0].key, batch[0].rows
        deadline: float | None = None
        while rows < self.max_batch_size:
            kept: collections.deque[InferItem | _Swap | _Replace] = collections.deque()
            blocked = False
            while self._queue:
                item = self._queue.popleft()
                if not isinstance(item, InferItem) or blocked:
                    blocked = True  # nothing queued after a swap may run before it
                    kept.append(item)
                elif item.key == key and rows + item.rows <= self.max_batch_size:
                    batch.append(item)
                    rows += item.rows
                    self._waiting -= 1
                else:
                    kept.append(item)
            self._queue = kept
            if blocked or rows >= self.max_batch_size:
                return
            now = time.monotonic()
            if deadline is None:
                if not self._worth_waiting(rows, len(batch)):
                    return
                deadline = now + self.max_batch_delay_s
            remaining = deadline - now
            if remaining <= 0:
                return
            self._cond.wait(remaining)
            if self._stopping:
                return

    def _worth_waiting(self, rows: int, requests: int) -> bool:
        """Whether the requests still missing from a full batch are expected within `max_batch_delay`.

        The rate that counts is that of requests arriving *while a batch runs*: clients that wait for their answer
        (one client at a time, or every client already in this batch) send nothing meanwhile, so for them waiting
        only adds latency; an open stream of requests keeps arriving, and then a batch that would fill within the
        delay waits for it. An idle worker with a lone request therefore runs it at once, and what arrives while it
        computes forms the next batch (as Triton's dynamic batcher does without a queue delay).
        """
        if self.max_batch_delay_s <= 0:
            return False
        if self.batch_wait == "full":  # the operator asked for fixed-delay batching: fill, or wait out the delay
            return True
        if self._busy_rate <= 0:
            return False
        missing_requests = (self.max_batch_size - rows) / (rows / requests)
        return missing_requests / self._busy_rate <= self.max_batch_delay_s

    def _apply_swap(self, cmd: _Swap) -> None:
        try:
            self.residency.install(cmd.version, cmd.runnable, current=True)
        except BaseException as e:  # noqa: BLE001 - the edit that asked learns why; the worker goes on
            cmd.done.set_exception(e)
            return
        self._metrics.version.labels(self.model).set(cmd.version.version)
        cmd.done.set_result(None)
        if self.on_swap is not None:
            try:
                self.on_swap(cmd.version)
            except Exception:  # a background cue never stops the worker
                log.exception("model %s: the swap hook failed", self.model)

    def _not_resident(self, version: int) -> NotResidentError:
        return NotResidentError(
            f"version {version} of {self.model!r} is no longer resident on the device "
            f"(resident: {', '.join(map(str, self.residency.resident_versions()))})",
            version=version,
        )

    def _execute(self, batch: list[InferItem]) -> None:
        runnable: Runnable | None
        if batch[0].version is None:
            current, runnable = self.residency.current_entry()
            version = current.version
        else:
            version = batch[0].version
            runnable = batch[0].runnable or self.residency.runnable(version)
        if runnable is None:
            err = self._not_resident(version)
            for item in batch:
                item.deliver(err)
            return
        try:
            t0 = time.perf_counter_ns()
            outputs, t1, t2 = self._forward(runnable, [item.inputs for item in batch])
            t3 = time.perf_counter_ns()
            compute_s = (t3 - t0) / 1e9
        except Exception as e:  # noqa: BLE001 - find which request the model cannot compute on
            if len(batch) == 1:
                batch[0].deliver(
                    BadInputError(f"model {self.model!r} cannot compute on this input: {short_message(e)}")
                )
                return
            for item in batch:
                self._execute([item])
            return
        if batch[0].lane == "live":  # background work is not serving: it stays out of the serving metrics
            rows = sum(i.rows for i in batch)
            self._metrics.batch_size.labels(self.model).observe(rows)
            self._metrics.inferences.labels(self.model).inc(len(batch))
            started = time.monotonic() - (t3 - t0) / 1e9
            queued = sum(max(0.0, started - i.queued_at) for i in batch)
            self.stats.batch(version, rows, len(batch), int(queued * 1e9), t1 - t0, t2 - t1, t3 - t2)
        offset = 0
        for item in batch:
            end = offset + item.rows
            item.deliver(InferResult(version, tuple(o[offset:end] for o in outputs), compute_s=compute_s))
            offset = end

    def _forward(self, runnable: Runnable, inputs: list[tuple[torch.Tensor, ...]]) -> tuple[list[np.ndarray], int, int]:
        """The outputs as numpy arrays, and when (perf_counter_ns) the inputs were ready and the forward returned."""
        n = len(inputs[0])
        args = list(inputs[0]) if len(inputs) == 1 else [torch.cat([x[i] for x in inputs]) for i in range(n)]
        rows = args[0].shape[0]
        args = self._ops.to_device(args)
        t1 = time.perf_counter_ns()
        with torch.inference_mode():
            outs = runnable(*args)
        t2 = time.perf_counter_ns()
        result = []
        for o in outs:
            if o.shape[0] != rows:
                raise RuntimeError(f"output has {o.shape[0]} rows for {rows} input rows")
            # C order whatever the graph's last operator left (a permute or transpose): every encoder reads
            # rows of this array, and orjson and tobytes need it contiguous (issue 23: permuted outputs were 500)
            result.append(np.ascontiguousarray(o.detach().cpu().numpy()))
        return result, t1, t2

"""Fit jobs: train chosen layers of a version on a dataset, in the server, between inference batches.

A job copies the layers it trains (everything else is the base version's own modules, frozen and shared), and runs
one optimizer step per slice of the model's device worker (the background `job` lane: serving waits for at most one
step, and steps get a bounded share of the worker's time under load). When it ends it commits a **staged** version
(parent: the base version) whose record says how it was trained; it never becomes current by itself: a promotion or
a rollout decides that. Nothing of a job is durable before that commit, so a crash or a cancel leaves no
half-trained version; the job's journal document (kind `job`) says it failed, and why.

Why eval mode throughout: the frozen modules are shared with the versions that serve, so nothing may change them;
BatchNorm in train mode would update their running statistics. The trained layers therefore learn against the
frozen network exactly as it serves, and dropout stays off (documented in docs/API.md).
"""

from __future__ import annotations

import copy
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from morphserve.graph.errors import NotFoundError
from morphserve.graph.spec import build_graph_module
from morphserve.graph.version import ModelVersion, make_version
from morphserve.store import Store

from .budget import MemoryBudget, module_bytes
from .datasets import NAME_PATTERN, Dataset, Datasets
from .errors import DatasetError, JobConflictError, JobError, UnavailableError
from .events import Event, EventHub
from .pipeline import EditOutcome, EditPipeline
from .served import ServedModel
from .worker import Slice

log = logging.getLogger("morphserve.fit")
T = TypeVar("T")

KIND = "job"
#: A running job's document is refreshed this often; one not refreshed for DEAD_S belongs to a server that died.
BEAT_S = 1.0
DEAD_S = 5.0
#: Ended jobs whose records are kept per model (the newest).
KEEP_ENDED = 20
#: Points of the loss curve kept in the record (evenly thinned beyond).
CURVE_POINTS = 500


class FitSpec(BaseModel):
    """`POST /v1/models/{m}/fit`."""

    model_config = ConfigDict(extra="forbid")

    train: list[str] | str = Field(description="node ids to train, or a prefix of node ids / module paths")
    dataset: str = Field(pattern=NAME_PATTERN)
    loss: Literal["cross_entropy", "mse", "bce"] = "cross_entropy"
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0, le=10)
    steps: int | None = Field(None, ge=1, le=10_000_000)
    epochs: float | None = Field(None, gt=0, le=10_000)
    batch_size: int = Field(32, ge=1, le=4096)
    eval: str | None = Field(None, pattern=NAME_PATTERN, description="a dataset scored before and after")
    eval_every: int | None = Field(None, ge=1, description="also score `eval` every N steps")
    seed: int = Field(0, ge=0, le=2**63 - 1)
    weight_decay: float = Field(0.0, ge=0, le=1)
    momentum: float = Field(0.0, ge=0, lt=1, description="SGD only")
    version: int | None = Field(None, ge=1, description="the version to start from (default: the current one)")

    @model_validator(mode="after")
    def _length(self) -> FitSpec:
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("give exactly one of steps or epochs")
        if isinstance(self.train, list) and not self.train:
            raise ValueError("train names no layer")
        if self.eval_every is not None and self.eval is None:
            raise ValueError("eval_every needs an eval dataset")
        return self


class Job:
    """One job's live state on the replica that runs it."""

    def __init__(self, job_id: str, model: str, spec: FitSpec, base: int, nodes: list[str], steps: int) -> None:
        self.id = job_id
        self.model = model
        self.spec = spec
        self.base = base
        self.nodes = nodes
        self.steps = steps
        self.step = 0
        self.losses: list[float] = []
        self.eval_curve: list[dict[str, Any]] = []
        self.eval_before: dict[str, Any] | None = None
        self.eval_after: dict[str, Any] | None = None
        self.state = "running"
        self.version: int | None = None
        self.error: str | None = None
        self.started_at = time.time()
        self.ended_at: float | None = None
        self.cancelled = threading.Event()
        self.cancel_reason = "cancelled by a client"
        self.ending = threading.Event()  # stops the heartbeat
        self.done = threading.Event()

    def record(self, replica: str) -> dict[str, Any]:
        curve = self.losses
        if len(curve) > CURVE_POINTS:  # thinned evenly, the last point kept
            stride = math.ceil(len(curve) / CURVE_POINTS)
            curve = [*curve[::stride], curve[-1]]
        return {
            "id": self.id,
            "model": self.model,
            "spec": self.spec.model_dump(),
            "state": self.state,
            "base_version": self.base,
            "version": self.version,
            "train": self.nodes,
            "steps": self.steps,
            "step": self.step,
            "loss": self.losses[-1] if self.losses else None,
            "loss_curve": curve,
            "loss_curve_stride": max(1, math.ceil(len(self.losses) / CURVE_POINTS)),
            "eval_before": self.eval_before,
            "eval_after": self.eval_after,
            "eval_curve": self.eval_curve,
            "seed": self.spec.seed,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "seconds": round((self.ended_at or time.time()) - self.started_at, 3),
            "error": self.error,
            "replica": replica,
            "heartbeat_at": time.time(),
        }


def trainable(nodes: Mapping[str, nn.Module], selector: list[str] | str, paths: Mapping[str, str]) -> list[str]:
    """The node ids `selector` names: a list of node ids, or a prefix of node ids or module paths. JobError names
    an unknown node, a prefix that matches nothing, and a node without parameters."""
    if isinstance(selector, list):
        unknown = [n for n in selector if n not in nodes]
        if unknown:
            raise JobError(
                f"no layer {unknown[0]!r} to train; layers: {', '.join(sorted(nodes)[:20])}", node=unknown[0]
            )
        chosen = list(dict.fromkeys(selector))
    else:
        chosen = [n for n in nodes if n.startswith(selector) or paths.get(n, "").startswith(selector)]
        if not chosen:
            raise JobError(f"no layer's id or module path starts with {selector!r}", prefix=selector)
    frozen = [n for n in chosen if not any(True for _ in nodes[n].parameters())]
    if frozen:
        raise JobError(f"layer {frozen[0]!r} has no parameters to train", node=frozen[0])
    return chosen


class FitJobs:
    """Starts, runs, cancels and reports fit jobs; one job per model at a time."""

    def __init__(
        self,
        store: Store,
        datasets: Datasets,
        pipeline: EditPipeline,
        events: EventHub,
        budget: MemoryBudget,
        *,
        replica: Callable[[], str],
        max_steps: int,
        max_seconds: float,
        max_batch_size: int,
    ) -> None:
        self.store = store
        self.datasets = datasets
        self.pipeline = pipeline
        self.events = events
        self.budget = budget
        self.replica = replica
        self.max_steps = max_steps
        self.max_seconds = max_seconds
        self.max_batch_size = max_batch_size
        self._jobs: dict[str, Job] = {}  # model -> its running job here
        self._lock = threading.Lock()

    # -- the routes (blocking: the registry runs them off the event loop) --------------------------------------
    def start(self, served: ServedModel, spec: FitSpec) -> dict[str, Any]:
        name = served.name
        base = served.residency.get(spec.version) if spec.version is not None else served.current()
        data = self.datasets.load(name, spec.dataset, base)
        _check_loss(spec, data)
        if spec.eval is not None:
            self.datasets.load(name, spec.eval, base)  # 404 or 422 now, not after training
        nodes = trainable(dict(base.modules), spec.train, _paths(base))
        steps = spec.steps or math.ceil((spec.epochs or 1) * math.ceil(data.rows / spec.batch_size))
        if steps > self.max_steps:
            raise JobError(
                f"the job needs {steps:,} steps, over --max-fit-steps ({self.max_steps:,})",
                needed=steps,
                limit=self.max_steps,
            )
        self._check_memory(base, nodes, spec, data)
        with self._lock, self.store.edit_lock(name):
            self._fail_dead(name)
            running = next((d for d in self.store.docs(name, KIND) if d.value.get("state") == "running"), None)
            if running is not None or name in self._jobs:
                key = running.key if running is not None else self._jobs[name].id
                raise JobConflictError(
                    f"job {key} is training {name!r}: one job per model at a time (DELETE .../jobs/{key} cancels it)",
                    job=key,
                )
            job = Job(f"{int(time.time())}-{uuid.uuid4().hex[:8]}", name, spec, base.version, nodes, steps)
            self.store.put_doc(name, KIND, job.id, job.record(self.replica()), expect_rev=0)
            self._jobs[name] = job
        self._publish(name, job, "started")  # before the job can end: a follower sees `started` first
        threading.Thread(target=self._run, args=(served, job, base, data), name=f"fit-{name}", daemon=True).start()
        return job.record(self.replica())

    def get(self, served: ServedModel, job_id: str) -> dict[str, Any]:
        job = self._jobs.get(served.name)
        if job is not None and job.id == job_id:
            return job.record(self.replica())
        self._fail_dead(served.name)
        doc = self.store.doc(served.name, KIND, job_id)
        if doc is None:
            raise NotFoundError(f"model {served.name!r} has no job {job_id!r}", job=job_id)
        return dict(doc.value)

    def jobs(self, served: ServedModel) -> list[dict[str, Any]]:
        self._fail_dead(served.name)
        out = [dict(d.value) for d in self.store.docs(served.name, KIND)]
        job = self._jobs.get(served.name)
        return [job.record(self.replica()) if job is not None and r["id"] == job.id else r for r in out]

    def cancel(self, served: ServedModel, job_id: str) -> dict[str, Any]:
        job = self._jobs.get(served.name)
        if job is None or job.id != job_id:
            record = self.get(served, job_id)  # 404 for an unknown one
            if record["state"] == "running":
                raise UnavailableError(f"job {job_id} runs on replica {record.get('replica')}: cancel it there")
            return record  # ended already: nothing to cancel
        job.cancelled.set()
        job.done.wait(60)
        return job.record(self.replica())

    def forget(self, model: str) -> None:
        """The model is gone (deleted here or elsewhere): its job stops, committing nothing."""
        job = self._jobs.get(model)
        if job is not None:
            job.cancel_reason = "the model was deleted"
            job.cancelled.set()

    # -- the job -----------------------------------------------------------------------------------------------
    def _check_memory(self, base: ModelVersion, nodes: list[str], spec: FitSpec, data: Dataset) -> None:
        """A job's memory: its layers' copies, their gradients and optimizer state, and one batch of activations
        (every node's output at the batch size, from the recorded shapes), checked before anything is allocated."""
        trained = sum(module_bytes(base.modules[n]) for n in nodes)
        states = 2 if spec.optimizer == "adamw" else (1 if spec.momentum else 0)
        activations = 0
        for s in base.shapes.values():
            elements = 1
            for i, d in enumerate(s.shape):
                elements *= spec.batch_size if i == 0 else (32 if d == -1 else d)
            activations += elements * 4
        resident = sum(module_bytes(m) for m in {id(m): m for m in base.modules.values()}.values())
        needed = resident + trained * (2 + states) + 2 * activations
        if needed > self.budget.limit:
            raise JobError(
                f"the job needs about {needed:,} bytes (the model, the trained layers with their gradients and "
                f"optimizer state, a batch of activations), over --max-model-bytes ({self.budget.limit:,})",
                needed_bytes=needed,
                limit_bytes=self.budget.limit,
            )

    def _run(self, served: ServedModel, job: Job, base: ModelVersion, data: Dataset) -> None:
        name = served.name
        worker = served.worker
        device = worker.device
        deadline = time.monotonic() + self.max_seconds
        beating = threading.Thread(target=self._beat, args=(name, job), name=f"fit-beat-{name}", daemon=True)
        beating.start()
        try:
            torch.manual_seed(job.spec.seed)
            trained = {n: _trainable_copy(base.modules[n], device) for n in job.nodes}
            frozen = {n: m if device.type == "cpu" else copy.deepcopy(m).to(device) for n, m in base.modules.items()}
            gm = build_graph_module(base.spec, {**frozen, **trained})
            gm.eval()
            params = [p for m in trained.values() for p in m.parameters()]
            optimizer: torch.optim.Optimizer
            if job.spec.optimizer == "adamw":
                optimizer = torch.optim.AdamW(params, lr=job.spec.lr, weight_decay=job.spec.weight_decay)
            else:
                optimizer = torch.optim.SGD(
                    params, lr=job.spec.lr, momentum=job.spec.momentum, weight_decay=job.spec.weight_decay
                )
            eval_data = self.datasets.load(name, job.spec.eval, base) if job.spec.eval else None
            if eval_data is not None:
                job.eval_before = _with_version(self._score(served, gm, eval_data), base.version)
            order = _batches(data.rows, job.spec.batch_size, job.steps, job.spec.seed)
            for step, index in enumerate(order, start=1):
                if job.cancelled.is_set():
                    raise _Cancelled
                if time.monotonic() > deadline:
                    raise JobError(f"the job ran longer than --max-fit-seconds ({self.max_seconds:g} s)")
                loss = self._on_worker(served, _stepper(gm, optimizer, data, index, job.spec.loss, device))
                job.losses.append(loss)
                job.step = step
                if not math.isfinite(loss):
                    raise JobError(f"the loss became {loss} at step {step}: lower lr")
                if eval_data is not None and job.spec.eval_every and step % job.spec.eval_every == 0:
                    job.eval_curve.append({"step": step, **self._score(served, gm, eval_data)})
            final = {n: _frozen_copy(m) for n, m in trained.items()}
            outcome = self._commit(served, job, base, final)
            job.version = outcome.version.version
            if eval_data is not None:
                job.eval_after = _with_version(self._score(served, gm, eval_data), job.version)
            job.state = "succeeded"
        except _Cancelled:
            job.state, job.error = "cancelled", job.cancel_reason
        except Exception as e:  # noqa: BLE001 - any failure ends the job with its reason; nothing was committed
            job.state = "failed"
            job.error = getattr(e, "message", None) or f"{type(e).__name__}: {e}"
            log.warning("model %s: job %s failed: %s", name, job.id, job.error)
        finally:
            job.ended_at = time.time()
            job.ending.set()  # the heartbeat stops before the final record is written
            beating.join(BEAT_S * 2)
            try:
                self.store.put_doc(name, KIND, job.id, job.record(self.replica()))
                self._prune(name)
            except Exception:  # noqa: BLE001 - the model may have been deleted meanwhile
                log.warning("model %s: job %s's record could not be written", name, job.id)
            with self._lock:
                if self._jobs.get(name) is job:
                    del self._jobs[name]
            job.done.set()
            self._publish(name, job, job.state)

    def _beat(self, name: str, job: Job) -> None:
        """Refresh the running job's document every BEAT_S (its progress for other replicas, and the proof that its
        server lives), on a thread of its own so that a long step cannot make the job look dead."""
        while not job.ending.wait(BEAT_S):
            try:
                self.store.put_doc(name, KIND, job.id, job.record(self.replica()))
            except Exception as e:  # noqa: BLE001 - the journal may be down for a moment; the next beat retries
                log.debug("model %s: job %s's heartbeat failed: %s", name, job.id, e)
                continue
            self._publish(name, job, "progress")

    def _prune(self, model: str) -> None:
        """Keep the records of the newest KEEP_ENDED ended jobs of a model (as rollouts keep theirs)."""
        ended = [d for d in self.store.docs(model, KIND) if d.value.get("state") != "running"]
        for d in sorted(ended, key=lambda d: d.value.get("started_at", 0.0))[:-KEEP_ENDED]:
            self.store.delete_doc(model, KIND, d.key)

    def _commit(self, served: ServedModel, job: Job, base: ModelVersion, trained: dict[str, nn.Module]) -> EditOutcome:
        op = {
            "op": "fit",
            "job": job.id,
            "train": job.nodes,
            "dataset": job.spec.dataset,
            "steps": job.step,
            "seed": job.spec.seed,
        }

        def propose(number: int) -> ModelVersion:
            modules = {**base.modules, **trained}
            return make_version(served.name, number, base.version, base.spec, modules, previous=base, ops=(op,))

        return self.pipeline.commit_version(served, propose, stage=True)

    def _on_worker(self, served: ServedModel, fn: Callable[[], T]) -> T:
        """Run `fn` on the model's device worker as one background slice; its result."""
        fut: Future[T] = Future()

        def run() -> None:
            try:
                fut.set_result(fn())
            except BaseException as e:  # noqa: BLE001 - handed to the job's thread
                fut.set_exception(e)

        while not served.worker.submit_background(Slice(run)):
            if served.deleted:
                raise NotFoundError(f"model {served.name!r} was deleted during the job")
            time.sleep(0.005)
        return fut.result(timeout=600)

    def _score(self, served: ServedModel, gm: nn.Module, data: Dataset) -> dict[str, Any]:
        """Accuracy (labels) or mse (targets) of the model as it trains, in slices on the worker."""
        rows = max(1, self.max_batch_size // 4)
        outs: list[np.ndarray] = []
        device = served.worker.device
        for start in range(0, data.rows, rows):
            chunk = tuple(t[start : start + rows].to(device) for t in data.inputs)

            def forward(chunk: tuple[torch.Tensor, ...] = chunk) -> np.ndarray:
                with torch.no_grad():
                    return np.asarray(gm(*chunk)[0].detach().cpu().numpy())

            outs.append(self._on_worker(served, forward))
        predictions = np.concatenate(outs)
        if data.labels is not None:
            chosen = predictions.reshape(predictions.shape[0], -1).argmax(axis=1)
            return {"dataset": data.name, "rows": data.rows, "accuracy": float((chosen == data.labels.numpy()).mean())}
        assert data.targets is not None
        target = data.targets.numpy().astype(np.float64)
        mse = float(np.mean((predictions.astype(np.float64).reshape(target.shape) - target) ** 2))
        return {"dataset": data.name, "rows": data.rows, "mse": mse}

    def _fail_dead(self, model: str) -> None:
        """Jobs the journal says run, whose server stopped refreshing them: they failed (a restart, a crash)."""
        now = time.time()
        for d in self.store.docs(model, KIND):
            value = d.value
            mine = self._jobs.get(model)
            if value.get("state") != "running" or (mine is not None and mine.id == d.key):
                continue
            if now - float(value.get("heartbeat_at") or 0) > DEAD_S:
                value = dict(value, state="failed", ended_at=now, error="the server running the job stopped")
                try:
                    self.store.put_doc(model, KIND, d.key, value, expect_rev=d.rev)
                except Exception:  # noqa: BLE001 - another replica marked it first
                    continue

    def _publish(self, model: str, job: Job, what: str) -> None:
        data = {
            "model": model,
            "job": job.id,
            "event": what,
            "state": job.state,
            "step": job.step,
            "steps": job.steps,
            "loss": job.losses[-1] if job.losses else None,
            "version": job.version,
        }
        self.events.publish(model, Event("job", data))

    def recover(self, model: str) -> None:
        """At start: a job the journal says runs cannot run here any more."""
        self._fail_dead(model)


class _Cancelled(Exception):
    pass


def _with_version(score: dict[str, Any], version: int) -> dict[str, Any]:
    return {"version": version, **score}


def _paths(v: ModelVersion) -> dict[str, str]:
    """Module paths of the version's nodes, where the import recorded them."""
    return {n.id: p for n in v.spec.nodes if (p := getattr(n, "path", None))}


def _check_loss(spec: FitSpec, data: Dataset) -> None:
    if spec.loss == "cross_entropy" and data.labels is None:
        raise DatasetError(f"loss cross_entropy needs a dataset with labels; {spec.dataset!r} has targets")
    if spec.loss in ("mse", "bce") and data.targets is None:
        raise DatasetError(f"loss {spec.loss} needs a dataset with targets; {spec.dataset!r} has labels")
    if spec.loss == "bce" and data.targets is not None:
        t = data.targets
        if bool((t < 0).any()) or bool((t > 1).any()):
            raise DatasetError(f"loss bce needs targets in [0, 1]; {spec.dataset!r} has values outside")


def _trainable_copy(module: nn.Module, device: torch.device) -> nn.Module:
    m = copy.deepcopy(module).to(device)
    m.eval()
    for p in m.parameters():
        p.requires_grad_(True)
    return m


def _frozen_copy(module: nn.Module) -> nn.Module:
    m = copy.deepcopy(module).cpu()
    m.eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def _batches(rows: int, batch: int, steps: int, seed: int) -> list[np.ndarray]:
    """Row indices of every step: epochs of a seeded permutation, so the same seed and data give the same steps."""
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    while len(out) < steps:
        perm = rng.permutation(rows)
        for start in range(0, rows, batch):
            out.append(perm[start : start + batch])
            if len(out) == steps:
                break
    return out


def _stepper(
    gm: nn.Module, optimizer: torch.optim.Optimizer, data: Dataset, index: np.ndarray, loss: str, device: torch.device
) -> Callable[[], float]:
    return lambda: _step(gm, optimizer, data, index, loss, device)


def _step(
    gm: nn.Module, optimizer: torch.optim.Optimizer, data: Dataset, index: np.ndarray, loss: str, device: torch.device
) -> float:
    """One optimizer step on the rows `index` (on the worker thread: gradients on, inference mode off)."""
    idx = torch.from_numpy(index)
    inputs = tuple(t[idx].to(device) for t in data.inputs)
    with torch.inference_mode(False), torch.enable_grad():
        out = gm(*inputs)[0]
        if loss == "cross_entropy":
            assert data.labels is not None
            value = nn.functional.cross_entropy(out.reshape(out.shape[0], -1), data.labels[idx].to(device))
        else:
            assert data.targets is not None
            target = data.targets[idx].to(device=device, dtype=out.dtype).reshape(out.shape)
            if loss == "mse":
                value = nn.functional.mse_loss(out, target)
            else:
                value = nn.functional.binary_cross_entropy_with_logits(out, target)
        optimizer.zero_grad(set_to_none=True)
        value.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    return float(value.detach())

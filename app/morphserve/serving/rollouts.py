"""Rollouts: start, follow, decide and end them, journalled, on every replica.

A rollout is a journal document (kind `rollout`) holding its spec, its state (`evaluating`, `running`, `promoted`,
`aborted`), and, once it ended, why and the evidence it ended on. This module keeps, per model, the live `Rollout`
(rollout.py: routing, evidence, verdict) of the document that runs, and:

- starts one (one per model at a time, checked under the journal's edit lock of the model, so replicas cannot both
  start one), pinning the candidate resident;
- evaluates the candidate and the current version on the rollout's dataset before any traffic reaches it (the
  worker's background `job` lane: serving never waits behind it for more than one slice);
- shadows requests: a copy runs on the candidate in the worker's background `shadow` lane, dropped (and counted)
  when the device is busy, and its answer is compared with the one the client got;
- watches the gates (a monitor thread, every `TICK_S`), and carries out a verdict: a promotion is the pipeline's
  promote, journalled in the same transaction as the decision; an abort is the decision alone. Every replica judges
  its own traffic and the first decision to reach the journal wins (the document's rev): the others see the outcome
  when they next follow the journal (`sync`), and so does a server that restarts;
- publishes `rollout` events on the model's stream.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any

import numpy as np

from morphserve.graph.errors import NotFoundError
from morphserve.graph.version import ModelVersion
from morphserve.store import Doc, DocConflictError, Store, StoreError

from .datasets import Dataset, Datasets
from .errors import DatasetError, RolloutConflictError, UnavailableError
from .events import Event, EventHub
from .inference import prepare_inputs
from .metrics import Metrics
from .pipeline import EditPipeline
from .rollout import Gates, Rollout, RolloutSpec
from .served import ServedModel
from .worker import DroppedError, InferItem, InferResult

log = logging.getLogger("morphserve.rollouts")

KIND = "rollout"
ACTIVE = ("evaluating", "running")
#: How often the monitor looks at the gates of the rollouts running here.
TICK_S = 0.05
#: Ended rollouts kept in the journal per model (the newest); older ones are deleted.
KEEP_ENDED = 20
#: Batches an evaluation keeps queued on the worker at once; each is an EVAL_IN_FLIGHT-th of a batch, so that an idle
#: worker merges them into full batches while a live request behind one slice waits for little compute.
EVAL_IN_FLIGHT = 8


def evaluate(served: ServedModel, version: ModelVersion, dataset: Dataset, rows_per_batch: int) -> dict[str, Any]:
    """Score `version` on `dataset` through the model's worker, in its background `job` lane: accuracy (argmax of
    the first output against `labels`) or the mean squared error against `targets`. Blocking."""
    runnable = served.residency.runnable(version.version) or served.residency.make_resident(version)
    outputs: list[np.ndarray | None] = []
    started = time.perf_counter()
    pending: list[tuple[int, Future[InferResult]]] = []

    def drain(limit: int) -> None:
        while len(pending) > limit:
            index, fut = pending.pop(0)
            outputs[index] = fut.result(timeout=600).outputs[0]

    for index, start in enumerate(range(0, dataset.rows, rows_per_batch)):
        chunk = tuple(t[start : start + rows_per_batch] for t in dataset.inputs)
        fut: Future[InferResult] = Future()
        outputs.append(None)
        item = InferItem(chunk, version.version, _settle(fut), runnable=runnable, lane="job")
        while not served.worker.submit_background(item):
            if served.deleted:
                raise NotFoundError(f"model {served.name!r} was deleted during the evaluation")
            drain(0)  # the background queue is full: let ours go first
            time.sleep(0.005)
        pending.append((index, fut))
        drain(EVAL_IN_FLIGHT)
    drain(0)
    predictions = np.concatenate([o for o in outputs if o is not None])
    result: dict[str, Any] = {"version": version.version, "dataset": dataset.name, "rows": dataset.rows}
    if dataset.labels is not None:
        chosen = predictions.reshape(predictions.shape[0], -1).argmax(axis=1)
        result["accuracy"] = float((chosen == dataset.labels.numpy()).mean())
    else:
        assert dataset.targets is not None
        target = dataset.targets.numpy().astype(np.float64)
        result["mse"] = float(np.mean((predictions.astype(np.float64).reshape(target.shape) - target) ** 2))
    result["seconds"] = round(time.perf_counter() - started, 3)
    return result


def _settle(fut: Future[InferResult]) -> Callable[[InferResult | BaseException], None]:
    def deliver(r: InferResult | BaseException) -> None:
        if isinstance(r, BaseException):
            fut.set_exception(r)
        else:
            fut.set_result(r)

    return deliver


class Rollouts:
    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        events: EventHub,
        pipeline: EditPipeline,
        datasets: Datasets,
        *,
        replica: Callable[[], str],
        max_batch_size: int,
        lookup: Callable[[str], ServedModel | None],
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.events = events
        self.pipeline = pipeline
        self.datasets = datasets
        self.replica = replica
        self.max_batch_size = max_batch_size
        self.lookup = lookup
        self._live: dict[str, tuple[Rollout, int]] = {}  # model -> (rollout, rev of its document when read)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None

    def close(self) -> None:
        self._stop.set()
        if self._monitor is not None:
            self._monitor.join(5)

    # -- what the traffic asks (any thread, mostly the event loop) ---------------------------------------------
    def active(self, model: str) -> Rollout | None:
        hit = self._live.get(model)
        return hit[0] if hit is not None else None

    def shadow(
        self, served: ServedModel, rollout: Rollout, arrays: Mapping[str, np.ndarray], live: InferResult
    ) -> None:
        """Run a copy of a request the current version answered on the candidate, in the background; compared when
        it comes back, dropped (and counted) when the device is busy. Never raises, never waits."""
        try:
            if not served.worker.takes_shadow():  # decided before the copy is built: see DeviceWorker.takes_shadow
                raise DroppedError("the device is busy")
            candidate = served.residency.cached(rollout.candidate)
            if candidate is None:
                raise DroppedError("the candidate is not in memory")
            inputs = prepare_inputs(served.name, arrays, candidate)

            def deliver(r: InferResult | BaseException) -> None:
                if isinstance(r, InferResult):
                    rollout.compared(live.outputs, r.outputs, live.compute_s, r.compute_s)
                    self.metrics.shadow_runs.labels(served.name, "compared").inc()
                elif isinstance(r, DroppedError):
                    rollout.dropped()
                    self.metrics.shadow_runs.labels(served.name, "dropped").inc()
                else:
                    rollout.shadow_failed()
                    self.metrics.shadow_runs.labels(served.name, "failed").inc()

            item = InferItem(inputs, rollout.candidate, deliver, lane="shadow")
            if not served.worker.submit_background(item):
                raise DroppedError("the device is busy")
        except DroppedError:
            rollout.dropped()
            self.metrics.shadow_runs.labels(served.name, "dropped").inc()
        except Exception:  # noqa: BLE001 - the candidate cannot take this input: one error of the candidate's
            rollout.shadow_failed()
            self.metrics.shadow_runs.labels(served.name, "failed").inc()

    def observe(self, model: str, rollout: Rollout, role: str, seconds: float, error: bool) -> None:
        rollout.observe(role, seconds, error)
        self.metrics.rollout_requests.labels(model, role).inc()
        if error:
            self.metrics.rollout_errors.labels(model, role).inc()
        else:
            self.metrics.rollout_latency.labels(model, role).observe(seconds)

    # -- the routes (blocking: the registry runs them off the event loop) ---------------------------------------
    def start(self, served: ServedModel, spec: RolloutSpec) -> dict[str, Any]:
        name = served.name
        with served.edit_lock, self.store.edit_lock(name):
            served.check_alive()
            self.pipeline.catch_up(served)
            current = served.serving_version()
            if spec.candidate == current:
                raise RolloutConflictError(
                    f"version {spec.candidate} of {name!r} is the current version already: nothing to roll out",
                    candidate=spec.candidate,
                )
            served.residency.get(spec.candidate)  # 404 for a version the history does not have
            running = self._running_doc(name)
            if running is not None:
                raise RolloutConflictError(
                    f"rollout {running.key} of {name!r} is {running.value['state']}: end it first "
                    f"(POST .../rollout/promote or .../rollout/abort)",
                    rollout=running.key,
                )
            if spec.eval_dataset is not None:
                described = self.datasets.describe(name, spec.eval_dataset)  # 404 for an unknown dataset
                if described.value.get("kind") != "labels" and spec.gates and spec.gates.min_eval_accuracy is not None:
                    raise DatasetError(
                        f"gates.min_eval_accuracy needs a dataset with labels; {spec.eval_dataset!r} has targets "
                        "(gate it with max_eval_regression, on the mean squared error)",
                        dataset=spec.eval_dataset,
                    )
            rollout_id = f"{int(time.time())}-{uuid.uuid4().hex[:8]}"
            value = {
                "id": rollout_id,
                "spec": spec.model_dump(),
                "candidate": spec.candidate,
                "baseline": current,
                "state": "evaluating" if spec.eval_dataset else "running",
                "started_at": time.time(),
                "ended_at": None,
                "reason": None,
                "evidence": None,
                "evaluation": None,
                "started_by": self.replica(),
            }
            doc = self.store.put_doc(name, KIND, rollout_id, value, expect_rev=0)
            self._prune(name)
        self._activate(served, doc)
        return self.view(served)

    def view(self, served: ServedModel) -> dict[str, Any]:
        """The running rollout with its live evidence here, else the last one that ended; 404 when there was none."""
        name = served.name
        hit = self._live.get(name)
        docs = self.store.docs(name, KIND)
        if hit is not None:
            rollout, _ = hit
            doc = next((d for d in docs if d.key == rollout.id), None)
            value = dict(doc.value) if doc is not None else {}
            value.update(self._summary(rollout))
            return value
        if not docs:
            raise NotFoundError(f"model {name!r} has no rollout", model=name)
        latest = max(docs, key=lambda d: d.value.get("started_at", 0.0))
        return dict(latest.value)

    def promote(self, served: ServedModel, why: str = "promoted by hand") -> dict[str, Any]:
        rollout = self._require(served)
        self._conclude(served, rollout, ("promote", why))
        return self.view(served)

    def abort(self, served: ServedModel, why: str = "aborted by hand") -> dict[str, Any]:
        rollout = self._require(served)
        self._conclude(served, rollout, ("abort", why))
        return self.view(served)

    def _require(self, served: ServedModel) -> Rollout:
        self.sync(served)
        rollout = self.active(served.name)
        if rollout is None:
            raise NotFoundError(f"model {served.name!r} has no rollout running", model=served.name)
        return rollout

    # -- following the journal (the follower thread, start-up) -------------------------------------------------
    def sync(self, served: ServedModel) -> None:
        """Match this replica's live rollout to the journal: start following one that runs, end one that ended."""
        try:
            doc = self._running_doc(served.name)
        except StoreError as e:
            log.warning("model %s: rollouts cannot be read: %s", served.name, e)
            return
        hit = self._live.get(served.name)
        if hit is not None and (doc is None or doc.key != hit[0].id):
            self._deactivate(served.name, hit[0], reason="ended elsewhere")
            hit = None
        if doc is None:
            return
        if hit is None:
            self._activate(served, doc)
        else:
            rollout, _ = hit
            if doc.value["state"] == "running" and rollout.phase == "evaluating":
                rollout.phase = "running"
                rollout.evaluation = doc.value.get("evaluation")
            with self._lock:
                self._live[served.name] = (rollout, doc.rev)

    def forget(self, model: str) -> None:
        """The model is gone: drop its rollout here (its documents went with it)."""
        with self._lock:
            hit = self._live.pop(model, None)
        if hit is not None:
            self.metrics.rollout_active.labels(model).set(0)

    # -- internals -----------------------------------------------------------------------------------------------
    def _running_doc(self, model: str) -> Doc | None:
        return next((d for d in self.store.docs(model, KIND) if d.value.get("state") in ACTIVE), None)

    def _prune(self, model: str) -> None:
        ended = [d for d in self.store.docs(model, KIND) if d.value.get("state") not in ACTIVE]
        for d in sorted(ended, key=lambda d: d.value.get("started_at", 0.0))[:-KEEP_ENDED]:
            self.store.delete_doc(model, KIND, d.key)

    def _activate(self, served: ServedModel, doc: Doc) -> Rollout:
        value = doc.value
        spec = RolloutSpec.model_validate(value["spec"])
        rollout = Rollout(value["id"], spec, int(value["baseline"]), started_at=value.get("started_at"))
        rollout.phase = value["state"]
        rollout.evaluation = value.get("evaluation")
        served.residency.pin(spec.candidate)
        try:
            candidate = served.residency.get(spec.candidate)
            served.residency.make_resident(candidate)
        except Exception:
            served.residency.unpin(spec.candidate)
            raise
        with self._lock:
            self._live[served.name] = (rollout, doc.rev)
        self.metrics.rollout_active.labels(served.name).set(1)
        self._publish(served.name, rollout, "started")
        self._ensure_monitor()
        if rollout.phase == "evaluating":  # here it started, or it was evaluating when this replica (re)started
            threading.Thread(
                target=self._evaluate, args=(served, rollout), name=f"evaluate-{served.name}", daemon=True
            ).start()
        log.info("model %s: rollout %s of version %d (%s)", served.name, rollout.id, rollout.candidate, rollout.phase)
        return rollout

    def _deactivate(self, model: str, rollout: Rollout, *, reason: str) -> None:
        with self._lock:
            hit = self._live.get(model)
            if hit is None or hit[0] is not rollout:
                return
            del self._live[model]
        served = self.lookup(model)
        if served is not None:
            served.residency.unpin(rollout.candidate)
        self.metrics.rollout_active.labels(model).set(0)
        log.info("model %s: rollout %s %s", model, rollout.id, reason)

    def _summary(self, rollout: Rollout) -> dict[str, Any]:
        evidence = rollout.evidence()
        gates = rollout.spec.gates
        return {
            "state": rollout.phase,
            "evidence": evidence,
            "gates": None if gates is None else _gate_states(gates, rollout, evidence),
            "replica": self.replica(),
        }

    def _publish(self, model: str, rollout: Rollout, what: str, **extra: Any) -> None:
        data = {"model": model, "rollout": rollout.id, "candidate": rollout.candidate, "event": what, **extra}
        self.events.publish(model, Event("rollout", data))

    def _ensure_monitor(self) -> None:
        with self._lock:
            if self._monitor is None or not self._monitor.is_alive():
                self._monitor = threading.Thread(target=self._watch, name="rollout-gates", daemon=True)
                self._monitor.start()

    def _watch(self) -> None:
        while not self._stop.wait(TICK_S):
            for model, (rollout, _) in list(self._live.items()):
                comparisons = [c.agreement for c in rollout.comparisons if c.agreement is not None]
                if comparisons:
                    self.metrics.rollout_agreement.labels(model).set(min(comparisons))
                verdict = rollout.verdict()
                served = self.lookup(model)
                if verdict is None or served is None:
                    continue
                try:
                    self._conclude(served, rollout, verdict)
                except Exception:  # the monitor must go on; the next tick (or sync) settles it
                    log.exception(
                        "model %s: carrying out the verdict %s on rollout %s failed", model, verdict, rollout.id
                    )

    def _conclude(self, served: ServedModel, rollout: Rollout, verdict: tuple[str, str]) -> None:
        """Journal the decision (the first replica to do so wins), then end the rollout here."""
        name = served.name
        rollout.decide(verdict)  # stop routing to it at once, here
        action, why = verdict
        with self._lock:
            hit = self._live.get(name)
            rev = hit[1] if hit is not None and hit[0] is rollout else None
        if rev is None:
            return
        doc = self.store.doc(name, KIND, rollout.id)
        if doc is None or doc.value.get("state") not in ACTIVE:
            self._deactivate(name, rollout, reason="ended elsewhere")
            return
        value = dict(doc.value)
        value.update(
            state="promoted" if action == "promote" else "aborted",
            ended_at=time.time(),
            reason=why,
            evidence=rollout.evidence(),
            decided_by=self.replica(),
        )
        try:
            if action == "promote":

                def journal(version: int) -> None:
                    value["promoted_as"] = version
                    self.store.put_doc(name, KIND, rollout.id, value, expect_rev=doc.rev, current=version)

                self.pipeline.promote(served, rollout.candidate, journal=journal)
            else:
                self.store.put_doc(name, KIND, rollout.id, value, expect_rev=doc.rev)
        except DocConflictError:  # another replica decided first: its outcome stands
            log.info("model %s: rollout %s was decided elsewhere first", name, rollout.id)
            self._deactivate(name, rollout, reason="decided elsewhere")
            return
        except Exception:
            rollout.decided = None  # not journalled: it runs on, and the gates may decide again
            raise
        self._deactivate(name, rollout, reason=f"{value['state']}: {why}")
        self._publish(name, rollout, value["state"], reason=why)

    def _evaluate(self, served: ServedModel, rollout: Rollout) -> None:
        """Score the candidate and the current version before any traffic reaches the candidate; then let it run, or
        abort when the evaluation gates fail."""
        name = served.name
        spec = rollout.spec
        assert spec.eval_dataset is not None
        try:
            candidate = served.residency.get(rollout.candidate)
            baseline = served.residency.get(rollout.baseline)
            scores = {}
            for role, version in (("current", baseline), ("candidate", candidate)):
                dataset = self.datasets.load(name, spec.eval_dataset, version)
                # Slices of an eighth of a batch (see EVAL_IN_FLIGHT).
                scores[role] = evaluate(served, version, dataset, max(1, self.max_batch_size // EVAL_IN_FLIGHT))
                self.store.put_doc(name, "evaluation", f"{version.version}/{spec.eval_dataset}", scores[role])
            rollout.evaluation = scores
            verdict = _evaluation_verdict(spec.gates, scores)
            if verdict is None and spec.gates is not None and spec.shadow == 0 and spec.canary == 0:
                # No traffic will ever reach the candidate, so no traffic gate could judge it: the evaluation decides.
                verdict = ("promote", "every evaluation gate passed")
        except Exception as e:  # noqa: BLE001 - a failed evaluation aborts the rollout with the reason
            if self._stop.is_set() or served.deleted or isinstance(e, UnavailableError):
                # The server (or the model) is going away, not the candidate failing: the rollout stays
                # `evaluating` in the journal, and whoever serves the model next evaluates it again.
                log.info("model %s: the evaluation of rollout %s stopped with the server", name, rollout.id)
                return
            log.warning("model %s: the evaluation of rollout %s failed: %s", name, rollout.id, e)
            verdict = ("abort", f"the evaluation failed: {getattr(e, 'message', None) or e}")
        if verdict is not None:
            self._conclude(served, rollout, verdict)
            return
        doc = self.store.doc(name, KIND, rollout.id)
        if doc is None or doc.value.get("state") != "evaluating":
            return
        value = dict(doc.value, state="running", evaluation=rollout.evaluation)
        try:
            new = self.store.put_doc(name, KIND, rollout.id, value, expect_rev=doc.rev)
        except DocConflictError:
            return
        rollout.phase = "running"
        with self._lock:
            if name in self._live:
                self._live[name] = (rollout, new.rev)
        self._publish(name, rollout, "running", evaluation=rollout.evaluation)


def _evaluation_verdict(gates: Gates | None, scores: dict[str, dict[str, Any]]) -> tuple[str, str] | None:
    if gates is None:
        return None
    cand, cur = scores["candidate"], scores["current"]
    if "accuracy" in cand:
        if gates.min_eval_accuracy is not None and cand["accuracy"] < gates.min_eval_accuracy:
            return (
                "abort",
                f"eval accuracy {cand['accuracy']:.4f} is under min_eval_accuracy {gates.min_eval_accuracy:g}",
            )
        if gates.max_eval_regression is not None and cur["accuracy"] - cand["accuracy"] > gates.max_eval_regression:
            return "abort", (
                f"eval accuracy fell from {cur['accuracy']:.4f} to {cand['accuracy']:.4f}, more than "
                f"max_eval_regression {gates.max_eval_regression:g}"
            )
    elif gates.max_eval_regression is not None and cand["mse"] - cur["mse"] > gates.max_eval_regression:
        return "abort", f"eval mse rose from {cur['mse']:.4g} to {cand['mse']:.4g}, more than max_eval_regression"
    return None


def _gate_states(gates: Gates, rollout: Rollout, evidence: dict[str, Any]) -> dict[str, Any]:
    """Each gate with its bound, the value measured so far and whether it passes now (None: not measured yet)."""
    cand = evidence["roles"]["candidate"]
    agreement = [o["agreement"] for o in evidence["outputs"] if o["agreement"] is not None]
    ratio = rollout._p99_ratio()
    states: dict[str, Any] = {
        "min_requests": {
            "bound": gates.min_requests,
            "value": evidence["requests"],
            "ok": evidence["requests"] >= gates.min_requests,
        },
    }
    if gates.max_error_rate is not None:
        rate = cand["error_rate"]
        states["max_error_rate"] = {
            "bound": gates.max_error_rate,
            "value": rate,
            "ok": None if rate is None else rate <= gates.max_error_rate,
        }
    if gates.min_agreement is not None:
        value = min(agreement) if agreement else None
        states["min_agreement"] = {
            "bound": gates.min_agreement,
            "value": value,
            "rule": gates.agreement,
            "ok": None if value is None else value >= gates.min_agreement,
        }
    if gates.max_p99_ratio is not None:
        states["max_p99_ratio"] = {
            "bound": gates.max_p99_ratio,
            "value": ratio,
            "ok": None if ratio is None else ratio <= gates.max_p99_ratio,
        }
    evaluation = rollout.evaluation or {}
    cand_eval = evaluation.get("candidate", {})
    if gates.min_eval_accuracy is not None:
        acc = cand_eval.get("accuracy")
        states["min_eval_accuracy"] = {
            "bound": gates.min_eval_accuracy,
            "value": acc,
            "ok": None if acc is None else acc >= gates.min_eval_accuracy,
        }
    if gates.max_eval_regression is not None:
        cur_eval = evaluation.get("current", {})
        reg = None
        if "accuracy" in cand_eval and "accuracy" in cur_eval:
            reg = cur_eval["accuracy"] - cand_eval["accuracy"]
        elif "mse" in cand_eval and "mse" in cur_eval:
            reg = cand_eval["mse"] - cur_eval["mse"]
        states["max_eval_regression"] = {
            "bound": gates.max_eval_regression,
            "value": reg,
            "ok": None if reg is None else reg <= gates.max_eval_regression,
        }
    return states

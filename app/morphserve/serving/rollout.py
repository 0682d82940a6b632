"""A rollout's policy and its evidence: which requests the candidate answers or shadows, how its answers compare with
the current version's, and what the gates conclude. No I/O and no threads of its own: the rollout manager
(rollouts.py) journals what this decides and runs the candidate; this module only counts and judges, under one lock,
so that the worker thread (shadow results), the event loop (routing, latencies) and the decision thread can share it.

- **Routing** (`route`): a canary fraction of unversioned requests goes to the candidate. With a sticky header, the
  side is a hash of the rollout id and the header's value, so a given user stays on one side, on every replica.
- **Shadowing** (`shadow`): a fraction of the requests the current version answered also run on the candidate, in
  the worker's background lane (rollouts.py); the client never waits for it.
- **Comparison** (`Comparison`): per output, the agreement (argmax for classifiers, or allclose with a tolerance), the
  distribution of the difference (max abs, relative L2) and, for classifiers, the flip matrix.
- **Gates** (`verdict`): once `min_requests` pieces of evidence have accrued, promote when every gate passes, abort
  naming the first that fails; an error rate over its bound aborts at once.
"""

from __future__ import annotations

import collections
import hashlib
import math
import random
import threading
import time
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .datasets import NAME_PATTERN as DATASET_NAME

#: Flip matrices are kept for classifiers with at most this many classes (a bounded response and metric).
MAX_FLIP_CLASSES = 64
#: Latency and difference samples kept per role (a ring: the newest evidence counts).
SAMPLES = 10_000


class Gates(BaseModel):
    """What promotes or aborts a rollout on its own. Every bound is optional; `min_requests` is the evidence that
    must accrue before a verdict (shadow comparisons, or candidate answers for a canary without shadow)."""

    model_config = ConfigDict(extra="forbid")

    min_requests: int = Field(1000, ge=1, le=10_000_000)
    max_error_rate: float | None = Field(None, ge=0, le=1)
    max_p99_ratio: float | None = Field(None, gt=0, le=1000)
    min_agreement: float | None = Field(None, ge=0, le=1)
    agreement: str = "argmax"
    min_eval_accuracy: float | None = Field(None, ge=0, le=1)
    max_eval_regression: float | None = Field(None, ge=0)

    @field_validator("agreement")
    @classmethod
    def _agreement(cls, v: str) -> str:
        agreement_rule(v)
        return v


def agreement_rule(spec: str) -> tuple[str, float]:
    """`argmax`, or `allclose:TOL` (absolute and relative tolerance TOL): ValueError for anything else."""
    if spec == "argmax":
        return "argmax", 0.0
    kind, _, tol = spec.partition(":")
    if kind == "allclose":
        try:
            value = float(tol)
        except ValueError:
            value = math.nan
        if math.isfinite(value) and 0 <= value <= 1e6:
            return "allclose", value
    raise ValueError(f"agreement must be 'argmax' or 'allclose:TOL' with 0 <= TOL <= 1e6, not {spec!r}")


class RolloutSpec(BaseModel):
    """`PUT /v1/models/{m}/rollout`: the candidate and how traffic reaches it."""

    model_config = ConfigDict(extra="forbid")

    candidate: int = Field(ge=1)
    shadow: float = Field(0.0, ge=0, le=1)
    canary: float = Field(0.0, ge=0, le=1)
    sticky_header: str | None = Field(None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
    gates: Gates | None = None
    eval_dataset: str | None = Field(None, pattern=DATASET_NAME)

    @model_validator(mode="after")
    def _consistent(self) -> RolloutSpec:
        if self.gates is not None:
            if self.gates.min_agreement is not None and self.shadow == 0:
                raise ValueError("gates.min_agreement needs shadow > 0: agreement is measured on shadowed requests")
            evaluated = self.gates.min_eval_accuracy is not None or self.gates.max_eval_regression is not None
            if evaluated and self.eval_dataset is None:
                raise ValueError("gates.min_eval_accuracy and max_eval_regression need an eval_dataset")
            if self.shadow == 0 and self.canary == 0 and not evaluated:
                raise ValueError(
                    "gates need evidence: give shadow or canary a fraction above 0, or an eval_dataset with "
                    "min_eval_accuracy or max_eval_regression"
                )
        return self


Phase = Literal["evaluating", "running", "promoted", "aborted"]


class _Samples:
    """The newest SAMPLES values, for quantiles."""

    def __init__(self) -> None:
        self.values: collections.deque[float] = collections.deque(maxlen=SAMPLES)

    def add(self, v: float) -> None:
        self.values.append(v)

    def quantile(self, q: float) -> float | None:
        return float(np.quantile(np.fromiter(self.values, float), q)) if self.values else None


class Comparison:
    """How the candidate's answers differ from the current version's on the same requests, per output."""

    def __init__(self, rule: str) -> None:
        self.rule = rule
        self.kind, self.tol = agreement_rule(rule)
        self.rows = 0
        self.agree = 0
        self.max_abs = _Samples()  # per row
        self.rel_l2 = _Samples()  # per row
        self.flips: np.ndarray | None = None  # [current class, candidate class] counts (classifiers)

    def add(self, live: np.ndarray, cand: np.ndarray) -> None:
        a = live.reshape(live.shape[0], -1).astype(np.float64, copy=False)
        b = cand.reshape(cand.shape[0], -1).astype(np.float64, copy=False)
        if a.shape != b.shape:  # the candidate's output changed shape: nothing agrees
            self.disagree(a.shape[0])
            return
        diff = np.abs(a - b)
        norm = np.linalg.norm(a, axis=1)
        for row in range(a.shape[0]):
            self.max_abs.add(float(diff[row].max(initial=0.0)))
            self.rel_l2.add(float(np.linalg.norm(a[row] - b[row]) / max(norm[row], 1e-12)))
        if self.kind == "argmax":
            ca, cb = a.argmax(axis=1), b.argmax(axis=1)
            self.agree += int((ca == cb).sum())
            classes = a.shape[1]
            if classes <= MAX_FLIP_CLASSES:
                if self.flips is None:
                    self.flips = np.zeros((classes, classes), dtype=np.int64)
                np.add.at(self.flips, (ca, cb), 1)
        else:
            close = np.isclose(a, b, rtol=self.tol, atol=self.tol, equal_nan=True).all(axis=1)
            self.agree += int(close.sum())
        self.rows += a.shape[0]

    def disagree(self, rows: int) -> None:
        """Rows the candidate answered with no comparable output (missing, or of another shape)."""
        self.rows += rows

    @property
    def agreement(self) -> float | None:
        return self.agree / self.rows if self.rows else None

    def summary(self) -> dict[str, Any]:
        flips: dict[str, Any] | None = None
        if self.flips is not None:
            off = [
                {"from": int(i), "to": int(j), "count": int(self.flips[i, j])}
                for i, j in zip(*np.nonzero(self.flips), strict=True)
                if i != j
            ]
            flips = {"classes": int(self.flips.shape[0]), "changed": sorted(off, key=lambda f: -f["count"])[:20]}
        return {
            "rows": self.rows,
            "agreement": self.agreement,
            "rule": "argmax" if self.kind == "argmax" else f"allclose:{self.tol:g}",
            "max_abs": {"p50": self.max_abs.quantile(0.5), "p99": self.max_abs.quantile(0.99)},
            "relative_l2": {"p50": self.rel_l2.quantile(0.5), "p99": self.rel_l2.quantile(0.99)},
            "flips": flips,
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


class _Role:
    """One side's record: requests, errors and latencies."""

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.latency = _Samples()

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": self.errors / self.requests if self.requests else None,
            "p50_ms": _ms(self.latency.quantile(0.5)),
            "p99_ms": _ms(self.latency.quantile(0.99)),
        }


class Rollout:
    """The live state of one rollout on this replica: routing, evidence, verdict."""

    def __init__(self, rollout_id: str, spec: RolloutSpec, baseline: int, *, started_at: float | None = None) -> None:
        self.id = rollout_id
        self.spec = spec
        self.candidate = spec.candidate
        self.baseline = baseline
        self.started_at = started_at or time.time()
        self.phase: Phase = "evaluating" if spec.eval_dataset else "running"
        self.evaluation: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._rng = random.Random()
        gates = spec.gates or Gates()
        self.comparisons = [Comparison(gates.agreement)]
        self.roles = {"current": _Role(), "candidate": _Role()}
        #: Compute time of each shadowed request on both sides (its batch's forward): comparable where end-to-end
        #: latencies are not (a shadow run waits for idle time by design).
        self.compute = {"current": _Samples(), "candidate": _Samples()}
        self.shadow_runs = 0
        self.shadow_dropped = 0
        self.decided: tuple[str, str] | None = None

    # -- routing (the event loop) ------------------------------------------------------------------------------
    @property
    def serving(self) -> bool:
        return self.phase == "running" and self.decided is None

    def route(self, sticky: str | None) -> bool:
        """Whether the candidate answers this unversioned request (the canary side)."""
        if not self.serving or self.spec.canary <= 0:
            return False
        if self.spec.canary >= 1:
            return True
        if sticky is not None and self.spec.sticky_header is not None:
            digest = hashlib.blake2b(f"{self.id}\0{sticky}".encode(), digest_size=8).digest()
            return int.from_bytes(digest, "big") / 2**64 < self.spec.canary
        return self._rng.random() < self.spec.canary

    def shadow(self) -> bool:
        """Whether a request the current version answered also runs on the candidate."""
        return self.serving and self.spec.shadow > 0 and self._rng.random() < self.spec.shadow

    # -- evidence ------------------------------------------------------------------------------------------------
    def observe(self, role: str, seconds: float, error: bool) -> None:
        with self._lock:
            r = self.roles[role]
            r.requests += 1
            r.errors += int(error)
            if not error:
                r.latency.add(seconds)

    def compared(
        self,
        live: tuple[np.ndarray, ...],
        cand: tuple[np.ndarray, ...],
        live_compute_s: float = 0.0,
        cand_compute_s: float = 0.0,
    ) -> None:
        with self._lock:
            self.shadow_runs += 1
            self.roles["candidate"].requests += 1
            self.compute["current"].add(live_compute_s)
            self.compute["candidate"].add(cand_compute_s)
            while len(self.comparisons) < len(live):
                self.comparisons.append(Comparison(self.comparisons[0].rule))
            for i, cmp in enumerate(self.comparisons[: len(live)]):
                if i < len(cand):
                    cmp.add(live[i], cand[i])
                else:  # the candidate lost an output the current version has: nothing to agree with
                    cmp.disagree(live[i].shape[0])

    def shadow_failed(self) -> None:
        """The candidate raised on a shadowed request that the current version answered: an error of its own."""
        with self._lock:
            self.shadow_runs += 1
            self.roles["candidate"].requests += 1
            self.roles["candidate"].errors += 1

    def dropped(self) -> None:
        with self._lock:
            self.shadow_dropped += 1

    def evidence_count(self) -> int:
        """How much evidence has accrued: requests the candidate answered, as a canary or in the shadow."""
        return self.roles["candidate"].requests

    def evidence(self) -> dict[str, Any]:
        with self._lock:
            compute = {
                k: {"p50_ms": _ms(v.quantile(0.5)), "p99_ms": _ms(v.quantile(0.99))} for k, v in self.compute.items()
            }
            return {
                "requests": self.evidence_count(),
                "roles": {k: r.summary() for k, r in self.roles.items()},
                "shadow_compute": compute,
                "shadow": {"runs": self.shadow_runs, "dropped": self.shadow_dropped},
                "outputs": [c.summary() for c in self.comparisons],
                "evaluation": self.evaluation,
            }

    # -- the gates -----------------------------------------------------------------------------------------------
    def verdict(self) -> tuple[str, str] | None:
        """("promote" | "abort", why) once the gates can tell; None while evidence accrues or without gates."""
        gates = self.spec.gates
        if gates is None or self.decided is not None or self.phase != "running":
            return None
        with self._lock:
            cand = self.roles["candidate"]
            # More errors than the whole window allows: no later evidence can bring the rate under the bound.
            bound = gates.max_error_rate
            if bound is not None and cand.errors > bound * max(gates.min_requests, cand.requests):
                return "abort", (
                    f"error rate {cand.errors}/{cand.requests} on the candidate is over max_error_rate {bound:g}"
                )
            if self.evidence_count() < gates.min_requests:
                return None
            return self._judge(gates)

    def _judge(self, gates: Gates) -> tuple[str, str]:
        cand = self.roles["candidate"]
        if gates.max_error_rate is not None and cand.requests:
            rate = cand.errors / cand.requests
            if rate > gates.max_error_rate:
                return (
                    "abort",
                    f"error rate {rate:.4g} on the candidate is over max_error_rate {gates.max_error_rate:g}",
                )
        if gates.min_agreement is not None:
            measured = [c.agreement for c in self.comparisons if c.agreement is not None]
            agreement = min(measured) if measured else None
            if agreement is None or agreement < gates.min_agreement:
                shown = "none measured" if agreement is None else f"{agreement:.4f}"
                return "abort", f"agreement {shown} is under min_agreement {gates.min_agreement:g}"
        if gates.max_p99_ratio is not None:
            ratio = self._p99_ratio()
            if ratio is not None and ratio > gates.max_p99_ratio:
                return "abort", f"p99 of the candidate is {ratio:.3g}x the current's, over max_p99_ratio"
        return "promote", f"every gate passed on {self.evidence_count()} requests"

    def _p99_ratio(self) -> float | None:
        """Candidate p99 / current p99: of answered requests when the candidate answers a canary, else of the shadow
        runs' compute time against the live batches'."""
        if self.spec.canary > 0:
            a, b = self.roles["candidate"].latency.quantile(0.99), self.roles["current"].latency.quantile(0.99)
        else:
            a, b = self.compute["candidate"].quantile(0.99), self.compute["current"].quantile(0.99)
        if a is None or b is None or b <= 0:
            return None
        return a / b

    def decide(self, verdict: tuple[str, str]) -> None:
        with self._lock:
            self.decided = verdict

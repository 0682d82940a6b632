"""Rollouts and datasets on the client side: the typed answers of their routes, and the bodies sent to them.

A rollout's JSON is nested (spec, evidence per role, comparison per output, each gate's state); `Rollout` gives
the parts a caller branches on typed fields (`state`, `candidate`, `gates`, `roles`, `agreement`) and keeps the
whole answer in `raw`, so nothing the server reports is lost when it reports more than this module knows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

#: The states a rollout passes through; the first two are running (`Rollout.running`).
RolloutState = Literal["evaluating", "running", "promoted", "aborted"]
ACTIVE_STATES = ("evaluating", "running")


@dataclass(frozen=True)
class GateState:
    """One gate while the rollout runs: its bound, the value measured so far, and whether it passes now (`ok` is
    None while nothing has been measured). `rule` is the agreement rule, for `min_agreement`."""

    name: str
    bound: float
    value: float | None
    ok: bool | None
    rule: str | None = None


@dataclass(frozen=True)
class RoleStats:
    """One side's record: requests it answered (for the candidate: shadow runs too), errors, latency quantiles."""

    requests: int
    errors: int
    error_rate: float | None
    p50_ms: float | None
    p99_ms: float | None


@dataclass(frozen=True)
class Rollout:
    """`GET /v1/models/{m}/rollout` (and the answer of starting, promoting or aborting one).

    `state` is `evaluating` (scored on its dataset before any traffic), `running`, `promoted` or `aborted`;
    `reason` says why it ended; `promoted_as` is the version the promotion made current. `gates` holds each gate's
    live state while it runs (empty once it ended, or without gates: the spec's bounds are in `spec["gates"]`);
    `evidence` is the server's whole evidence (per role, per output, shadow runs, evaluation).
    """

    model: str
    id: str
    candidate: int
    baseline: int
    state: RolloutState
    spec: dict[str, Any]
    started_at: float
    ended_at: float | None
    reason: str | None
    promoted_as: int | None
    evidence: dict[str, Any] | None
    evaluation: dict[str, Any] | None
    gates: dict[str, GateState]
    raw: dict[str, Any] = field(repr=False)

    @property
    def running(self) -> bool:
        """Still deciding: evaluating or running (the candidate takes traffic only while `running`)."""
        return self.state in ACTIVE_STATES

    @property
    def roles(self) -> dict[str, RoleStats]:
        """`current` and `candidate`: requests, errors and latency of each side (empty before any evidence)."""
        roles = (self.evidence or {}).get("roles") or {}
        return {
            name: RoleStats(
                requests=int(r.get("requests", 0)),
                errors=int(r.get("errors", 0)),
                error_rate=r.get("error_rate"),
                p50_ms=r.get("p50_ms"),
                p99_ms=r.get("p99_ms"),
            )
            for name, r in roles.items()
        }

    @property
    def agreement(self) -> float | None:
        """The lowest agreement over the outputs on shadowed requests (None before any comparison)."""
        outputs = (self.evidence or {}).get("outputs") or []
        measured = [o["agreement"] for o in outputs if o.get("agreement") is not None]
        return min(measured) if measured else None

    @classmethod
    def from_json(cls, model: str, body: Mapping[str, Any]) -> Rollout:
        gates = {
            name: GateState(name, g["bound"], g.get("value"), g.get("ok"), g.get("rule"))
            for name, g in (body.get("gates") or {}).items()
        }
        return cls(
            model=model,
            id=str(body["id"]),
            candidate=int(body["candidate"]),
            baseline=int(body["baseline"]),
            state=cast(RolloutState, body["state"]),
            spec=dict(body.get("spec") or {}),
            started_at=float(body["started_at"]),
            ended_at=body.get("ended_at"),
            reason=body.get("reason"),
            promoted_as=body.get("promoted_as"),
            evidence=body.get("evidence"),
            evaluation=body.get("evaluation"),
            gates=gates,
            raw=dict(body),
        )


@dataclass(frozen=True)
class Dataset:
    """A model's labelled dataset: `inputs` maps each input name to `[datatype, shape]`; `kind` is `labels` (class
    indices; `classes` is the output's class count) or `targets` (float, shaped like the first output)."""

    name: str
    rows: int
    bytes: int
    inputs: dict[str, list[Any]]
    kind: Literal["labels", "targets"]
    classes: int | None
    updated_at: float

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Dataset:
        return cls(
            name=str(body["name"]),
            rows=int(body["rows"]),
            bytes=int(body["bytes"]),
            inputs=dict(body["inputs"]),
            kind=cast(Literal["labels", "targets"], body["kind"]),
            classes=body.get("classes"),
            updated_at=float(body["updated_at"]),
        )


def _rollout_body(
    candidate: int,
    shadow: float,
    canary: float,
    sticky_header: str | None,
    gates: Mapping[str, Any] | None,
    eval_dataset: str | None,
) -> dict[str, Any]:
    """The `PUT .../rollout` body. Fractions and gates are checked by the server (422 naming the field), not here,
    so that the client and the API refuse the same things in the same words."""
    body: dict[str, Any] = {"candidate": candidate, "shadow": shadow, "canary": canary}
    if sticky_header is not None:
        body["sticky_header"] = sticky_header
    if gates is not None:
        body["gates"] = dict(gates)
    if eval_dataset is not None:
        body["eval_dataset"] = eval_dataset
    return body

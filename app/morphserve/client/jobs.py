"""Fit jobs and feedback on the client side: the typed answers of their routes, and the bodies sent to them.

A job's record is what `GET /v1/models/{m}/jobs/{id}` answers: its spec, state and progress, and once it ended its
training record (the loss curve, the eval scores before and after, the staged version it committed). `Job` types
the fields a caller branches on and keeps the whole answer in `raw`, as `Rollout` does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

#: A job's states; only `running` is not final.
JobState = Literal["running", "succeeded", "failed", "cancelled"]
Loss = Literal["cross_entropy", "mse", "bce"]
Optimizer = Literal["adamw", "sgd"]


@dataclass(frozen=True)
class Job:
    """A fit job (`GET /v1/models/{m}/jobs/{id}`, and the answer of starting or cancelling one).

    `state` is `running`, `succeeded`, `failed` (`error` says why: a bad step, a limit, the server that ran it
    stopped) or `cancelled`. `train` are the node ids it trains, `step` of `steps` its progress and `loss` the last
    step's loss. `version` is the **staged** version it committed (succeeded jobs only; promote it or start a
    rollout on it), from `base_version`. `loss_curve` holds every `loss_curve_stride`-th step's loss (and the last),
    at most about 500 points; `eval_before`/`eval_after` score the base and the trained version on the spec's `eval`
    dataset (`{"version", "dataset", "rows", "accuracy" | "mse"}`), `eval_curve` every `eval_every` steps.
    """

    model: str
    id: str
    state: JobState
    spec: dict[str, Any]
    base_version: int
    version: int | None
    train: list[str]
    steps: int
    step: int
    loss: float | None
    loss_curve: list[float]
    loss_curve_stride: int
    eval_before: dict[str, Any] | None
    eval_after: dict[str, Any] | None
    eval_curve: list[dict[str, Any]]
    seed: int
    started_at: float
    ended_at: float | None
    seconds: float
    error: str | None
    replica: str | None
    raw: dict[str, Any] = field(repr=False)

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def progress(self) -> float:
        """The share of its steps done (0-1)."""
        return self.step / self.steps if self.steps else 1.0

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Job:
        return cls(
            model=str(body["model"]),
            id=str(body["id"]),
            state=cast(JobState, body["state"]),
            spec=dict(body.get("spec") or {}),
            base_version=int(body["base_version"]),
            version=body.get("version"),
            train=list(body.get("train") or []),
            steps=int(body["steps"]),
            step=int(body.get("step") or 0),
            loss=body.get("loss"),
            loss_curve=list(body.get("loss_curve") or []),
            loss_curve_stride=int(body.get("loss_curve_stride") or 1),
            eval_before=body.get("eval_before"),
            eval_after=body.get("eval_after"),
            eval_curve=list(body.get("eval_curve") or []),
            seed=int(body.get("seed") or 0),
            started_at=float(body["started_at"]),
            ended_at=body.get("ended_at"),
            seconds=float(body.get("seconds") or 0.0),
            error=body.get("error"),
            replica=body.get("replica"),
            raw=dict(body),
        )


@dataclass(frozen=True)
class FeedbackResult:
    """What a feedback call did to its dataset: `rows` it holds now, requests `added`, and the request ids the server
    no longer (or never) held in its feedback window (`missing`: their labels were not used)."""

    dataset: str
    rows: int
    added: int
    missing: list[str]

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> FeedbackResult:
        return cls(str(body["name"]), int(body["rows"]), int(body["added"]), [str(m) for m in body["missing"]])


def _fit_body(
    train: str | Sequence[str],
    dataset: str,
    *,
    loss: str,
    optimizer: str,
    lr: float,
    steps: int | None,
    epochs: float | None,
    batch_size: int,
    eval: str | None,
    eval_every: int | None,
    seed: int,
    version: int | None,
    weight_decay: float,
    momentum: float,
) -> dict[str, Any]:
    """The `POST .../fit` body. A string `train` is a prefix of node ids or module paths, a list names node ids.
    Bounds (steps or epochs, lr, batch size, eval_every without eval) are checked by the server (422 naming the
    field), not here, so that the client and the API refuse the same things in the same words."""
    body: dict[str, Any] = {
        "train": train if isinstance(train, str) else list(train),
        "dataset": dataset,
        "loss": loss,
        "optimizer": optimizer,
        "lr": lr,
        "batch_size": batch_size,
        "seed": seed,
        "weight_decay": weight_decay,
        "momentum": momentum,
    }
    optional = {"steps": steps, "epochs": epochs, "eval": eval, "eval_every": eval_every, "version": version}
    for k, v in optional.items():
        if v is not None:
            body[k] = v
    return body


def _feedback_body(dataset: str, labels: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """Labels by request id; numpy scalars and arrays (a class index from `argmax`, a row of targets) become JSON."""
    return {"dataset": dataset, "kind": kind, "labels": {str(k): _plain(v) for k, v in labels.items()}}


def _plain(v: Any) -> Any:
    if hasattr(v, "tolist"):  # numpy (and torch) scalars and arrays
        return v.tolist()
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return v

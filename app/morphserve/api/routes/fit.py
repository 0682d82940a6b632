"""Fit jobs and feedback: train chosen layers in the server, label earlier requests.

🔒 `POST /v1/models/{m}/fit` starts a job (one per model), `GET .../jobs` and `GET .../jobs/{id}` read them with
their progress and records, 🔒 `DELETE .../jobs/{id}` cancels one. 🔒 `POST .../feedback` labels requests the
server still holds (`--feedback-window`) by their request id (the `X-Request-Id` of their answer) into a dataset.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field

from morphserve.api.deps import AdminDep, RegistryDep
from morphserve.api.errors import ERROR_RESPONSES
from morphserve.api.fastjson import JSONRoute
from morphserve.serving.datasets import NAME_PATTERN
from morphserve.serving.fit import FitSpec

router = APIRouter(prefix="/v1/models", tags=["fit jobs"], responses=ERROR_RESPONSES, route_class=JSONRoute)
JobId = Annotated[str, Path(pattern=r"^[0-9]{1,12}-[0-9a-f]{8}$", description="the job's id")]


class JobRecord(BaseModel):
    """A fit job: its spec, state (running, succeeded, failed, cancelled), progress, and training record: the
    loss curve, the eval score before and after (and every `eval_every` steps), the seed, the time taken, and the
    staged version it committed."""

    id: str
    model: str
    spec: FitSpec
    state: str
    base_version: int
    version: int | None = Field(None, description="the staged version the job committed")
    train: list[str]
    steps: int
    step: int
    loss: float | None = None
    loss_curve: list[float]
    loss_curve_stride: int = Field(1, description="loss_curve holds every Nth step's loss (and the last)")
    eval_before: dict[str, Any] | None = None
    eval_after: dict[str, Any] | None = None
    eval_curve: list[dict[str, Any]] = Field(default_factory=list)
    seed: int
    started_at: float
    ended_at: float | None = None
    seconds: float
    error: str | None = None
    replica: str | None = None


class JobList(BaseModel):
    model: str
    jobs: list[JobRecord]


class Feedback(BaseModel):
    """Labels for earlier requests, by request id: a class index per row (a number for a one-row request, else a
    list), or `targets` (a nested list shaped like the output's rows)."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(pattern=NAME_PATTERN, description="the dataset the labelled requests join")
    kind: Literal["labels", "targets"] = "labels"
    labels: dict[Annotated[str, Field(max_length=64)], Any] = Field(min_length=1, max_length=100_000)


class FeedbackResult(BaseModel):
    name: str
    rows: int
    added: int = Field(description="requests added to the dataset")
    missing: list[str] = Field(description="request ids no longer (or never) in the feedback window")


@router.post("/{model}/fit", response_model=JobRecord, status_code=201, dependencies=[AdminDep])
async def fit(model: str, spec: FitSpec, registry: RegistryDep) -> JobRecord:
    return JobRecord.model_validate(await registry.fit(model, spec))


@router.get("/{model}/jobs", response_model=JobList)
async def jobs(model: str, registry: RegistryDep) -> JobList:
    return JobList(model=model, jobs=[JobRecord.model_validate(j) for j in await registry.jobs_of(model)])


@router.get("/{model}/jobs/{job}", response_model=JobRecord)
async def job(model: str, job: JobId, registry: RegistryDep) -> JobRecord:
    return JobRecord.model_validate(await registry.job(model, job))


@router.delete("/{model}/jobs/{job}", response_model=JobRecord, dependencies=[AdminDep])
async def cancel(model: str, job: JobId, registry: RegistryDep) -> JobRecord:
    return JobRecord.model_validate(await registry.cancel_job(model, job))


@router.post("/{model}/feedback", response_model=FeedbackResult, dependencies=[AdminDep])
async def feedback(model: str, body: Feedback, registry: RegistryDep) -> FeedbackResult:
    out = await registry.give_feedback(model, body.dataset, body.labels, body.kind)
    return FeedbackResult(name=out["name"], rows=out["rows"], added=out["added"], missing=out["missing"])

"""Rollouts and datasets: stage a candidate, shadow it, canary it, gate it; the labelled data it is scored on.

`PUT /v1/models/{m}/rollout` starts one (🔒), `GET` reads it with its live evidence, `POST .../promote` and
`.../abort` end it by hand (🔒), as `DELETE` does (an abort). Datasets are safetensors bodies (🔒 to put or delete).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field

from morphserve.api.deps import AdminDep, RegistryDep
from morphserve.api.errors import ERROR_RESPONSES, ApiError
from morphserve.api.fastjson import JSONRoute
from morphserve.serving.datasets import NAME_PATTERN
from morphserve.serving.rollout import RolloutSpec

router = APIRouter(prefix="/v1/models", tags=["rollouts"], responses=ERROR_RESPONSES, route_class=JSONRoute)
DatasetName = Annotated[str, Path(pattern=NAME_PATTERN, description="the dataset's name")]


class RolloutView(BaseModel):
    """A rollout: its spec and state, and (while it runs) the evidence this replica has gathered and each gate's
    state; once it ended, why and the evidence it ended on."""

    id: str
    candidate: int
    baseline: int = Field(description="the current version when the rollout started")
    state: str = Field(description="evaluating | running | promoted | aborted")
    spec: RolloutSpec
    started_at: float
    ended_at: float | None = None
    reason: str | None = None
    evidence: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = None
    gates: dict[str, Any] | None = None
    promoted_as: int | None = Field(None, description="the version the promotion made current")
    started_by: str | None = None
    decided_by: str | None = None
    replica: str | None = Field(None, description="the replica whose evidence this is (while it runs)")


class DatasetInfo(BaseModel):
    name: str
    rows: int
    bytes: int
    inputs: dict[str, list[Any]] = Field(description="input name -> [datatype, shape]")
    kind: str = Field(description="labels (class indices) or targets")
    classes: int | None = None
    updated_at: float


class DatasetList(BaseModel):
    model: str
    datasets: list[DatasetInfo]


@router.put("/{model}/rollout", response_model=RolloutView, status_code=201, dependencies=[AdminDep])
async def start_rollout(model: str, spec: RolloutSpec, registry: RegistryDep) -> RolloutView:
    return RolloutView.model_validate(await registry.start_rollout(model, spec))


@router.get("/{model}/rollout", response_model=RolloutView)
async def rollout(model: str, registry: RegistryDep) -> RolloutView:
    return RolloutView.model_validate(await registry.rollout(model))


@router.post("/{model}/rollout/promote", response_model=RolloutView, dependencies=[AdminDep])
async def promote_rollout(model: str, registry: RegistryDep) -> RolloutView:
    return RolloutView.model_validate(await registry.end_rollout(model, "promote"))


@router.post("/{model}/rollout/abort", response_model=RolloutView, dependencies=[AdminDep])
async def abort_rollout(model: str, registry: RegistryDep) -> RolloutView:
    return RolloutView.model_validate(await registry.end_rollout(model, "abort"))


@router.delete("/{model}/rollout", response_model=RolloutView, dependencies=[AdminDep])
async def end_rollout(model: str, registry: RegistryDep) -> RolloutView:
    """Ends the running rollout without promoting it (an abort)."""
    return RolloutView.model_validate(await registry.end_rollout(model, "abort"))


_DATASET_DOC = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.put(
    "/{model}/datasets/{name}",
    response_model=DatasetInfo,
    status_code=201,
    dependencies=[AdminDep],
    openapi_extra=_DATASET_DOC,
)
async def put_dataset(model: str, name: DatasetName, request: Request, registry: RegistryDep) -> DatasetInfo:
    """A safetensors file: one tensor per model input (samples in dimension 0) and `labels` (class indices) or
    `targets` (shaped like the first output per sample). Replaces a dataset of the same name."""
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("application/octet-stream"):
        raise ApiError(
            415, f"send the dataset as a safetensors file with Content-Type application/octet-stream, got {ctype!r}"
        )
    return DatasetInfo.model_validate(await registry.put_dataset(model, name, await request.body()))


@router.get("/{model}/datasets", response_model=DatasetList)
async def datasets(model: str, registry: RegistryDep) -> DatasetList:
    found = await registry.datasets_of(model)
    return DatasetList(model=model, datasets=[DatasetInfo.model_validate(d) for d in found])


@router.delete("/{model}/datasets/{name}", status_code=204, dependencies=[AdminDep])
async def delete_dataset(model: str, name: DatasetName, registry: RegistryDep) -> None:
    await registry.delete_dataset(model, name)

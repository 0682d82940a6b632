"""Request and response models of the REST API (the OpenAPI schema is generated from these)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field

from morphserve.graph.catalogue import LayerSpec
from morphserve.graph.views import GraphDescription, GraphDiff
from morphserve.serving.registry import ModelStatus
from morphserve.serving.replication import ReplicaWait

NestedList = list[Any]
#: Version numbers are journal rows (SQLite INTEGER): bounding them here turns a 2**70 into a 422, not a 500.
MAX_VERSION = 2**63 - 1
VersionNo = Annotated[int, Field(ge=1, le=MAX_VERSION)]
#: `?min_version=N` on every inference route: read-your-writes across replicas.
MinVersion = Annotated[
    int | None,
    Query(
        ge=1,
        le=MAX_VERSION,
        description="wait (bounded by --min-version-wait-ms) "
        "until this replica serves at least this version; 503 naming the one it has "
        "after that",
    ),
]
IfVersion = Annotated[
    int | None,
    Field(ge=0, le=MAX_VERSION, description="the version the edit is based on (409 if the model has moved on)"),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- OIP v2 -----------------------------------------------------------------------------------------------
class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class LiveResponse(BaseModel):
    live: bool


class ReadyResponse(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class OIPTensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[OIPTensorMetadata]
    outputs: list[OIPTensorMetadata]


OIP_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "inputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "shape", "datatype"],
                "properties": {
                    "name": {"type": "string"},
                    "shape": {"type": "array", "items": {"type": "integer"}},
                    "datatype": {"type": "string"},
                    "parameters": {"type": "object"},
                    "data": {"type": "array"},
                },
            },
        },
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
            },
        },
    },
}


class OIPOutput(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class OIPInferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[OIPOutput]


# -- /v1 ---------------------------------------------------------------------------------------------------
class V1InferRequest(_Strict):
    """`inputs` is a nested list (single-input models) or an object of nested lists by input name."""

    inputs: NestedList | dict[str, NestedList]


class V1InferResponse(BaseModel):
    model: str
    model_version: int
    outputs: NestedList | dict[str, NestedList] = Field(
        description="a nested list for single-output models, else an object by output name"
    )


class ModelInfo(ModelStatus):
    """A served model: its current version, signature, resident versions and queue."""


class ModelList(BaseModel):
    models: list[ModelInfo]


class CreateModel(_Strict):
    """Exactly one of `zoo` (a built-in model name, with `options`) or `spec` (an architecture spec)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    zoo: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    spec: dict[str, Any] | None = None
    dtype: Literal["FP32", "FP16", "BF16"] | None = Field(
        None, description="compute datatype (FP16/BF16 halve the memory; inputs and outputs stay as the spec says)"
    )
    compile: Literal["off", "default", "max-autotune"] | None = Field(
        None, description="this model's --compile mode (journalled with it; default: the server's)"
    )


class Deleted(BaseModel):
    deleted: str


class VersionInfo(BaseModel):
    version: int
    parent: int | None
    created_at: float
    ops: list[dict[str, Any]]
    resident: bool
    pinned: bool = False
    staged: bool = Field(False, description="committed with `stage: true` (current only once promoted)")
    evaluations: list[dict[str, Any]] = Field(
        default_factory=list, description="scores on datasets (a rollout's evaluation gate records them)"
    )


class GcRequest(_Strict):
    keep: Annotated[int, Field(ge=1, le=MAX_VERSION)]


class GcResponse(BaseModel):
    model: str
    removed_versions: list[int]
    removed_blobs: int


class PinResponse(BaseModel):
    model: str
    version: int
    pinned: bool


class VersionList(BaseModel):
    model: str
    current: int
    versions: list[VersionInfo]


class EditRequest(_Strict):
    ops: Annotated[list[dict[str, Any]], Field(min_length=1, max_length=256)]
    if_version: IfVersion = None
    dry_run: bool = False
    allow_output_change: bool = False
    stage: bool = Field(
        False,
        description="commit the version without making it current: it serves requests that name it until "
        "promoted (POST .../versions/{v}/promote) or rolled out (PUT .../rollout)",
    )


class InsertLayer(_Strict):
    after: str | None = None
    before: str | None = None
    name: str | None = None
    layer: LayerSpec
    init: Literal["default", "identity"] = "default"
    seed: Annotated[int, Field(ge=0, le=2**63 - 1)] = 0
    if_version: IfVersion = None
    allow_output_change: bool = False
    stage: bool = Field(
        False,
        description="commit the version without making it current: it serves requests that name it until "
        "promoted (POST .../versions/{v}/promote) or rolled out (PUT .../rollout)",
    )


class ReplaceLayer(_Strict):
    layer: LayerSpec
    keep_weights: bool = False
    seed: Annotated[int, Field(ge=0, le=2**63 - 1)] = 0
    if_version: IfVersion = None
    allow_output_change: bool = False
    stage: bool = Field(
        False,
        description="commit the version without making it current: it serves requests that name it until "
        "promoted (POST .../versions/{v}/promote) or rolled out (PUT .../rollout)",
    )


class Rollback(_Strict):
    version: VersionNo
    if_version: IfVersion = None
    stage: bool = Field(
        False,
        description="commit the version without making it current: it serves requests that name it until "
        "promoted (POST .../versions/{v}/promote) or rolled out (PUT .../rollout)",
    )


class Timings(BaseModel):
    validate_: float = Field(alias="validate")
    build: float
    persist: float = Field(0.0, description="writing blobs and the journal row (fsync included)")
    swap: float
    total: float

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class EditResponse(BaseModel):
    model: str
    version: int
    previous_version: int
    dry_run: bool
    diff: GraphDiff
    timings_ms: Timings
    live_at: float | None = Field(
        None,
        description="when this replica began serving the version: UNIX time in seconds (null for dry runs); "
        "the next batch after it runs the new version",
    )
    graph: GraphDescription | None = Field(None, description="the would-be graph, for dry runs")
    staged: bool = Field(False, description="committed without becoming current (`stage: true`)")
    replicas: ReplicaWait | None = Field(None, description="with ?wait=: which replicas have the version live")

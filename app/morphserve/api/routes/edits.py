"""Live edits (bearer token): the general `edits` route, the layer sugar over it, weights upload, rollback.

Every edit route takes `?wait=all|N` (and `wait_timeout_s`): answer once all alive replicas (or N of them) have the
new version live; the answer's `replicas` says which have. Without it, an edit answers once the replica that took it
serves the version (read-your-writes elsewhere: `?min_version=` on inference).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request

from morphserve.api.deps import AdminDep, RegistryDep
from morphserve.api.errors import ERROR_RESPONSES, ApiError
from morphserve.api.fastjson import JSONRoute
from morphserve.api.schemas import EditRequest, EditResponse, InsertLayer, ReplaceLayer, Rollback, Timings
from morphserve.graph.views import describe
from morphserve.serving.pipeline import EditOutcome
from morphserve.serving.registry import Registry

router = APIRouter(
    prefix="/v1/models", tags=["edits"], dependencies=[AdminDep], responses=ERROR_RESPONSES, route_class=JSONRoute
)
IfMatch = Annotated[str | None, Header(description="the version the edit is based on; same as if_version")]


@dataclass(frozen=True)
class Wait:
    wanted: str | None
    timeout_s: float


async def _wait(
    wait: Annotated[
        str | None,
        Query(
            pattern=r"^(all|[1-9][0-9]{0,3})$",
            description="answer once all alive replicas, or this many, serve the version",
        ),
    ] = None,
    wait_timeout_s: Annotated[float, Query(gt=0, le=120, description="the longest ?wait= waits")] = 10.0,
) -> Wait:
    return Wait(wait, wait_timeout_s)


WaitDep = Annotated[Wait, Depends(_wait)]


def _if_version(body_value: int | None, if_match: str | None) -> int | None:
    if if_match is None or if_match.strip() == "*":
        return body_value
    tag = if_match.strip().removeprefix("W/").strip('"')
    if not tag.isdigit() or len(tag) > 18:
        raise ApiError(400, "If-Match must name a version number, e.g. '\"3\"'")
    if body_value is not None and body_value != int(tag):
        raise ApiError(400, f"If-Match ({tag}) and if_version ({body_value}) disagree")
    return int(tag)


async def _response(registry: Registry, o: EditOutcome, wait: Wait) -> EditResponse:
    graph = await registry.run(describe, o.version) if o.dry_run else None
    replicas = None
    if wait.wanted is not None and not o.dry_run:
        replicas = await registry.wait_replicas(o.model, o.version.version, wait.wanted, wait.timeout_s)
    return EditResponse(
        model=o.model,
        version=o.version.version,
        previous_version=o.previous.version,
        dry_run=o.dry_run,
        diff=o.diff,
        timings_ms=Timings(**o.timings_ms),
        live_at=o.live_at,
        graph=graph,
        replicas=replicas,
        staged=o.staged,
    )


async def _edit(
    registry: Registry,
    model: str,
    ops: list[dict[str, Any]],
    wait: Wait,
    *,
    if_version: int | None,
    dry_run: bool = False,
    allow_output_change: bool = False,
    stage: bool = False,
) -> EditResponse:
    outcome = await registry.edit(
        model, ops, if_version=if_version, dry_run=dry_run, allow_output_change=allow_output_change, stage=stage
    )
    return await _response(registry, outcome, wait)


@router.post("/{model}/edits", response_model=EditResponse)
async def edit(
    model: str, body: EditRequest, registry: RegistryDep, wait: WaitDep, if_match: IfMatch = None
) -> EditResponse:
    return await _edit(
        registry,
        model,
        body.ops,
        wait,
        if_version=_if_version(body.if_version, if_match),
        dry_run=body.dry_run,
        allow_output_change=body.allow_output_change,
        stage=body.stage,
    )


@router.post("/{model}/layers", response_model=EditResponse)
async def insert_layer(
    model: str, body: InsertLayer, registry: RegistryDep, wait: WaitDep, if_match: IfMatch = None
) -> EditResponse:
    op = {
        "op": "insert",
        **body.model_dump(mode="json", exclude={"if_version", "allow_output_change", "stage"}, exclude_none=True),
    }
    return await _edit(
        registry,
        model,
        [op],
        wait,
        if_version=_if_version(body.if_version, if_match),
        allow_output_change=body.allow_output_change,
        stage=body.stage,
    )


@router.put("/{model}/layers/{node}", response_model=EditResponse)
async def replace_layer(
    model: str, node: str, body: ReplaceLayer, registry: RegistryDep, wait: WaitDep, if_match: IfMatch = None
) -> EditResponse:
    fields = body.model_dump(mode="json", exclude={"if_version", "allow_output_change", "stage"})
    op = {"op": "replace", "node": node, **fields}
    return await _edit(
        registry,
        model,
        [op],
        wait,
        if_version=_if_version(body.if_version, if_match),
        allow_output_change=body.allow_output_change,
        stage=body.stage,
    )


@router.delete("/{model}/layers/{node}", response_model=EditResponse)
async def remove_layer(
    model: str,
    node: str,
    registry: RegistryDep,
    wait: WaitDep,
    if_match: IfMatch = None,
    allow_output_change: bool = False,
    stage: Annotated[bool, Query(description="commit without making the version current")] = False,
) -> EditResponse:
    return await _edit(
        registry,
        model,
        [{"op": "remove", "node": node}],
        wait,
        if_version=_if_version(None, if_match),
        allow_output_change=allow_output_change,
        stage=stage,
    )


_WEIGHTS_DOC = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.put("/{model}/layers/{node}/weights", response_model=EditResponse, openapi_extra=_WEIGHTS_DOC)
async def upload_weights(
    model: str,
    node: str,
    request: Request,
    registry: RegistryDep,
    wait: WaitDep,
    if_match: IfMatch = None,
    stage: Annotated[bool, Query(description="commit without making the version current")] = False,
) -> EditResponse:
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("application/octet-stream"):
        raise ApiError(
            415,
            f"send the weights as a safetensors file with Content-Type application/octet-stream, "
            f"got {ctype or 'none'!r}",
        )
    outcome = await registry.upload_weights(
        model, node, await request.body(), if_version=_if_version(None, if_match), stage=stage
    )
    return await _response(registry, outcome, wait)


@router.post("/{model}/rollback", response_model=EditResponse)
async def rollback(
    model: str, body: Rollback, registry: RegistryDep, wait: WaitDep, if_match: IfMatch = None
) -> EditResponse:
    outcome = await registry.rollback(
        model, body.version, if_version=_if_version(body.if_version, if_match), stage=body.stage
    )
    return await _response(registry, outcome, wait)


@router.post("/{model}/versions/{version}/promote", response_model=EditResponse)
async def promote(
    model: str, version: Annotated[int, Path(ge=1, le=2**63 - 1)], registry: RegistryDep, wait: WaitDep
) -> EditResponse:
    """Make a committed version (a staged one) the current one: a swap between two batches, like any edit's. A
    version older than the current one comes back as a new version equal to it (current versions only move
    forward, so that `?min_version=` keeps its meaning)."""
    outcome = await registry.promote(model, version)
    return await _response(registry, outcome, wait)

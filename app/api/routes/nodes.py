"""One node up close: its weights' statistics at a version, and the versions that changed it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from app.api.deps import RegistryDep
from app.api.errors import ERROR_RESPONSES
from app.api.schemas import MAX_VERSION
from app.graph.stats import (
    NodeHistory,
    NodeWeights,
    node_history,
    node_weights,
    spec_fingerprints,
    version_fingerprints,
)
from app.serving.registry import Registry

router = APIRouter(prefix="/v1/models", tags=["models and graphs"], responses=ERROR_RESPONSES)


@router.get("/{model}/nodes/{node}/weights", response_model=NodeWeights)
async def weights(model: str, node: str, registry: RegistryDep,
                  version: Annotated[int | None, Query(ge=1, le=MAX_VERSION)] = None) -> NodeWeights:  # fmt: skip
    """Per tensor of the node (parameters, then buffers): shape, dtype, numel, mean, std, min, max."""
    v = await run_in_threadpool(registry.version, model, version)
    return await run_in_threadpool(node_weights, v, node)


def _history(registry: Registry, model: str, node: str) -> NodeHistory:
    records = registry.history(model)
    if all(r.spec for r in records):  # durable: compare journal rows (specs and blob digests), nothing loaded
        rows = [(r.version, r.parent, r.created_at, r.ops, spec_fingerprints(r.spec, r.blobs)) for r in records]
    else:  # no usable state dir: the versions are in memory
        versions = [registry.version(model, r.version) for r in records]
        rows = [(v.version, v.parent, v.created_at, v.ops, version_fingerprints(v)) for v in versions]
    return node_history(model, node, rows)


@router.get("/{model}/nodes/{node}/versions", response_model=NodeHistory)
async def versions(model: str, node: str, registry: RegistryDep) -> NodeHistory:
    """The versions that added, changed (layer, function, inputs or weights) or removed the node."""
    return await run_in_threadpool(_history, registry, model, node)

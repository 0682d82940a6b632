"""One node up close: its weights' statistics at a version, and the versions that changed it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from morphserve.api.deps import RegistryDep
from morphserve.api.errors import ERROR_RESPONSES
from morphserve.api.fastjson import JSONRoute
from morphserve.api.schemas import MAX_VERSION
from morphserve.graph.stats import NodeHistory, NodeWeights, node_history, node_weights, spec_fingerprints

router = APIRouter(prefix="/v1/models", tags=["models and graphs"], responses=ERROR_RESPONSES, route_class=JSONRoute)


@router.get("/{model}/nodes/{node}/weights", response_model=NodeWeights)
async def weights(
    model: str, node: str, registry: RegistryDep, version: Annotated[int | None, Query(ge=1, le=MAX_VERSION)] = None
) -> NodeWeights:
    """Per tensor of the node (parameters, then buffers): shape, dtype, numel, mean, std, min, max."""
    v = await registry.version(model, version)
    stats: NodeWeights = await registry.run(node_weights, v, node)
    return stats


@router.get("/{model}/nodes/{node}/versions", response_model=NodeHistory)
async def versions(model: str, node: str, registry: RegistryDep) -> NodeHistory:
    """The versions that added, changed (layer, function, inputs or weights) or removed the node, from the journal
    rows (their specs and blob digests): nothing is loaded."""
    records = await registry.history(model)
    rows = [(r.version, r.parent, r.created_at, r.ops, spec_fingerprints(r.spec, r.blobs)) for r in records]
    history: NodeHistory = await registry.run(node_history, model, node, rows)
    return history

"""`GET /v1/replicas`: every replica that follows this server's journal, what it serves and how far behind it is."""

from __future__ import annotations

from fastapi import APIRouter

from morphserve.api.deps import RegistryDep
from morphserve.api.errors import ERROR_RESPONSES
from morphserve.api.fastjson import JSONRoute
from morphserve.serving.replication import ReplicasView

router = APIRouter(prefix="/v1", tags=["replicas"], responses=ERROR_RESPONSES, route_class=JSONRoute)


@router.get("/replicas", response_model=ReplicasView)
async def replicas(registry: RegistryDep) -> ReplicasView:
    """Open like the other read routes. While the journal is down this replica lists itself, with `journal.up`
    false and the reason."""
    return await registry.replicas()

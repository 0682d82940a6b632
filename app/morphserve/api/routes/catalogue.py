"""The layer catalogue as JSON schema, so that clients (the web page's edit forms) are generated, not hand-kept."""

from __future__ import annotations

import functools
from typing import Any

from fastapi import APIRouter
from pydantic import TypeAdapter

from morphserve.api.fastjson import JSONRoute
from morphserve.graph.catalogue import LayerSpec

router = APIRouter(prefix="/v1", tags=["catalogue"], route_class=JSONRoute)


@functools.cache
def _schema() -> dict[str, Any]:
    return TypeAdapter(LayerSpec).json_schema()


@router.get("/catalogue", response_model=dict[str, Any])
def catalogue() -> dict[str, Any]:
    """The JSON schema of a layer spec: a `oneOf` over the layer types, discriminated by `type`, one `$defs`
    entry per type with its arguments, their bounds and defaults."""
    return _schema()

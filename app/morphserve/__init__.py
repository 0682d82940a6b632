"""morphserve: a model server whose PyTorch models can be inspected and edited live, as torch.fx graphs.

The names users import from their own code are here, loaded on first use: `from morphserve import Client` must not
import torch or the server (the client runs where neither is installed). The capture is imported by its own path
(`from morphserve.capture import capture`): a top-level `capture` would be shadowed by the subpackage of that name.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "Client": "morphserve.client",
    "AsyncClient": "morphserve.client",
    "MorphserveError": "morphserve.client",
}

__all__ = ["AsyncClient", "Client", "MorphserveError", "__version__"]

if TYPE_CHECKING:
    from morphserve.client import AsyncClient, Client, MorphserveError


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'morphserve' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

"""The live model graph: models as editable torch.fx graphs with immutable, numbered versions.

Pure PyTorch + torch.fx: no HTTP, no threads, nothing imported from the rest of `app`. Names are exported lazily
so that the torch-free parts (`datatypes`, `arrays`) can be imported by clients without loading torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "from_spec": "bundle",
    "read_bundle": "bundle",
    "spec_json": "bundle",
    "weights_bytes": "bundle",
    "LAYER_TYPES": "catalogue",
    "LayerSpec": "catalogue",
    "parse_layer": "catalogue",
    "GraphDescription": "views",
    "GraphDiff": "views",
    "describe": "views",
    "diff": "views",
    "to_dot": "views",
    "to_svg": "views",
    "InsertOp": "edits",
    "Op": "edits",
    "RemoveOp": "edits",
    "ReplaceOp": "edits",
    "SetWeightsOp": "edits",
    "apply_edit": "edits",
    "parse_ops": "edits",
    "EditError": "errors",
    "GraphError": "errors",
    "NotFoundError": "errors",
    "SpecError": "errors",
    "ConflictError": "live",
    "LiveModel": "live",
    "ModelSpec": "spec",
    "TensorSpec": "spec",
    "parse_spec": "spec",
    "from_module": "trace",
    "ModelVersion": "version",
    "ZOO": "zoo",
    "load_zoo": "zoo",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'morphserve.graph' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from .bundle import from_spec, read_bundle, spec_json, weights_bytes  # noqa: F401
    from .catalogue import LAYER_TYPES, LayerSpec, parse_layer  # noqa: F401
    from .edits import InsertOp, Op, RemoveOp, ReplaceOp, SetWeightsOp, apply_edit, parse_ops  # noqa: F401
    from .errors import EditError, GraphError, NotFoundError, SpecError  # noqa: F401
    from .live import ConflictError, LiveModel  # noqa: F401
    from .spec import ModelSpec, TensorSpec, parse_spec  # noqa: F401
    from .trace import from_module  # noqa: F401
    from .version import ModelVersion  # noqa: F401
    from .views import GraphDescription, GraphDiff, describe, diff, to_dot, to_svg  # noqa: F401
    from .zoo import ZOO, load_zoo  # noqa: F401

"""The live model graph: models as editable torch.fx graphs with immutable, numbered versions.

Pure PyTorch + torch.fx: no HTTP, no threads, nothing imported from the rest of `morphserve`. Names are exported lazily
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
# Literal, so that type checkers see the lazy names as exported (tests/unit/test_imports.py keeps it equal to
# _EXPORTS).
__all__ = [
    "ConflictError",
    "EditError",
    "GraphDescription",
    "GraphDiff",
    "GraphError",
    "InsertOp",
    "LAYER_TYPES",
    "LayerSpec",
    "LiveModel",
    "ModelSpec",
    "ModelVersion",
    "NotFoundError",
    "Op",
    "RemoveOp",
    "ReplaceOp",
    "SetWeightsOp",
    "SpecError",
    "TensorSpec",
    "ZOO",
    "apply_edit",
    "describe",
    "diff",
    "from_module",
    "from_spec",
    "load_zoo",
    "parse_layer",
    "parse_ops",
    "parse_spec",
    "read_bundle",
    "spec_json",
    "to_dot",
    "to_svg",
    "weights_bytes",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'morphserve.graph' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from .bundle import from_spec, read_bundle, spec_json, weights_bytes
    from .catalogue import LAYER_TYPES, LayerSpec, parse_layer
    from .edits import InsertOp, Op, RemoveOp, ReplaceOp, SetWeightsOp, apply_edit, parse_ops
    from .errors import EditError, GraphError, NotFoundError, SpecError
    from .live import ConflictError, LiveModel
    from .spec import ModelSpec, TensorSpec, parse_spec
    from .trace import from_module
    from .version import ModelVersion
    from .views import GraphDescription, GraphDiff, describe, diff, to_dot, to_svg
    from .zoo import ZOO, load_zoo

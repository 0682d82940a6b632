"""The live model graph: models as editable torch.fx graphs with immutable, numbered versions.

Pure PyTorch + torch.fx: no HTTP, no threads, nothing imported from the rest of `app`.
"""

from .bundle import from_spec, read_bundle, spec_json, weights_bytes
from .catalogue import LAYER_TYPES, LayerSpec, parse_layer
from .describe import GraphDescription, GraphDiff, describe, diff, to_dot, to_svg
from .edits import InsertOp, Op, RemoveOp, ReplaceOp, SetWeightsOp, apply_edit, parse_ops
from .errors import EditError, GraphError, NotFoundError, SpecError
from .live import ConflictError, LiveModel
from .spec import ModelSpec, TensorSpec, parse_spec
from .trace import from_module
from .version import ModelVersion
from .zoo import ZOO, load_zoo

__all__ = [
    "LAYER_TYPES", "ZOO", "ConflictError", "EditError", "GraphDescription", "GraphDiff", "GraphError", "InsertOp",
    "LayerSpec", "LiveModel", "ModelSpec", "ModelVersion", "NotFoundError", "Op", "RemoveOp", "ReplaceOp",
    "SetWeightsOp", "SpecError", "TensorSpec", "apply_edit", "describe", "diff", "from_module", "from_spec",
    "load_zoo", "parse_layer", "parse_ops", "parse_spec", "read_bundle", "spec_json", "to_dot", "to_svg",
    "weights_bytes",
]  # fmt: skip

"""Import a simple `nn.Module` by tracing it with torch.fx into a spec + modules.

This is the small in-process importer (catalogue layers joined by tensor-only functions). Real models are
captured on the client with torch.export by `morphserve.capture`, which handles what fx symbolic tracing cannot.

Leaf modules must be catalogue layers and free functions must be allowed functions, so that every model can
be exported back to a spec; anything else is a SpecError naming the node, rather than an opaque blob.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from .catalogue import MODULE_TYPES, ResidualBlock, layer_from_module
from .dtypes import TORCH_TO_OIP
from .errors import SpecError
from .functions import FUNCTIONS
from .spec import ModelSpec, parse_spec
from .version import ModelVersion, make_version

# fx call targets and tensor methods -> allowlisted function names, read off the allowlist itself.
_FUNCTIONS: dict[Any, str] = {target: f.name for f in FUNCTIONS.values() for target in f.python}
_METHODS: dict[str, str] = {method: f.name for f in FUNCTIONS.values() for method in f.methods}


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, ResidualBlock) or type(m) in MODULE_TYPES


def from_module(
    module: nn.Module, example: torch.Tensor | tuple[torch.Tensor, ...], name: str = "model"
) -> ModelVersion:
    """Version 1 of a model traced from `module`; `example` fixes the input signature (dim 0 = batch)."""
    examples = example if isinstance(example, tuple) else (example,)
    module = copy.deepcopy(module).eval()
    try:
        graph = _Tracer().trace(module)
    except Exception as e:  # noqa: BLE001 - fx raises many types for untraceable code
        raise SpecError(f"torch.fx cannot trace this module: {e}") from None
    nodes: list[dict[str, Any]] = []
    inputs: list[dict[str, Any]] = []
    outputs: list[dict[str, Any]] = []
    modules: dict[str, nn.Module] = {}
    ids: dict[fx.Node, str] = {}
    for node in graph.nodes:
        nid = node.name
        ids[node] = nid
        if node.op == "placeholder":
            ex = examples[len(inputs)]
            inputs.append({"name": nid, "datatype": TORCH_TO_OIP[ex.dtype], "shape": [-1, *ex.shape[1:]]})
        elif node.op == "call_module":
            sub = module.get_submodule(node.target)
            layer = layer_from_module(sub)
            modules[nid] = sub
            nodes.append({"id": nid, "layer": layer.to_json(), "inputs": [ids[a] for a in node.args]})
        elif node.op in ("call_function", "call_method"):
            fname = _FUNCTIONS.get(node.target) if node.op == "call_function" else _METHODS.get(node.target)
            if fname is None:
                raise SpecError(f"node {nid!r} calls {node.target}, which is not an allowed function", node=nid)
            args = list(node.args)
            if fname in ("cat", "stack"):
                args = list(args[0]) if args else []
            ins = [a for a in args if isinstance(a, fx.Node)]
            if len(ins) != len(args):
                raise SpecError(f"node {nid!r}: constant arguments to {fname} are not supported", node=nid)
            nodes.append({"id": nid, "function": fname, "inputs": [ids[a] for a in ins], "args": dict(node.kwargs)})
        elif node.op == "output":
            res = node.args[0]
            res = res if isinstance(res, tuple | list) else (res,)
            for i, r in enumerate(res):
                outputs.append({"name": "output" if len(res) == 1 else f"output_{i}", "node": ids[r]})
        else:
            raise SpecError(f"node {nid!r} ({node.op} {node.target}) cannot be expressed as a spec", node=nid)
    spec: ModelSpec = parse_spec({"name": name, "inputs": inputs, "outputs": outputs, "nodes": nodes})
    return make_version(name, 1, None, spec, modules)

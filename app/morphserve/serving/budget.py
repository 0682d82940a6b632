"""The memory budget: a model version may hold at most `--max-model-bytes` of parameters and buffers.

Every layer is bounded by the catalogue, the model is not: 26 inserted `Linear(16384, 16384)` pass validation
and then allocate 26 GiB. So creations and edits are sized first, by building each new layer on PyTorch's meta
device (shapes without storage, microseconds), and refused before any real tensor is allocated.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from morphserve.graph import ModelSpec, ModelVersion, parse_ops
from morphserve.graph.edits import InsertOp, RemoveOp, ReplaceOp
from morphserve.graph.spec import NodeSpec

from .errors import ModelTooLargeError


def module_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


@functools.lru_cache(maxsize=1024)
def _node_bytes(node_json: str) -> int:
    with torch.device("meta"):
        return module_bytes(NodeSpec.model_validate_json(node_json).build_module())


def layer_bytes(layer: Any) -> int:
    """Bytes of parameters and buffers a catalogue layer would allocate, without allocating them."""
    return _node_bytes(NodeSpec(id="sized", layer=layer, inputs=("x",)).model_dump_json())


def node_bytes(node: NodeSpec) -> int:
    """The same for any node of a spec: 0 for functions, the tensor for parameter nodes."""
    return _node_bytes(node.model_dump_json()) if node.has_module else 0


class MemoryBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit

    def _check(self, needed: int, what: str) -> None:
        if needed > self.limit:
            raise ModelTooLargeError(
                f"{what} needs {needed:,} bytes of parameters, over the limit of {self.limit:,} bytes "
                f"(--max-model-bytes)",
                needed_bytes=needed,
                limit_bytes=self.limit,
            )

    def check_spec(self, spec: ModelSpec, what: str = "the model") -> None:
        self._check(sum(node_bytes(n) for n in spec.nodes), what)

    def check_edit(self, current: ModelVersion, ops: Iterable[Any]) -> None:
        """Size the version `ops` would make of `current` (ops are validated properly later; an op this cannot
        parse is left to that validation)."""
        try:
            parsed = parse_ops(list(ops))
        except Exception:  # noqa: BLE001 - apply_edit reports invalid ops with the op index
            return
        sizes: dict[str, int] = {nid: module_bytes(m) for nid, m in current.modules.items()}
        for i, op in enumerate(parsed):
            if isinstance(op, InsertOp):
                sizes[f"\0{i}"] = layer_bytes(op.layer)
            elif isinstance(op, ReplaceOp):
                sizes[op.node] = layer_bytes(op.layer)
            elif isinstance(op, RemoveOp):
                sizes.pop(op.node, None)
        self._check(sum(sizes.values()), "the edited model")

    def check_version(self, v: ModelVersion, what: str) -> None:
        self._check(sum(module_bytes(m) for m in {id(m): m for m in v.modules.values()}.values()), what)

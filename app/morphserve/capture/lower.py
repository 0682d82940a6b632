"""Lower an exported program to the vocabulary: Core ATen, plus the few composites kept whole.

`run_decompositions()` with PyTorch's default table leaves a handful of operators that are neither core nor
decomposed (`linalg_vector_norm` from `F.normalize`, `_weight_norm_interface` from weight norm): for those the
decomposition PyTorch registers is added to the table and the program lowered again, until nothing but the
vocabulary is left (or what is left has no decomposition, which the walk refuses by name). Scaled dot-product
attention is kept whole (opset.KEPT): its decomposition is slower, and PyTorch's own reshape of the math result
fails on layouts that models produce (GPT-2's attention output).
"""

from __future__ import annotations

from typing import Any

import torch
from torch._decomp import decomposition_table
from torch.export import ExportedProgram

from morphserve.graph.functions import OPSET

_ROUNDS = 4


def _table() -> Any:
    table = torch.export.default_decompositions()
    for name in ("scaled_dot_product_attention",):
        op = getattr(torch.ops.aten, name).default
        if op in table:
            del table[op]
    return table


def _leftovers(ep: ExportedProgram) -> set[torch._ops.OpOverload]:
    out = set()
    for n in ep.graph.nodes:
        t = n.target
        if n.op == "call_function" and isinstance(t, torch._ops.OpOverload) and t.namespace == "aten":
            name = f"aten.{t._overloadpacket.__name__}.{t._overloadname}"
            if name not in OPSET:
                out.add(t)
    return out


def lower(ep: ExportedProgram) -> ExportedProgram:
    """The program in Core ATen (and the kept composites); operators with no decomposition stay, for the walk to
    refuse by name."""
    table = _table()
    lowered: ExportedProgram = ep.run_decompositions(table)
    for _ in range(_ROUNDS):
        extra = {op for op in _leftovers(lowered) if op in decomposition_table and op not in table}
        if not extra:
            break
        for op in extra:
            table[op] = decomposition_table[op]
        lowered = ep.run_decompositions(table)
    return lowered

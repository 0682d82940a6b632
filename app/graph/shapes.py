"""Shape propagation on fake tensors: what each node produces, without running real compute.

Each node is evaluated twice under `FakeTensorMode`, with two different sizes for every variable dimension
(batch 2 and 3, other dims 32 and 40); a dimension that differs between the probes is variable (-1). Results
are cached by (module identity, input probes): a new version re-propagates only the nodes whose module or
input shapes changed, so validating an edit costs O(changed nodes), not O(graph).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from .dtypes import OIP_TO_TORCH, TORCH_TO_OIP
from .errors import SpecError, short_message
from .spec import FUNCTIONS, ModelSpec, NodeSpec

# FakeTensorMode logs every failing meta kernel at ERROR level; a shape mismatch is an expected outcome here.
logging.getLogger("torch._subclasses.fake_tensor").setLevel(logging.CRITICAL)

Probe = tuple[tuple[int, ...], tuple[int, ...]]
#: What the journal saves per node: both probes and the OIP datatype.
RecordedShape = tuple[list[int], list[int], str]
_PROBE_SIZES = ((2, 32), (3, 40))  # (batch, other variable dims) for the two probes


@dataclass(frozen=True)
class NodeShape:
    """The shape (with -1 for variable dims) and OIP datatype of one node's output, and the raw probes."""

    shape: tuple[int, ...]
    datatype: str
    probe: Probe
    key: tuple[object, ...]  # what the result depends on: module identity / function + input probes


class ShapeError(SpecError):
    """A node cannot run on the shapes it receives."""


def _merge(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(x if x == y else -1 for x, y in zip(a, b, strict=True))


def _node_key(node: NodeSpec, module: nn.Module | None, ins: list[NodeShape]) -> tuple[object, ...]:
    ident: object = id(module) if module is not None else (node.function, tuple(sorted(node.args.items())))
    return (ident, tuple((s.probe, s.datatype) for s in ins))


def propagate(
    spec: ModelSpec,
    modules: Mapping[str, nn.Module],
    previous: Mapping[str, NodeShape] | None = None,
    recorded: Mapping[str, RecordedShape] | None = None,
) -> dict[str, NodeShape]:
    """Shapes of every input and node of `spec`; `previous` (a parent version's table) is reused where valid.

    `recorded` holds probes saved with this very version (the journal's), trusted instead of recomputed, so
    restoring a large model does not re-run shape propagation. Raises ShapeError naming the node and the
    shapes it received.
    """
    table: dict[str, NodeShape] = {}
    for t in spec.inputs:
        probes = tuple(
            tuple(size if d == -1 and i == 0 else other if d == -1 else d for i, d in enumerate(t.shape))
            for size, other in _PROBE_SIZES
        )
        table[t.name] = NodeShape(t.shape, t.datatype, probes, ())  # type: ignore[arg-type]
    mode: FakeTensorMode | None = None
    for node in spec.nodes:
        ins = [table[i] for i in node.inputs]
        module = modules.get(node.id) if node.layer is not None else None
        key = _node_key(node, module, ins)
        prev = previous.get(node.id) if previous else None
        if prev is not None and prev.key == key:
            table[node.id] = prev
            continue
        if recorded is not None and node.id in recorded:
            ra, rb, dt = recorded[node.id]
            a, b = tuple(ra), tuple(rb)
            table[node.id] = NodeShape(_merge(a, b), dt, (a, b), key)
            continue
        if mode is None:
            mode = FakeTensorMode(allow_non_fake_inputs=True)
        table[node.id] = _evaluate(mode, node, module, ins, key)
    return table


def _evaluate(
    mode: FakeTensorMode, node: NodeSpec, module: nn.Module | None, ins: list[NodeShape], key: tuple[object, ...]
) -> NodeShape:
    outs: list[tuple[int, ...]] = []
    dtype: torch.dtype | None = None
    for p in range(2):
        try:
            with mode, torch.no_grad():
                args = [torch.empty(s.probe[p], dtype=OIP_TO_TORCH[s.datatype]) for s in ins]
                if module is not None:
                    y = module(*args)
                else:
                    fn = FUNCTIONS[node.function]  # type: ignore[index]
                    y = fn.fn(args, **node.args) if fn.name in ("cat", "stack") else fn.fn(*args, **node.args)
        except Exception as e:  # noqa: BLE001 - any failure here is the user's graph not fitting together
            got = ", ".join(f"{i!r} produces {list(s.shape)}" for i, s in zip(node.inputs, ins, strict=True))
            what = node.layer.label() if node.layer is not None else node.function
            raise ShapeError(
                f"{node.id!r} ({what}) does not fit its input: {got} ({short_message(e)})",
                node=node.id,
                got=[list(s.shape) for s in ins],
            ) from None
        if not isinstance(y, torch.Tensor):
            raise ShapeError(f"node {node.id!r} does not produce one tensor", node=node.id)
        outs.append(tuple(y.shape))
        dtype = y.dtype
    if len(outs[0]) != len(outs[1]):
        raise ShapeError(f"node {node.id!r}: output rank depends on the batch size", node=node.id)
    assert dtype is not None
    return NodeShape(_merge(outs[0], outs[1]), TORCH_TO_OIP[dtype], (outs[0], outs[1]), key)


def prime() -> None:
    """Pay the first use of FakeTensorMode (imports and kernel registration: seconds on a busy machine) now, so that
    the first edit after a restart (whose versions were restored from recorded shapes) does not."""
    with FakeTensorMode(allow_non_fake_inputs=True), torch.no_grad():
        nn.Linear(2, 2)(torch.empty(1, 2))

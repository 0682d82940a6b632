"""Shape propagation on fake tensors: what each node produces, without running real compute.

Each node is evaluated twice under `FakeTensorMode`, with two different sizes for every variable dimension
(batch 2 and 3, other dims 32 and 40); a dimension that differs between the probes is variable (-1). Results
are cached by (module identity, input probes): a new version re-propagates only the nodes whose module or
input shapes changed, so validating an edit costs O(changed nodes), not O(graph).

A node whose result is a tuple (an LSTM, a `split`) has one NodeShape per element in `elements`; its own shape
is its first element's, so every node has a shape. Only `getitem` may read such a node. A size node
(`aten.sym_size.int`, `sym.mul`, ...) is a scalar: shape `()`, and its value in each probe (`values`), which is
what the nodes that read it are evaluated with.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from .catalogue import MODULE_TYPES
from .dtypes import OIP_TO_TORCH, TORCH_TO_OIP
from .errors import SpecError, short_message
from .functions import SizeRef
from .layer_base import ShapeDtype
from .spec import ModelSpec, NodeSpec, TensorSpec

# FakeTensorMode logs every failing meta kernel at ERROR level; a shape mismatch is an expected outcome here.
logging.getLogger("torch._subclasses.fake_tensor").setLevel(logging.CRITICAL)

Probe = tuple[tuple[int, ...], tuple[int, ...]]
#: What the journal saves of a tensor: both probes and the OIP datatype (a JSON array once stored).
RecordedTensor = tuple[list[int], list[int], str]


class RecordedTuple(TypedDict):
    """What the journal saves of a tuple-valued node: one record per element."""

    elements: list[RecordedTensor]


class RecordedScalar(TypedDict):
    """What the journal saves of a size node: its value in each probe and its datatype."""

    scalar: list[Any]
    datatype: str


#: What the journal saves per node.
RecordedShape = RecordedTensor | RecordedTuple | RecordedScalar
_SCALAR_TYPES: dict[type, str] = {bool: "BOOL", int: "INT64", float: "FP64"}
_FLOATS = ("FP16", "BF16", "FP32", "FP64")
_PROBE_SIZES = ((2, 32), (3, 40))  # (batch, other variable dims) for the two probes


@dataclass(frozen=True)
class NodeShape:
    """The shape (with -1 for variable dims) and OIP datatype of one node's output, and the raw probes."""

    shape: tuple[int, ...]
    datatype: str
    probe: Probe
    key: tuple[object, ...]  # what the result depends on: module identity / function + input probes
    elements: tuple[NodeShape, ...] = ()  # for a tuple-valued node, one entry per element
    values: tuple[Any, Any] | None = None  # for a size node, its value in each probe

    @property
    def is_scalar(self) -> bool:
        return self.values is not None

    def signature(self) -> tuple[object, ...]:
        return (self.probe, self.datatype, tuple(e.signature() for e in self.elements), self.values)

    def recorded(self) -> RecordedShape:
        if self.values is not None:
            return {"scalar": list(self.values), "datatype": self.datatype}
        if self.elements:
            return {"elements": [(list(e.probe[0]), list(e.probe[1]), e.datatype) for e in self.elements]}
        return (list(self.probe[0]), list(self.probe[1]), self.datatype)

    def fake(self, p: int) -> Any:
        """An empty tensor (a tuple of them, or the size) of probe `p`, to evaluate the nodes that read this one."""
        if self.values is not None:
            return self.values[p]
        if self.elements:
            return tuple(e.fake(p) for e in self.elements)
        return torch.empty(self.probe[p], dtype=OIP_TO_TORCH[self.datatype])


class ShapeError(SpecError):
    """A node cannot run on the shapes it receives."""


def _merge(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(x if x == y else -1 for x, y in zip(a, b, strict=True))


def _node_key(node: NodeSpec, module: nn.Module | None, ins: list[NodeShape]) -> tuple[object, ...]:
    """What a node's output shape depends on: its spec (by identity: unchanged nodes share their spec object with
    the parent version, which is alive while this runs), its tensors' dtype, and its inputs' shapes. Not its
    weights: set_weights and same-type replacements reuse the parent's shapes without running anything."""
    if module is None:
        return ((node.function, json.dumps(node.args, sort_keys=True)), tuple(s.signature() for s in ins))
    spec = node.layer if node.layer is not None else node.parameter
    first = next(itertools.chain(module.parameters(), module.buffers()), None)
    return ((id(spec), first.dtype if first is not None else None), tuple(s.signature() for s in ins))


def _scalar(a: Any, b: Any, key: tuple[object, ...]) -> NodeShape:
    datatype = _SCALAR_TYPES.get(type(a), "FP64")
    return NodeShape((), datatype, ((), ()), key, values=(a, b))


def _from_record(r: RecordedShape, key: tuple[object, ...]) -> NodeShape:
    if isinstance(r, dict) and "scalar" in r:
        a, b = r["scalar"]  # type: ignore[typeddict-item]
        return _scalar(a, b, key)
    if isinstance(r, dict):
        elements = tuple(_from_record(e, ()) for e in r["elements"])  # type: ignore[typeddict-item]
        first = elements[0]
        return NodeShape(first.shape, first.datatype, first.probe, key, elements)
    ra, rb, dt = r
    a, b = tuple(ra), tuple(rb)
    return NodeShape(_merge(a, b), dt, (a, b), key)


def _input_probe(t: TensorSpec, p: int) -> tuple[int, ...]:
    """An input's shape in probe `p`: its variable dims (-1) set to the batch (dimension 0) or to the probe's other
    size, moved inside the bounds the input declares (a minimum length, a maximum the model's buffers allow)."""
    batch, other = _PROBE_SIZES[p]
    lo, hi = t.bounds()
    out = []
    for i, d in enumerate(t.shape):
        if d != -1:
            out.append(d)
            continue
        want = batch if i == 0 else other
        low, high = lo[i], hi[i]
        if i > 0 and low > _PROBE_SIZES[0][1]:
            want = low + (8 * p)  # both probes above the minimum, and apart
        if high != -1 and want > high:
            want = max(low, high - (8 * (1 - p)))  # both at or below the maximum, and apart where it allows
        out.append(max(want, low))
    return tuple(out)


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
        probes = (_input_probe(t, 0), _input_probe(t, 1))
        # With a compute datatype, floating inputs reach the first layers already cast (spec.build_graph_module).
        datatype = spec.compute_datatype if spec.compute_datatype and t.datatype in _FLOATS else t.datatype
        table[t.name] = NodeShape(t.shape, datatype, probes, ())
    mode: FakeTensorMode | None = None
    for node in spec.nodes:
        ins = [table[i] for i in node.inputs]
        module = modules.get(node.id) if node.has_module else None
        key = _node_key(node, module, ins)
        prev = previous.get(node.id) if previous else None
        if prev is not None and prev.key == key:
            table[node.id] = prev
            continue
        if recorded is not None and node.id in recorded:
            table[node.id] = _from_record(recorded[node.id], key)
            continue
        ruled = _by_rule(module, ins)
        if ruled is not None:
            table[node.id] = _combine(node, ruled[0], ruled[1], key)
            continue
        if mode is None:
            mode = FakeTensorMode(allow_non_fake_inputs=True)
        table[node.id] = _evaluate(mode, node, module, ins, key)
    return table


def _by_rule(module: nn.Module | None, ins: list[NodeShape]) -> tuple[ShapeDtype, ShapeDtype] | None:
    """Both probes' (shape, dtype) by the shape rule of the module's catalogue layer (`Layer.output_shape`); None
    where no rule applies or the input does not fit (the fake-tensor run then names the error in torch's own words).

    Only exact module types have rules (a subclass may override forward), and only for one floating input."""
    if module is None or len(ins) != 1 or ins[0].elements or ins[0].datatype not in _FLOATS:
        return None
    layer = MODULE_TYPES.get(type(module))
    if layer is None:
        return None
    (a, b), dtype = ins[0].probe, OIP_TO_TORCH[ins[0].datatype]
    ra = layer.output_shape(module, a, dtype)
    rb = layer.output_shape(module, b, dtype) if ra is not None else None
    return (ra, rb) if ra is not None and rb is not None else None


def _check_kinds(node: NodeSpec, ins: list[NodeShape], kinds: list[str]) -> None:
    """Each input is what the node reads it as: a tensor, a tuple (getitem) or a size (a number argument)."""
    for i, s, kind in zip(node.inputs, ins, kinds, strict=True):
        if kind == "tuple":
            if not s.elements:
                raise ValueError(f"getitem reads {i!r}, which is not a tuple")
        elif s.elements:
            raise ValueError(f"{i!r} is a tuple of {len(s.elements)} tensors; read it through getitem nodes")
        elif kind == "scalar" and not s.is_scalar:
            raise ValueError(f"{i!r} is a tensor where a size (a number) is expected")
        elif kind == "tensor" and s.is_scalar:
            raise ValueError(f"{i!r} is a size (a number) where a tensor is expected")


def _evaluate(
    mode: FakeTensorMode, node: NodeSpec, module: nn.Module | None, ins: list[NodeShape], key: tuple[object, ...]
) -> NodeShape:
    outs: list[_Result] = []
    for p in range(2):
        try:
            if module is not None:
                _check_kinds(node, ins, ["tensor"] * len(ins))
            else:
                _check_kinds(node, ins, node.function_entry().input_kinds(node.parsed_args(), len(ins)))
            with mode, torch.no_grad():
                args = [s.fake(p) for s in ins]
                if module is not None:
                    y = module(*args)
                else:
                    fn = node.function_entry()
                    target, a, kw = fn.call(
                        node.parsed_args(), args, functools.partial(_ref_size, ins, p), lambda: None
                    )
                    y = target(*a, **kw)
            outs.append(_shape_of(node, y))
        except ShapeError:
            raise
        except Exception as e:  # noqa: BLE001 - any failure here is the user's graph not fitting together
            got = ", ".join(f"{i!r} produces {list(s.shape)}" for i, s in zip(node.inputs, ins, strict=True))
            raise ShapeError(
                f"{node.id!r} ({node.label()}) does not fit its input: {got or 'no inputs'} ({short_message(e)})",
                node=node.id,
                got=[list(s.shape) for s in ins],
            ) from None
    return _combine(node, outs[0], outs[1], key)


def _ref_size(ins: list[NodeShape], p: int, r: SizeRef) -> int:
    """The size a SizeRef reads, in probe `p`."""
    s = ins[r.input]
    if s.elements:
        raise ValueError(f"a size names input {r.input}, which is a tuple")
    return s.probe[p][r.dim]


@dataclass(frozen=True)
class _Number:
    """What one probe of a size node gives: its value."""

    value: Any


#: What one probe of a node gives: (shape, dtype) of a tensor result, a list of them for a tuple result, a number.
_Result = ShapeDtype | list[ShapeDtype] | _Number


def _shape_of(node: NodeSpec, y: object) -> _Result:
    """(shape, dtype) of a tensor result, a list of them for a tuple result, or the number a size node gives."""
    if isinstance(y, bool | int | float) and node.function is not None:
        return _Number(y)
    if isinstance(y, torch.SymInt | torch.SymFloat):
        raise ShapeError(f"node {node.id!r} gives a size that depends on tensor values", node=node.id)
    if isinstance(y, torch.Tensor):
        if y.is_complex():
            raise ShapeError(f"node {node.id!r} produces a complex tensor, which a spec cannot hold", node=node.id)
        return (tuple(y.shape), y.dtype)
    if isinstance(y, tuple | list) and y and all(isinstance(t, torch.Tensor) for t in y):
        return [(tuple(t.shape), t.dtype) for t in y]  # a list marks a tuple result
    raise ShapeError(f"node {node.id!r} does not produce a tensor or a tuple of tensors", node=node.id)


def _combine(node: NodeSpec, a: _Result, b: _Result, key: tuple[object, ...]) -> NodeShape:
    if isinstance(a, _Number) or isinstance(b, _Number):
        if not isinstance(a, _Number) or not isinstance(b, _Number):
            raise ShapeError(f"node {node.id!r} gives a number in one probe and a tensor in the other", node=node.id)
        return _scalar(a.value, b.value, key)
    if isinstance(a, list) or isinstance(b, list):  # a tuple result (in both probes, or the count differs)
        if not isinstance(a, list) or not isinstance(b, list) or len(a) != len(b):
            raise ShapeError(f"node {node.id!r}: the number of results depends on the batch size", node=node.id)
        elements = tuple(_combine(node, x, y, ()) for x, y in zip(a, b, strict=True))
        first = elements[0]
        return NodeShape(first.shape, first.datatype, first.probe, key, elements)
    (sa, dtype), (sb, _) = a, b
    if len(sa) != len(sb):
        raise ShapeError(f"node {node.id!r}: output rank depends on the batch size", node=node.id)
    return NodeShape(_merge(sa, sb), TORCH_TO_OIP[dtype], (sa, sb), key)


def prime() -> None:
    """Pay the first use of FakeTensorMode (imports and kernel registration: seconds on a busy machine) now, so that
    the first edit after a restart (whose versions were restored from recorded shapes) does not."""
    with FakeTensorMode(allow_non_fake_inputs=True), torch.no_grad():
        nn.Linear(2, 2)(torch.empty(1, 2))

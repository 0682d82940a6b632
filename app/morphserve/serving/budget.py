"""The memory budget: what one model may hold in memory, `--max-model-bytes`, covers everything it runs.

Every layer is bounded by the catalogue, the model is not: 26 inserted `Linear(16384, 16384)` pass validation
and then allocate 26 GiB; a model with no weights and an input of `[-1, 1048576, 256]` allocates gigabytes in
its warm-up forward. So a model is sized before anything of it is allocated, and refused (422, naming the bytes
needed and allowed) when the sum is over the limit:

- **weights of every resident version**: the unique tensors of the versions the residency keeps in memory (up to
  `--resident-versions`; unchanged layers are shared between versions and count once), plus what an edit would
  add: each new layer is built on PyTorch's meta device (shapes without storage, microseconds);
- **activations** of the largest batch: from the version's shape table (recorded, or propagated on fake tensors:
  no real compute), every tensor a forward holds at once with `max_batch_size` rows and the other variable
  dimensions at their probe size; the warm-up forward (one row) and the shape probes (fake tensors) need less.

A creation and an edit check the weights before building anything and the activations before the warm-up forward,
which is the first real allocation of the activations; a restart checks the journal's row before loading its
weights, so a model over the budget is reported as failed rather than loaded.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from morphserve.graph import ModelSpec, ModelVersion, parse_ops
from morphserve.graph.datatypes import DATATYPES
from morphserve.graph.edits import CastOp, InsertOp, RemoveOp, ReplaceOp, SetWeightsOp
from morphserve.graph.spec import NodeSpec

from .errors import ModelTooLargeError

#: The probe size of a variable dimension other than the batch (graph/shapes.py probes with 32 and 40).
VARIABLE_DIM = 40
#: A shape as the journal records it: (probe a, probe b, datatype), or a tuple node's elements.
Recorded = Any


def module_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def unique_bytes(modules: Iterable[nn.Module]) -> int:
    """Bytes of distinct modules (versions share their unchanged layers: each counts once)."""
    return sum(module_bytes(m) for m in {id(m): m for m in modules}.values())


@functools.lru_cache(maxsize=1024)
def _node_bytes(node_json: str) -> int:
    with torch.device("meta"):
        return module_bytes(NodeSpec.model_validate_json(node_json).build_module())


_LAYER_BYTES: dict[str, int] = {}


def layer_bytes(layer: Any) -> int:
    """Bytes of parameters and buffers a catalogue layer would allocate, without allocating them.

    Built from the layer itself rather than a node around it: a node checks its input count against the layer
    (MultiheadAttention reads three), which is the edit's business, not the budget's."""
    key = f"{type(layer).__name__}:{layer.model_dump_json()}"
    size = _LAYER_BYTES.get(key)
    if size is None:
        with torch.device("meta"):
            size = module_bytes(layer.build())
        if len(_LAYER_BYTES) < 1024:
            _LAYER_BYTES[key] = size
    return size


def node_bytes(node: NodeSpec) -> int:
    """The same for any node of a spec: 0 for functions, the tensor for parameter nodes."""
    return _node_bytes(node.model_dump_json()) if node.has_module else 0


# -- activations ----------------------------------------------------------------------------------------------
def _dim(a: int, b: int, batch: int) -> int:
    """One dimension at `batch` rows, from its two probes (batch 2 and 3, other variable dims 32 and 40): a
    dimension that grows with the batch (a multiple of it) is scaled to `batch`; one that varies otherwise is a
    variable dimension, taken at its larger probe."""
    if a == b:
        return a
    if a * 3 == b * 2:
        return a * batch // 2
    return max(a, b)


def _tensor_bytes(rec: Recorded, batch: int) -> int:
    if isinstance(rec, Mapping):
        return sum(_tensor_bytes(e, batch) for e in rec.get("elements", ()))
    a, b, datatype = rec
    count = 1
    for x, y in zip(a, b, strict=True):
        count *= _dim(int(x), int(y), batch)
    dt = DATATYPES.get(str(datatype))
    return count * (dt.itemsize if dt is not None else 8)


def activation_bytes(spec: ModelSpec, shapes: Mapping[str, Recorded], batch: int) -> int:
    """The most bytes of tensors one forward of `batch` rows holds at once (inputs, and every node's output from
    the node that makes it to the last node that reads it; outputs to the end), as fx's generated code frees
    values after their last use. Parameter nodes hand out their tensor (counted with the weights)."""
    last_use: dict[str, int] = {}
    for i, node in enumerate(spec.nodes):
        for name in node.inputs:
            last_use[name] = i
    end = len(spec.nodes)
    for o in spec.outputs:
        last_use[o.node] = end
    live = 0
    for t in spec.inputs:
        probe = [batch if i == 0 and d == -1 else VARIABLE_DIM if d == -1 else d for i, d in enumerate(t.shape)]
        count = 1
        for d in probe:
            count *= d
        dt = DATATYPES.get(t.datatype)
        live += count * (dt.itemsize if dt is not None else 8)  # held by the request until the end
    peak = live
    sizes: dict[str, int] = {}
    frees: dict[int, list[str]] = {}
    for i, node in enumerate(spec.nodes):
        rec = shapes.get(node.id)
        size = 0 if node.parameter is not None or rec is None else _tensor_bytes(rec, batch)
        sizes[node.id] = size
        live += size
        peak = max(peak, live)
        frees.setdefault(last_use.get(node.id, i), []).append(node.id)
        for gone in frees.pop(i, ()):
            live -= sizes.get(gone, 0)
    return peak


@dataclass(frozen=True)
class Needs:
    """What a version needs in memory, by part (for the refusal's message and fields)."""

    weights: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.activations


class MemoryBudget:
    def __init__(self, limit: int, max_batch_size: int = 1) -> None:
        self.limit = limit
        self.max_batch_size = max_batch_size

    def _check(self, needs: Needs, what: str, weights_are: str = "parameters") -> None:
        if needs.total > self.limit:
            parts = f"{needs.weights:,} bytes of {weights_are}"
            if needs.activations:
                parts += f" and {needs.activations:,} of activations at {self.max_batch_size} rows (--max-batch-size)"
            raise ModelTooLargeError(
                f"{what} needs {needs.total:,} bytes ({parts}), over the limit of {self.limit:,} bytes "
                f"(--max-model-bytes)",
                needed_bytes=needs.total,
                limit_bytes=self.limit,
                weights_bytes=needs.weights,
                activation_bytes=needs.activations,
            )

    def activations(self, spec: ModelSpec, shapes: Mapping[str, Recorded]) -> int:
        return activation_bytes(spec, shapes, self.max_batch_size)

    def check_spec(self, spec: ModelSpec, what: str = "the model") -> int:
        """A new model's weights, before any of them is built (its activations follow from its shapes, which
        need the model: `check_version` before the warm-up); the bytes they take."""
        weights = sum(node_bytes(n) for n in spec.nodes)
        self._check(Needs(weights, 0), what)
        return weights

    def check_record(self, spec: ModelSpec, shapes: Mapping[str, Recorded], what: str) -> None:
        """A version the journal holds, before its weights are loaded: its weights and the activations of its
        recorded shapes."""
        self._check(Needs(sum(node_bytes(n) for n in spec.nodes), self.activations(spec, shapes)), what)

    def check_edit(self, current: ModelVersion, ops: Iterable[Any], resident: Sequence[ModelVersion] = ()) -> None:
        """Size the weights that the version `ops` would make of `current` adds to the resident versions (ops are
        validated properly later; an op this cannot parse is left to that validation)."""
        try:
            parsed = parse_ops(list(ops))
        except Exception:  # noqa: BLE001 - apply_edit reports invalid ops with the op index
            return
        retained = dict(current.modules)  # the current version's layers the candidate keeps (shared, not copied)
        added = 0
        named: dict[str, int] = {}  # layers this edit inserts under a name a later op of it may remove or replace
        for op in parsed:
            if isinstance(op, InsertOp):
                size = layer_bytes(op.layer)
                added += size
                if op.name is not None:
                    named[op.name] = size
            elif isinstance(op, ReplaceOp):
                added += layer_bytes(op.layer) - named.pop(op.node, 0)
                retained.pop(op.node, None)
            elif isinstance(op, RemoveOp):
                added -= named.pop(op.node, 0)
                retained.pop(op.node, None)
            elif isinstance(op, SetWeightsOp) and op.node in retained:  # a copy of that layer
                added += module_bytes(retained.pop(op.node))
            elif isinstance(op, CastOp):  # a copy of every tensor, at the new datatype's size
                size = DATATYPES[op.datatype].itemsize
                added += sum(
                    t.numel() * (size if t.is_floating_point() else t.element_size())
                    for m in {id(m): m for m in retained.values()}.values()
                    for t in (*m.parameters(), *m.buffers())
                )
                retained = {}
        candidate = unique_bytes(retained.values()) + added
        self._check(Needs(candidate, 0), "the edited model")  # on its own
        # beside the versions that stay resident with it (their layers it shares count once)
        beside = unique_bytes([*retained.values(), *(m for v in resident for m in v.modules.values())]) + added
        if resident:
            self._check(Needs(beside, 0), "the edited model with its resident versions", "weights in memory")

    def check_version(
        self, v: ModelVersion, what: str, resident: Sequence[ModelVersion] = (), *, activations: bool = True
    ) -> None:
        """A built version, before its warm-up forward: the weights of it and of `resident` (the versions that stay
        in memory beside it), and its activations."""
        weights = unique_bytes(m for x in (v, *resident) for m in x.modules.values())
        acts = self.activations(v.spec, v.recorded_shapes()) if activations else 0
        self._check(Needs(weights, acts), what, "weights in memory" if resident else "parameters")

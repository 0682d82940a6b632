"""Edits: a list of ops applied atomically to a version, giving exactly one new version or an `EditError`.

Ops rewrite the spec (ids and wiring) and the module table; then the candidate is linted and shape-propagated
on fake tensors, reusing the parent's shapes for every node the edit did not touch. Nothing is shared with
the caller until the whole list has succeeded, so a failed edit leaves no trace.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, TypeAdapter, ValidationError, model_validator
from torch import nn

from . import catalogue as c
from .arrays import ArrayError, from_json
from .dtypes import OIP_TO_TORCH, TORCH_TO_OIP
from .errors import EditError, GraphError, NotFoundError, UnknownNodeError
from .identity import IdentityError, make_identity
from .precision import COMPUTE, cast_modules, conform, like
from .spec import ModelSpec, NodeSpec, OutputSpec, check_id
from .version import ModelVersion, make_version

MAX_OPS = 256


class _Op(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InsertOp(_Op):
    """Insert a layer after (or before) a node; it reads the anchor's output and feeds all its former users."""

    op: Literal["insert"] = "insert"
    after: str | None = None
    before: str | None = None
    name: str | None = None
    layer: c.LayerSpec
    init: Literal["default", "identity"] = "default"
    seed: Annotated[int, Field(ge=0, le=2**63 - 1)] = 0

    @model_validator(mode="after")
    def _one_anchor(self) -> InsertOp:
        if (self.after is None) == (self.before is None):
            raise ValueError("give exactly one of 'after' or 'before'")
        if self.name is not None:
            check_id(self.name)
        return self


class RemoveOp(_Op):
    """Remove a node; its users read its single input instead."""

    op: Literal["remove"] = "remove"
    node: str


class ReplaceOp(_Op):
    """Replace a layer node's layer; `keep_weights` copies the old tensors (shapes must match)."""

    op: Literal["replace"] = "replace"
    node: str
    layer: c.LayerSpec
    keep_weights: bool = False
    seed: Annotated[int, Field(ge=0, le=2**63 - 1)] = 0


class TensorData(BaseModel):
    """A tensor as JSON: its shape and its values, flat (row-major) or nested."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    shape: Annotated[list[Annotated[int, Field(ge=0, le=1 << 28)]], Field(max_length=8)]
    data: list[Any]
    datatype: str | None = None


class SetWeightsOp(_Op):
    """Overwrite some of a layer's parameters/buffers (names as in its PyTorch state dict; `value` for a parameter
    node)."""

    op: Literal["set_weights"] = "set_weights"
    node: str
    tensors: dict[str, TensorData] = Field(default_factory=dict)
    _decoded: dict[str, torch.Tensor] = PrivateAttr(default_factory=dict)

    @classmethod
    def from_tensors(cls, node: str, tensors: dict[str, torch.Tensor]) -> SetWeightsOp:
        """The op for tensors already decoded (e.g. from safetensors): dtypes must match exactly."""
        op = cls(node=node)
        op._decoded = dict(tensors)
        return op

    def summary(self) -> dict[str, Any]:
        names = {
            **{k: (v.shape, v.datatype) for k, v in self.tensors.items()},
            **{k: (list(v.shape), TORCH_TO_OIP.get(v.dtype)) for k, v in self._decoded.items()},
        }
        return {
            "op": "set_weights",
            "node": self.node,
            "tensors": {k: {"shape": list(s), "datatype": d} for k, (s, d) in names.items()},
        }


class CastOp(_Op):
    """Compute in another datatype from now on (FP16, BF16; FP32 to go back): every tensor is copied and cast,
    inputs and outputs keep their wire datatype (precision.py)."""

    op: Literal["cast"] = "cast"
    datatype: Literal["FP32", "FP16", "BF16", "FP64"]


Op = Annotated[InsertOp | RemoveOp | ReplaceOp | SetWeightsOp | CastOp, Field(discriminator="op")]
_OPS: TypeAdapter[list[Op]] = TypeAdapter(list[Op])


def parse_ops(data: Any) -> list[Op]:
    """Validate a JSON list of ops; an EditError names the op index and field."""
    if isinstance(data, list) and all(isinstance(o, _Op) for o in data):
        ops = list(data)
    else:
        if isinstance(data, list):
            for i, o in enumerate(data):
                if isinstance(o, dict) and "layer" in o:
                    try:
                        c.parse_layer(o["layer"], where=f"ops.{i}.layer")
                    except GraphError as e:
                        raise EditError(e.message, op=i) from None
        try:
            ops = _OPS.validate_python(data)
        except ValidationError as e:
            first = e.errors()[0]["loc"]
            raise EditError(c.format_validation_error(e, "ops"), op=first[0] if first else None) from None
    if not ops:
        raise EditError("an edit needs at least one op")
    if len(ops) > MAX_OPS:
        raise EditError(f"an edit has at most {MAX_OPS} ops, got {len(ops)}")
    return ops


def op_json(op: Op) -> dict[str, Any]:
    """How an op is recorded in the version history (weights summarised, not copied)."""
    if isinstance(op, SetWeightsOp):
        return op.summary()
    return op.model_dump(mode="json", exclude_none=True)


class _Draft:
    """A mutable working copy of a version's wiring and module table, discarded on failure."""

    def __init__(self, base: ModelVersion) -> None:
        self.inputs = base.spec.inputs
        self.nodes: list[NodeSpec] = list(base.spec.nodes)
        self.outputs: list[OutputSpec] = list(base.spec.outputs)
        self.modules: dict[str, nn.Module] = dict(base.modules)
        self.shapes = base.shapes
        self.compute = base.spec.compute_datatype
        self.last_inserted = ""

    def index(self, node_id: str) -> int:
        for i, n in enumerate(self.nodes):
            if n.id == node_id:
                return i
        raise NotFoundError(f"node {node_id!r} does not exist", node=node_id)

    def ids(self) -> set[str]:
        return {t.name for t in self.inputs} | {n.id for n in self.nodes}

    def rewire(self, old: str, new: str, skip: str) -> None:
        """Point every reader of `old` (except node `skip`) and every output at `new`."""
        for i, n in enumerate(self.nodes):
            if n.id != skip and old in n.inputs:
                self.nodes[i] = n.model_copy(update={"inputs": tuple(new if x == old else x for x in n.inputs)})
        self.outputs = [o.model_copy(update={"node": new}) if o.node == old else o for o in self.outputs]

    def layer_of(self, node_id: str) -> c.LayerSpec | None:
        n = next((n for n in self.nodes if n.id == node_id), None)
        return n.layer if n is not None else None

    def spec(self, name: str) -> ModelSpec:
        return ModelSpec(
            name=name,
            inputs=self.inputs,
            outputs=tuple(self.outputs),
            nodes=tuple(self.nodes),
            compute_datatype=self.compute,
        )


def _build(layer: c.LayerSpec, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return layer.build()


def _fresh_name(draft: _Draft, layer: c.LayerSpec) -> str:
    taken = draft.ids() | {o.name for o in draft.outputs}
    base = layer.type.lower()
    k = 1
    while f"{base}_{k}" in taken:
        k += 1
    return f"{base}_{k}"


def _apply_insert(draft: _Draft, op: InsertOp) -> None:
    anchor = op.after if op.after is not None else op.before
    assert anchor is not None
    name = op.name or _fresh_name(draft, op.layer)
    if name in draft.ids() or name in {o.name for o in draft.outputs if o.node != o.name}:
        raise EditError(f"a node named {name!r} already exists", node=name)
    lo, hi = op.layer.input_range()
    if not lo <= 1 <= hi:
        raise EditError(
            f"insert places a layer that reads one node, but {op.layer.type} reads {lo}..{hi} inputs; "
            "wire it with a spec instead",
            node=name,
        )
    module = _build(op.layer, op.seed)
    if op.after is not None:
        if anchor in {t.name for t in draft.inputs}:
            pos, prev = 0, None
        else:
            pos, prev = draft.index(anchor) + 1, draft.layer_of(anchor)
        source: str = anchor
    else:
        pos = draft.index(anchor)
        target = draft.nodes[pos]
        if len(target.inputs) != 1:
            raise EditError(f"'before' needs a node with one input; {anchor!r} has {len(target.inputs)}", node=anchor)
        source = target.inputs[0]
        prev = draft.layer_of(source)
    if op.init == "identity":
        try:
            make_identity(op.layer, module, prev)
        except IdentityError as e:
            raise EditError(f"init 'identity' is impossible here: {e}", node=name) from None
    module = conform(module, draft.compute)  # identity init ran in FP32: exact in any datatype
    new = NodeSpec(id=name, layer=op.layer, inputs=(source,))
    if op.after is not None:
        draft.rewire(source, name, skip=name)
        draft.nodes.insert(pos, new)
    else:
        draft.nodes[pos] = draft.nodes[pos].model_copy(update={"inputs": (name,)})
        draft.nodes.insert(pos, new)
    draft.modules[name] = module
    draft.last_inserted = name


def _apply_remove(draft: _Draft, op: RemoveOp) -> None:
    pos = draft.index(op.node)
    node = draft.nodes[pos]
    if len(node.inputs) != 1:
        raise EditError(f"only a node with one input can be removed; {op.node!r} has {len(node.inputs)}", node=op.node)
    del draft.nodes[pos]
    draft.modules.pop(op.node, None)
    draft.rewire(op.node, node.inputs[0], skip="")


def _apply_replace(draft: _Draft, op: ReplaceOp) -> None:
    pos = draft.index(op.node)
    node = draft.nodes[pos]
    if node.layer is None:
        what = (
            f"a {node.function} function"
            if node.function is not None
            else "a parameter (set its value with set_weights)"
        )
        raise EditError(f"{op.node!r} is {what}, not a layer; only layers can be replaced", node=op.node)
    module = _build(op.layer, op.seed)
    if op.keep_weights:
        old, new = draft.modules[op.node].state_dict(), module.state_dict()
        diffs = [
            f"{k}: {list(v.shape)} vs {list(new[k].shape) if k in new else 'missing'}"
            for k, v in old.items()
            if k not in new or new[k].shape != v.shape
        ]
        diffs += [f"{k}: missing vs {list(v.shape)}" for k, v in new.items() if k not in old]
        if diffs:
            raise EditError(
                f"keep_weights needs tensors of the same shapes; old vs new: {'; '.join(diffs)}", node=op.node
            )
        with torch.no_grad():
            module.load_state_dict(old)
    draft.nodes[pos] = node.model_copy(update={"layer": op.layer})
    draft.modules[op.node] = conform(module, draft.compute)


def _tensor_from_json(name: str, t: TensorData, like: torch.Tensor) -> torch.Tensor:
    """A tensor sent as JSON, checked by the one converter the inference routes use (arrays.py)."""
    datatype = t.datatype or TORCH_TO_OIP.get(like.dtype, "FP32")
    wire = "FP32" if datatype == "BF16" else datatype  # numpy has no bfloat16: read FP32 values, then cast
    try:
        arr = from_json(t.data, wire, what=f"tensor {name!r}", shape=t.shape)
    except ArrayError as e:
        raise EditError(e.message) from None
    out = torch.from_numpy(arr).to(OIP_TO_TORCH[datatype])
    return out.to(like.dtype) if t.datatype is None else out


def _apply_set_weights(draft: _Draft, op: SetWeightsOp) -> None:
    pos = draft.index(op.node)
    if not draft.nodes[pos].has_module:
        raise EditError(f"{op.node!r} is a function and has no weights", node=op.node)
    old = draft.modules[op.node]
    current = old.state_dict()
    if not op.tensors and not op._decoded:
        raise EditError("set_weights needs at least one tensor", node=op.node)
    for k in [*op.tensors, *op._decoded]:
        if k not in current:
            raise EditError(
                f"{op.node!r} has no tensor {k!r}; it has {sorted(current)}",
                node=op.node,
                expected=sorted(current),
                got=k,
            )
    given = dict(op._decoded)
    given.update({k: _tensor_from_json(k, t, current[k]) for k, t in op.tensors.items()})
    given = {k: like(v, current[k], draft.compute) for k, v in given.items()}  # FP32 weights into a BF16 model
    for k, v in given.items():
        ref = current[k]
        if tuple(v.shape) != tuple(ref.shape):
            raise EditError(
                f"tensor {k!r} of {op.node!r} has shape {list(ref.shape)}, got {list(v.shape)}",
                node=op.node,
                expected=list(ref.shape),
                got=list(v.shape),
            )
        if v.dtype != ref.dtype:
            raise EditError(
                f"tensor {k!r} of {op.node!r} is {TORCH_TO_OIP.get(ref.dtype)}, got "
                f"{TORCH_TO_OIP.get(v.dtype, str(v.dtype))}",
                node=op.node,
                expected=TORCH_TO_OIP.get(ref.dtype),
                got=TORCH_TO_OIP.get(v.dtype, str(v.dtype)),
            )
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise EditError(f"tensor {k!r} of {op.node!r} contains NaN or infinity", node=op.node)
    module = copy.deepcopy(old)
    with torch.no_grad():
        module.load_state_dict({**current, **given})
    draft.modules[op.node] = module


def _apply_cast(draft: _Draft, op: CastOp) -> None:
    target = None if op.datatype == "FP32" else op.datatype
    if target == draft.compute:
        raise EditError(f"the model computes in {op.datatype} already")
    draft.modules = cast_modules(draft.modules, op.datatype)
    for i, n in enumerate(draft.nodes):  # parameter nodes declare their datatype
        if n.parameter is not None and n.parameter.datatype in COMPUTE:
            draft.nodes[i] = n.model_copy(
                update={"parameter": n.parameter.model_copy(update={"datatype": op.datatype})}
            )
    draft.compute = target


def recast(v: ModelVersion, datatype: str) -> ModelVersion:
    """`v` itself (same number, parent and history) computing in `datatype`: how a model is created or loaded in
    half precision. Live models change datatype with the `cast` op instead, as a new version."""
    if (None if datatype == "FP32" else datatype) == v.spec.compute_datatype:
        return v
    draft = _Draft(v)
    _apply_cast(draft, CastOp(datatype=datatype))  # type: ignore[arg-type]
    return make_version(
        v.model, v.version, v.parent, draft.spec(v.spec.name), draft.modules, ops=v.ops, created_at=v.created_at
    )


_APPLY = {
    "insert": _apply_insert,
    "remove": _apply_remove,
    "replace": _apply_replace,
    "set_weights": _apply_set_weights,
    "cast": _apply_cast,
}


def _describe_op(op: Op) -> str:
    match op:
        case InsertOp():
            where = f"after {op.after!r}" if op.after is not None else f"before {op.before!r}"
            return f"insert {op.layer.label()} {where}"
        case RemoveOp():
            return f"remove {op.node!r}"
        case ReplaceOp():
            return f"replace {op.node!r} with {op.layer.label()}"
        case SetWeightsOp():
            return f"set_weights on {op.node!r}"
        case CastOp():
            return f"cast to {op.datatype}"
    return str(op)


def apply_edit(
    base: ModelVersion, ops: list[Op] | list[dict[str, Any]], *, version: int, allow_output_change: bool = False
) -> ModelVersion:
    """The version that `ops` make of `base`, numbered `version`; `base` is never modified.

    Raises EditError naming the op index, the node and the reason.
    """
    parsed = parse_ops(ops)
    draft = _Draft(base)
    created: dict[int, str] = {}  # op index -> the node it inserted (names may be generated)
    for i, op in enumerate(parsed):
        try:
            _APPLY[op.op](draft, op)  # type: ignore[operator]
        except GraphError as e:
            cls = UnknownNodeError if isinstance(e, NotFoundError) else EditError
            raise cls(f"op {i}: {_describe_op(op)}: {e.message}", **{**e.fields, "op": i}) from None
        if isinstance(op, InsertOp):
            created[i] = op.name or draft.last_inserted
    try:
        candidate = make_version(
            base.model,
            version,
            base.version,
            draft.spec(base.spec.name),
            draft.modules,
            previous=base,
            ops=tuple(op_json(o) for o in parsed),
            check_outputs=False,
        )
    except GraphError as e:
        node = e.fields.get("node")
        idx = _op_of_node(parsed, node, created)
        prefix = f"op {idx}: {_describe_op(parsed[idx])}: " if idx is not None else ""
        raise EditError(prefix + e.message, **{**e.fields, "op": idx}) from None
    if not allow_output_change:
        for old, new in zip(base.outputs, candidate.outputs, strict=True):
            if (old.shape, old.datatype) != (new.shape, new.datatype):
                raise EditError(
                    f"the edit changes output {old.name!r} from {old.datatype} {list(old.shape or [])} to "
                    f"{new.datatype} {list(new.shape or [])}; set allow_output_change to accept that",
                    node=old.node,
                    expected=list(old.shape or []),
                    got=list(new.shape or []),
                )
    return candidate


def _op_of_node(ops: list[Op], node: str | None, created: dict[int, str] | None = None) -> int | None:
    """The last op that touched `node` (a shape error surfaces at the node, but the op caused it)."""
    if node is None:
        return None
    for i in range(len(ops) - 1, -1, -1):
        op = ops[i]
        name = getattr(op, "node", None) or getattr(op, "name", None) or (created or {}).get(i)
        if name == node or (isinstance(op, InsertOp) and node in (op.after, op.before)):
            return i
    return len(ops) - 1

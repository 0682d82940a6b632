"""The edit ops: each a strict pydantic model (its JSON form and validation) that applies itself to a `Draft`.

An op owns everything about itself: its fields, `apply` (rewrite the draft's wiring and module table, or raise a
GraphError naming the node), `describe` (how messages name it), `record` (how the version history keeps it) and
`touches` (which node's failure it caused). `Op` is their union, discriminated by `op`; a new op is one class here
plus its entry in that union.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from .arrays import ArrayError, from_json
from .catalogue import LayerSpec
from .dtypes import OIP_TO_TORCH, TORCH_TO_OIP
from .edit_draft import Draft, build_seeded
from .errors import EditError
from .identity import IdentityError, make_identity
from .precision import COMPUTE, ComputeDatatype, cast_modules, conform, like
from .spec import NodeSpec, check_id

Seed = Annotated[int, Field(ge=0, le=2**63 - 1)]


class BaseOp(BaseModel):
    """What every op does; see the module docstring."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def apply(self, draft: Draft) -> str | None:
        """Rewrite `draft`; the id of the node this op created, if it created one."""
        raise NotImplementedError

    def describe(self) -> str:
        """The op in a few words, as messages name it (`insert ReLU() after 'fc1'`)."""
        raise NotImplementedError

    def record(self) -> dict[str, Any]:
        """How the version history keeps the op."""
        return self.model_dump(mode="json", exclude_none=True)

    def touches(self, node: str, created: str | None) -> bool:
        """Whether this op changed `node` (`created`: the node it created), so that a shape error found at the
        node is reported against the op that caused it."""
        return False


class InsertOp(BaseOp):
    """Insert a layer after (or before) a node; it reads the anchor's output and feeds all its former users."""

    op: Literal["insert"] = "insert"
    after: str | None = None
    before: str | None = None
    name: str | None = None
    layer: LayerSpec
    init: Literal["default", "identity"] = "default"
    seed: Seed = 0

    @model_validator(mode="after")
    def _one_anchor(self) -> InsertOp:
        if (self.after is None) == (self.before is None):
            raise ValueError("give exactly one of 'after' or 'before'")
        if self.name is not None:
            check_id(self.name)
        return self

    def describe(self) -> str:
        where = f"after {self.after!r}" if self.after is not None else f"before {self.before!r}"
        return f"insert {self.layer.label()} {where}"

    def touches(self, node: str, created: str | None) -> bool:
        return (self.name or created) == node or node in (self.after, self.before)

    def apply(self, draft: Draft) -> str:
        anchor = self.after if self.after is not None else self.before
        assert anchor is not None
        name = self.name or draft.fresh_name(self.layer)
        if name in draft.ids() or name in {o.name for o in draft.outputs if o.node != o.name}:
            raise EditError(f"a node named {name!r} already exists", node=name)
        lo, hi = self.layer.input_range()
        if not lo <= 1 <= hi:
            raise EditError(
                f"insert places a layer that reads one node, but {self.layer.type} reads {lo}..{hi} inputs; "
                "wire it with a spec instead",
                node=name,
            )
        module = build_seeded(self.layer, self.seed)
        if self.after is not None:
            if anchor in {t.name for t in draft.inputs}:
                pos, prev = 0, None
            else:
                pos, prev = draft.index(anchor) + 1, draft.layer_of(anchor)
            source: str = anchor
        else:
            pos = draft.index(anchor)
            target = draft.nodes[pos]
            if len(target.inputs) != 1:
                raise EditError(
                    f"'before' needs a node with one input; {anchor!r} has {len(target.inputs)}", node=anchor
                )
            source = target.inputs[0]
            prev = draft.layer_of(source)
        if self.init == "identity":
            try:
                make_identity(self.layer, module, prev)
            except IdentityError as e:
                raise EditError(f"init 'identity' is impossible here: {e}", node=name) from None
        module = conform(module, draft.compute)  # identity init ran in FP32: exact in any datatype
        new = NodeSpec(id=name, layer=self.layer, inputs=(source,))
        if self.after is not None:
            draft.rewire(source, name, skip=name)
            draft.nodes.insert(pos, new)
        else:
            draft.nodes[pos] = draft.nodes[pos].model_copy(update={"inputs": (name,)})
            draft.nodes.insert(pos, new)
        draft.modules[name] = module
        return name


class RemoveOp(BaseOp):
    """Remove a node; its users read its single input instead."""

    op: Literal["remove"] = "remove"
    node: str

    def describe(self) -> str:
        return f"remove {self.node!r}"

    def touches(self, node: str, created: str | None) -> bool:
        return self.node == node

    def apply(self, draft: Draft) -> None:
        pos = draft.index(self.node)
        node = draft.nodes[pos]
        if len(node.inputs) != 1:
            raise EditError(
                f"only a node with one input can be removed; {self.node!r} has {len(node.inputs)}", node=self.node
            )
        del draft.nodes[pos]
        draft.modules.pop(self.node, None)
        draft.rewire(self.node, node.inputs[0], skip="")


class ReplaceOp(BaseOp):
    """Replace a layer node's layer; `keep_weights` copies the old tensors (shapes must match)."""

    op: Literal["replace"] = "replace"
    node: str
    layer: LayerSpec
    keep_weights: bool = False
    seed: Seed = 0

    def describe(self) -> str:
        return f"replace {self.node!r} with {self.layer.label()}"

    def touches(self, node: str, created: str | None) -> bool:
        return self.node == node

    def apply(self, draft: Draft) -> None:
        pos = draft.index(self.node)
        node = draft.nodes[pos]
        if node.layer is None:
            what = (
                f"a {node.function} function"
                if node.function is not None
                else "a parameter (set its value with set_weights)"
            )
            raise EditError(f"{self.node!r} is {what}, not a layer; only layers can be replaced", node=self.node)
        module = build_seeded(self.layer, self.seed)
        if self.keep_weights:
            old, new = draft.modules[self.node].state_dict(), module.state_dict()
            diffs = [
                f"{k}: {list(v.shape)} vs {list(new[k].shape) if k in new else 'missing'}"
                for k, v in old.items()
                if k not in new or new[k].shape != v.shape
            ]
            diffs += [f"{k}: missing vs {list(v.shape)}" for k, v in new.items() if k not in old]
            if diffs:
                raise EditError(
                    f"keep_weights needs tensors of the same shapes; old vs new: {'; '.join(diffs)}", node=self.node
                )
            with torch.no_grad():
                module.load_state_dict(old)
        draft.nodes[pos] = node.model_copy(update={"layer": self.layer})
        draft.modules[self.node] = conform(module, draft.compute)


class TensorData(BaseModel):
    """A tensor as JSON: its shape and its values, flat (row-major) or nested."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    shape: Annotated[list[Annotated[int, Field(ge=0, le=1 << 28)]], Field(max_length=8)]
    data: list[Any]
    datatype: str | None = None

    def to_tensor(self, name: str, ref: torch.Tensor) -> torch.Tensor:
        """The tensor, checked by the one converter the inference routes use (arrays.py); without a datatype it
        takes that of `ref`, the tensor it replaces."""
        datatype = self.datatype or TORCH_TO_OIP.get(ref.dtype, "FP32")
        wire = "FP32" if datatype == "BF16" else datatype  # numpy has no bfloat16: read FP32 values, then cast
        try:
            arr = from_json(self.data, wire, what=f"tensor {name!r}", shape=self.shape)
        except ArrayError as e:
            raise EditError(e.message) from None
        out = torch.from_numpy(arr).to(OIP_TO_TORCH[datatype])
        return out.to(ref.dtype) if self.datatype is None else out


class SetWeightsOp(BaseOp):
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

    def record(self) -> dict[str, Any]:
        return self.summary()  # the weights are in the version itself, not copied into its history

    def describe(self) -> str:
        return f"set_weights on {self.node!r}"

    def touches(self, node: str, created: str | None) -> bool:
        return self.node == node

    def apply(self, draft: Draft) -> None:
        pos = draft.index(self.node)
        if not draft.nodes[pos].has_module:
            raise EditError(f"{self.node!r} is a function and has no weights", node=self.node)
        old = draft.modules[self.node]
        current = old.state_dict()
        if not self.tensors and not self._decoded:
            raise EditError("set_weights needs at least one tensor", node=self.node)
        for k in [*self.tensors, *self._decoded]:
            if k not in current:
                raise EditError(
                    f"{self.node!r} has no tensor {k!r}; it has {sorted(current)}",
                    node=self.node,
                    expected=sorted(current),
                    got=k,
                )
        given = dict(self._decoded)
        given.update({k: t.to_tensor(k, current[k]) for k, t in self.tensors.items()})
        given = {k: like(v, current[k], draft.compute) for k, v in given.items()}  # FP32 weights into a BF16 model
        for k, v in given.items():
            self._check(k, v, current[k])
        module = copy.deepcopy(old)
        with torch.no_grad():
            module.load_state_dict({**current, **given})
        draft.modules[self.node] = module

    def _check(self, k: str, v: torch.Tensor, ref: torch.Tensor) -> None:
        if tuple(v.shape) != tuple(ref.shape):
            raise EditError(
                f"tensor {k!r} of {self.node!r} has shape {list(ref.shape)}, got {list(v.shape)}",
                node=self.node,
                expected=list(ref.shape),
                got=list(v.shape),
            )
        if v.dtype != ref.dtype:
            raise EditError(
                f"tensor {k!r} of {self.node!r} is {TORCH_TO_OIP.get(ref.dtype)}, got "
                f"{TORCH_TO_OIP.get(v.dtype, str(v.dtype))}",
                node=self.node,
                expected=TORCH_TO_OIP.get(ref.dtype),
                got=TORCH_TO_OIP.get(v.dtype, str(v.dtype)),
            )
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise EditError(f"tensor {k!r} of {self.node!r} contains NaN or infinity", node=self.node)


class CastOp(BaseOp):
    """Compute in another datatype from now on (FP16, BF16; FP32 to go back): every tensor is copied and cast,
    inputs and outputs keep their wire datatype (precision.py)."""

    op: Literal["cast"] = "cast"
    datatype: ComputeDatatype

    def describe(self) -> str:
        return f"cast to {self.datatype}"

    def apply(self, draft: Draft) -> None:
        target = None if self.datatype == "FP32" else self.datatype
        if target == draft.compute:
            raise EditError(f"the model computes in {self.datatype} already")
        draft.modules = cast_modules(draft.modules, self.datatype)
        for i, n in enumerate(draft.nodes):  # parameter nodes declare their datatype
            if n.parameter is not None and n.parameter.datatype in COMPUTE:
                draft.nodes[i] = n.model_copy(
                    update={"parameter": n.parameter.model_copy(update={"datatype": self.datatype})}
                )
        draft.compute = target


Op = Annotated[InsertOp | RemoveOp | ReplaceOp | SetWeightsOp | CastOp, Field(discriminator="op")]

"""The architecture spec: a model as data (signature + nodes), and its translation into a torch.fx graph.

Every model, from the zoo, a JSON file or an edit, is a `ModelSpec` plus one module per layer node. The spec is
the source of truth for ids, order and wiring; the fx `GraphModule` is derived from it for execution, so node
ids stay stable across versions however the graph is rewritten.
"""

from __future__ import annotations

import keyword
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import torch
import torch.fx as fx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from torch import nn

from .catalogue import LayerSpec, format_validation_error
from .datatypes import NAMES
from .dtypes import OIP_TO_TORCH
from .errors import SpecError

SPEC_FORMAT = 1
_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# Attribute names a submodule of a GraphModule must not shadow: class attributes and also the instance
# attributes nn.Module/GraphModule set in __init__ (`_modules`, `_graph`, `meta`, ...), which would break the build.
_RESERVED = (
    frozenset(dir(fx.GraphModule)) | frozenset(dir(fx.GraphModule(nn.Module(), fx.Graph())))
    | frozenset(keyword.kwlist) | {"self"}
)  # fmt: skip

Datatype = Literal[*NAMES]  # type: ignore[valid-type]
Dim = Annotated[int, Field(ge=-1, le=1 << 20)]


def check_id(node_id: str, what: str = "node id") -> str:
    if not _ID.match(node_id) or node_id in _RESERVED:
        raise ValueError(
            f"{what} {node_id!r} must be a Python identifier of at most 64 characters and not a reserved name"
        )
    return node_id


class TensorSpec(BaseModel):
    """One input or output of the model signature; -1 marks a variable dimension (dimension 0 is the batch)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    datatype: Datatype = "FP32"
    shape: Annotated[tuple[Dim, ...], Field(min_length=1, max_length=8)]

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_id(v, "tensor name")

    @field_validator("shape")
    @classmethod
    def _batch(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if v[0] != -1:
            raise ValueError("dimension 0 is the batch dimension and must be -1")
        if any(d == 0 for d in v):
            raise ValueError("dimensions must be positive or -1")
        return v

    @property
    def dtype(self) -> torch.dtype:
        return OIP_TO_TORCH[self.datatype]


class OutputSpec(BaseModel):
    """An output of the model: which node produces it; datatype and shape are filled in by shape propagation."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    node: str
    datatype: Datatype | None = None
    shape: tuple[int, ...] | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_id(v, "output name")


class NodeSpec(BaseModel):
    """A layer from the catalogue or an allowed function, with the ids of the nodes it reads."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    layer: LayerSpec | None = None
    function: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    inputs: Annotated[tuple[str, ...], Field(min_length=1, max_length=64)]

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        return check_id(v)

    @model_validator(mode="after")
    def _one_kind(self) -> NodeSpec:
        if (self.layer is None) == (self.function is None):
            raise ValueError("a node has exactly one of 'layer' or 'function'")
        if self.function is not None:
            fn = FUNCTIONS.get(self.function)
            if fn is None:
                raise ValueError(f"unknown function {self.function!r}; allowed: {', '.join(FUNCTIONS)}")
            fn.check(self.inputs, self.args)
        elif self.args:
            raise ValueError("'args' is only for function nodes")
        if self.layer is not None and len(self.inputs) != 1:
            raise ValueError("a layer node reads exactly one input")
        return self

    @property
    def kind(self) -> str:
        return "layer" if self.layer is not None else "function"


class ModelSpec(BaseModel):
    """A whole model. Nodes are listed in topological order (every input defined before use)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    format: Literal[1] = SPEC_FORMAT
    name: str = "model"
    inputs: Annotated[tuple[TensorSpec, ...], Field(min_length=1, max_length=16)]
    outputs: Annotated[tuple[OutputSpec, ...], Field(min_length=1, max_length=16)]
    nodes: Annotated[tuple[NodeSpec, ...], Field(max_length=10_000)]

    def node(self, node_id: str) -> NodeSpec | None:
        for n in self.nodes:
            if n.id == node_id:
                return n
        return None


@dataclass(frozen=True)
class Function:
    """An allowed functional op: arity, allowed keyword args, and the torch callable behind it."""

    name: str
    fn: Callable[..., torch.Tensor]
    min_inputs: int
    max_inputs: int
    arg_names: tuple[str, ...] = ()

    def check(self, inputs: tuple[str, ...], args: Mapping[str, Any]) -> None:
        if not self.min_inputs <= len(inputs) <= self.max_inputs:
            raise ValueError(
                f"function {self.name} takes {self.min_inputs}..{self.max_inputs} inputs, got {len(inputs)}"
            )
        for k, v in args.items():
            if k not in self.arg_names:
                raise ValueError(f"function {self.name} has no argument {k!r}; allowed: {list(self.arg_names)}")
            if not isinstance(v, int) or isinstance(v, bool) or not -8 <= v <= 8:
                raise ValueError(f"function {self.name} argument {k!r} must be an integer in -8..8")

    def call_args(self, nodes: list[fx.Node], args: Mapping[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if self.name in ("cat", "stack"):
            return (tuple(nodes),), dict(args)
        return tuple(nodes), dict(args)


def _sum(*xs: torch.Tensor) -> torch.Tensor:
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out


FUNCTIONS: dict[str, Function] = {
    f.name: f
    for f in (
        Function("add", operator.add, 2, 2),
        Function("sub", operator.sub, 2, 2),
        Function("mul", operator.mul, 2, 2),
        Function("sum", _sum, 2, 64),
        Function("cat", torch.cat, 1, 64, ("dim",)),
        Function("stack", torch.stack, 1, 64, ("dim",)),
        Function("flatten", torch.flatten, 1, 1, ("start_dim", "end_dim")),
        Function("relu", torch.relu, 1, 1),
    )
}


def parse_spec(data: Any) -> ModelSpec:
    """Validate a JSON spec (structure only; `lint` checks the wiring)."""
    if isinstance(data, ModelSpec):
        return data
    try:
        spec = ModelSpec.model_validate(data)
    except ValidationError as e:
        raise SpecError(format_validation_error(e, "spec")) from None
    lint(spec)
    return spec


def lint(spec: ModelSpec) -> None:
    """Wiring checks that do not need tensors: unique ids, defined-before-use, outputs, reachability."""
    names: set[str] = set()
    for t in spec.inputs:
        if t.name in names:
            raise SpecError(f"input name {t.name!r} is used twice", node=t.name)
        names.add(t.name)
    for n in spec.nodes:
        if n.id in names:
            raise SpecError(f"node id {n.id!r} is used twice", node=n.id)
        for i in n.inputs:
            if i not in names:
                raise SpecError(f"node {n.id!r} reads {i!r}, which is not defined before it", node=n.id)
        names.add(n.id)
    out_names: set[str] = set()
    for o in spec.outputs:
        if o.name in out_names:
            raise SpecError(f"output name {o.name!r} is used twice", node=o.name)
        out_names.add(o.name)
        if o.node not in names:
            raise SpecError(f"output {o.name!r} comes from {o.node!r}, which does not exist", node=o.node)
    clash = out_names & (names - {o.node for o in spec.outputs if o.node == o.name})
    for name in clash:
        raise SpecError(f"output name {name!r} is also a node or input id", node=name)


def build_graph_module(spec: ModelSpec, modules: Mapping[str, nn.Module]) -> fx.GraphModule:
    """The runnable fx graph of a spec. Modules are shared, not copied: versions share unchanged layers.

    `forward` takes the inputs in signature order and always returns a tuple in output order.
    """
    graph = fx.Graph()
    env: dict[str, fx.Node] = {}
    for t in spec.inputs:
        env[t.name] = graph.placeholder(t.name)
    root: dict[str, Any] = {}
    for n in spec.nodes:
        ins = [env[i] for i in n.inputs]
        if n.layer is not None:
            root[n.id] = modules[n.id]
            env[n.id] = graph.call_module(n.id, tuple(ins))
        else:
            fn = FUNCTIONS[n.function]  # type: ignore[index]
            args, kwargs = fn.call_args(ins, n.args)
            env[n.id] = graph.call_function(fn.fn, args, kwargs)
    graph.output(tuple(env[o.node] for o in spec.outputs))
    graph.lint()
    return fx.GraphModule(root, graph, class_name=re.sub(r"\W", "_", spec.name) or "model")

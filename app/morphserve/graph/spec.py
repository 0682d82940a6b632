"""The architecture spec: a model as data (signature + nodes), and its translation into a torch.fx graph.

Every model, from the zoo, a JSON file or an edit, is a `ModelSpec` plus one module per layer node. The spec is
the source of truth for ids, order and wiring; the fx `GraphModule` is derived from it for execution, so node
ids stay stable across versions however the graph is rewritten.
"""

from __future__ import annotations

import functools
import keyword
import re
from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

import torch
import torch.fx as fx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from torch import nn

from .catalogue import LayerSpec, format_validation_error
from .dtypes import OIP_TO_TORCH, Datatype
from .errors import SpecError
from .functions import FUNCTIONS, Args, Function, SizeRef
from .parameters import ParameterSpec
from .precision import to_wire

SPEC_FORMAT: Final = 1
_FLOATS = ("FP16", "BF16", "FP32", "FP64")
_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# Attribute names a submodule of a GraphModule must not shadow: class attributes and also the instance
# attributes nn.Module/GraphModule set in __init__ (`_modules`, `_graph`, `meta`, ...), which would break the build.
_RESERVED = (
    frozenset(dir(fx.GraphModule))
    | frozenset(dir(fx.GraphModule(nn.Module(), fx.Graph())))
    | frozenset(keyword.kwlist)
    | {"self"}
)

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
    """A catalogue layer, an allowed function or a parameter, with the ids of the nodes it reads.

    How many inputs a layer reads comes from its catalogue entry (most read one; MultiheadAttention reads
    query, key and value); a function's from the allowlist; a parameter reads none.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    layer: LayerSpec | None = None
    function: str | None = None
    parameter: ParameterSpec | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    inputs: Annotated[tuple[str, ...], Field(max_length=64)] = ()

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        return check_id(v)

    @model_validator(mode="after")
    def _one_kind(self) -> NodeSpec:
        problem = node_problem(self)
        if problem is not None:
            raise ValueError(f"node {self.id!r}: {problem}")
        return self

    @property
    def kind(self) -> Literal["layer", "function", "parameter"]:
        return "layer" if self.layer is not None else "function" if self.function is not None else "parameter"

    @property
    def has_module(self) -> bool:
        """Layers and parameters own a module (their tensors); functions do not."""
        return self.function is None

    def build_module(self) -> nn.Module:
        """A fresh module for a layer or parameter node (the caller seeds the RNG and loads weights)."""
        if self.layer is not None:
            return self.layer.build()
        if self.parameter is not None:
            return self.parameter.build()
        raise SpecError(f"node {self.id!r} is a function and has no module", node=self.id)

    def function_entry(self) -> Function:
        """The allowlist entry of a function node (a node that passed validation names an allowed one)."""
        if self.function is None:
            raise SpecError(f"node {self.id!r} is not a function", node=self.id)
        return FUNCTIONS[self.function]

    def parsed_args(self) -> Args:
        """The function's arguments, validated by its schema (only for function nodes)."""
        return self.function_entry().parse(self.inputs, self.args)

    def label(self) -> str:
        if self.layer is not None:
            return self.layer.label()
        if self.parameter is not None:
            return self.parameter.label()
        return str(self.function)


def node_problem(n: NodeSpec) -> str | None:
    """What is wrong with one node on its own (kind, input count, function args), or None."""
    kinds = sum(x is not None for x in (n.layer, n.function, n.parameter))
    if kinds != 1:
        return "a node has exactly one of 'layer', 'function' or 'parameter'"
    if n.function is None and n.args:
        return "'args' is only for function nodes"
    if n.layer is not None:
        lo, hi = n.layer.input_range()
        if not lo <= len(n.inputs) <= hi:
            want = str(lo) if lo == hi else f"{lo}..{hi}"
            return f"a {n.layer.type} layer reads {want} input(s), got {len(n.inputs)}"
    elif n.parameter is not None:
        if n.inputs:
            return "a parameter node has no inputs"
    elif n.function is not None:  # the one kind left
        fn = FUNCTIONS.get(n.function)
        if fn is None:
            return f"unknown function {n.function!r}; allowed: {', '.join(FUNCTIONS)}"
        try:
            fn.parse(n.inputs, n.args)
        except ValueError as e:
            return str(e)
    return None


class ModelSpec(BaseModel):
    """A whole model. Nodes are listed in topological order (every input defined before use)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    format: Literal[1] = SPEC_FORMAT
    name: str = "model"
    inputs: Annotated[tuple[TensorSpec, ...], Field(min_length=1, max_length=16)]
    outputs: Annotated[tuple[OutputSpec, ...], Field(min_length=1, max_length=16)]
    nodes: Annotated[tuple[NodeSpec, ...], Field(max_length=10_000)]
    #: The datatype the layers compute in, when it is not the inputs' (e.g. BF16 for FP32 inputs): see precision.py.
    compute_datatype: Literal["FP32", "FP16", "BF16", "FP64"] | None = None

    def node(self, node_id: str) -> NodeSpec | None:
        for n in self.nodes:
            if n.id == node_id:
                return n
        return None


def parse_spec(data: Any) -> ModelSpec:
    """Validate a JSON spec (structure only; `lint` checks the wiring)."""
    if isinstance(data, ModelSpec):
        return data
    try:
        spec = ModelSpec.model_validate(data)
    except ValidationError as e:
        raise SpecError(format_validation_error(e, "spec"), node=_bad_node(data, e)) from None
    lint(spec)
    return spec


def _bad_node(data: Any, e: ValidationError) -> str | None:
    """The id of the node the first validation error is about, when it is one (so the API can name it)."""
    loc = e.errors()[0]["loc"]
    if len(loc) >= 2 and loc[0] == "nodes" and isinstance(loc[1], int) and isinstance(data, dict):
        nodes = data.get("nodes")
        if isinstance(nodes, list | tuple) and loc[1] < len(nodes) and isinstance(nodes[loc[1]], dict):
            node_id = nodes[loc[1]].get("id")
            return node_id if isinstance(node_id, str) else None
    return None


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
        problem = node_problem(n)  # again: edits rewrite nodes with model_copy, which does not re-validate
        if problem is not None:
            raise SpecError(f"node {n.id!r}: {problem}", node=n.id)
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


def _size_node(graph: fx.Graph, ins: list[fx.Node], r: SizeRef) -> fx.Node:
    """The graph node that reads the size a SizeRef names, when the graph runs."""
    return graph.call_method("size", (ins[r.input], r.dim))


def build_graph_module(spec: ModelSpec, modules: Mapping[str, nn.Module]) -> fx.GraphModule:
    """The runnable fx graph of a spec. Modules are shared, not copied: versions share unchanged layers.

    `forward` takes the inputs in signature order and always returns a tuple in output order.
    """
    graph = fx.Graph()
    env: dict[str, fx.Node] = {}
    compute = spec.compute_datatype
    for t in spec.inputs:
        env[t.name] = graph.placeholder(t.name)
        if compute is not None and t.datatype in _FLOATS and t.datatype != compute:  # cast at the boundary
            env[t.name] = graph.call_method("to", (env[t.name], OIP_TO_TORCH[compute]))
    root: dict[str, nn.Module] = {}
    for n in spec.nodes:
        ins = [env[i] for i in n.inputs]
        if n.has_module:
            root[n.id] = modules[n.id]
            env[n.id] = graph.call_module(n.id, tuple(ins))
        else:
            fn = n.function_entry()
            kwargs = fn.kwargs(n.parsed_args(), functools.partial(_size_node, graph, ins))
            env[n.id] = graph.call_function(fn.impl, tuple(fn.data_inputs(ins)), kwargs)
    outs = [env[o.node] for o in spec.outputs]
    if compute is not None:
        outs = [graph.call_function(to_wire, (n,)) for n in outs]
    graph.output(tuple(outs))
    graph.lint()
    return fx.GraphModule(root, graph, class_name=re.sub(r"\W", "_", spec.name) or "model")

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
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from torch import nn

from .catalogue import LayerSpec, format_validation_error
from .dtypes import OIP_TO_TORCH, Datatype
from .errors import SpecError
from .functions import Entry, SizeRef, lookup, unknown
from .parameters import ParameterSpec
from .precision import to_wire

SPEC_FORMAT: Final = 1
_FLOATS = ("FP16", "BF16", "FP32", "FP64")
_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")  # always with fullmatch: `$` would let a trailing newline in
MAX_WIRE_NAME = 128
# Attribute names a submodule of a GraphModule must not shadow: class attributes and also the instance
# attributes nn.Module/GraphModule set in __init__ (`_modules`, `_graph`, `meta`, ...), which would break the build.
_RESERVED = (
    frozenset(dir(fx.GraphModule))
    | frozenset(dir(fx.GraphModule(nn.Module(), fx.Graph())))
    | frozenset(keyword.kwlist)
    | {"self"}
)

Dim = Annotated[int, Field(ge=-1, le=1 << 20)]


def is_id(text: str) -> bool:
    """A valid node id: a Python identifier of at most 64 characters (the whole string: no trailing newline)."""
    return _ID.fullmatch(text) is not None and text not in _RESERVED


def check_id(node_id: str, what: str = "node id") -> str:
    if not is_id(node_id):
        raise ValueError(
            f"{what} {node_id!r} must be a Python identifier of at most 64 characters and not a reserved name"
        )
    return node_id


def check_wire_name(name: str, what: str = "tensor name") -> str:
    """What a client calls an input or output: any printable string of 1 to 128 characters (`input.1`, `INPUT__0`,
    `input:0`, `meta`). Wire names are kept apart from node ids: the fx graph gets sanitised names of its own."""
    if not 1 <= len(name) <= MAX_WIRE_NAME or not name.isprintable():
        raise ValueError(f"{what} {name!r} must be 1 to {MAX_WIRE_NAME} printable characters")
    return name


class TensorSpec(BaseModel):
    """One input or output of the model signature; -1 marks a variable dimension (dimension 0 is the batch)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    datatype: Datatype = "FP32"
    shape: Annotated[tuple[Dim, ...], Field(min_length=1, max_length=8)]
    #: The smallest and largest size each dimension accepts (-1 in max_shape: no limit), where the model bounds
    #: a variable dimension (a buffer sliced to the input's length, a convolution that needs a minimum length).
    min_shape: tuple[Annotated[int, Field(ge=1, le=1 << 20)], ...] | None = None
    max_shape: tuple[Dim, ...] | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_wire_name(v, "tensor name")

    @field_validator("shape")
    @classmethod
    def _batch(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if v[0] != -1:
            raise ValueError("dimension 0 is the batch dimension and must be -1")
        if any(d == 0 for d in v):
            raise ValueError("dimensions must be positive or -1")
        return v

    @model_validator(mode="after")
    def _bounds(self) -> TensorSpec:
        for what, b in (("min_shape", self.min_shape), ("max_shape", self.max_shape)):
            if b is None:
                continue
            if len(b) != len(self.shape):
                raise ValueError(f"{what} has {len(b)} dimensions, shape {len(self.shape)}")
            for d, (s, x) in enumerate(zip(self.shape, b, strict=True)):
                if s != -1 and x != s and not (what == "max_shape" and x == -1):
                    raise ValueError(f"{what}[{d}] is {x}, but dimension {d} is fixed at {s}")
        lo, hi = self.bounds()
        if any(h != -1 and h < low for low, h in zip(lo, hi, strict=True)):
            raise ValueError("max_shape is below min_shape")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Bounds only where the model has them: a spec without them reads as it always did."""
        data: dict[str, Any] = handler(self)
        for k in ("min_shape", "max_shape"):
            if data.get(k, 0) is None:
                del data[k]
        return data

    def bounds(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(smallest, largest) size per dimension; -1 in the largest: no limit."""
        lo = self.min_shape or tuple(1 if d == -1 else d for d in self.shape)
        hi = self.max_shape or self.shape
        return lo, hi

    def example_shape(self, batch: int = 1, size: int = 32) -> tuple[int, ...]:
        """A shape this input accepts: `batch` rows, each other variable dimension `size` moved inside its bounds."""
        lo, hi = self.bounds()
        out = []
        for i, d in enumerate(self.shape):
            if i == 0:
                out.append(batch)
            elif d != -1:
                out.append(d)
            else:
                want = max(size, lo[i])
                out.append(min(want, hi[i]) if hi[i] != -1 else want)
        return tuple(out)

    def shape_problem(self, shape: tuple[int, ...]) -> str | None:
        """Why a tensor of `shape` cannot be this input (rank, a fixed size, a bound), or None."""
        if len(shape) != len(self.shape) or 0 in shape:
            return f"expected shape {list(self.shape)}, got {list(shape)}"
        lo, hi = self.bounds()
        for d, (want, got, low, high) in enumerate(zip(self.shape, shape, lo, hi, strict=True)):
            if want != -1 and got != want:
                return f"expected shape {list(self.shape)}, got {list(shape)}"
            if got < low:
                return f"dimension {d} is {got}; this model accepts at least {low}"
            if high != -1 and got > high:
                return f"dimension {d} is {got}; this model accepts at most {high}"
        return None

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
        return check_wire_name(v, "output name")


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
    inputs: Annotated[tuple[Annotated[str, Field(max_length=MAX_WIRE_NAME)], ...], Field(max_length=64)] = ()
    #: Where the node came from in the user's module tree (dot-separated, e.g. `encoder.layer.0.attention.query`;
    #: for a function, the module that called it), as import recorded it: what the page groups by. Display only:
    #: nothing runs or resolves by it.
    path: str | None = Field(None, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")

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

    def function_entry(self) -> Entry:
        """The vocabulary entry of a function node (a node that passed validation names a known one)."""
        entry = lookup(self.function) if self.function is not None else None
        if entry is None:
            raise SpecError(f"node {self.id!r} is not a function of the vocabulary", node=self.id)
        return entry

    def parsed_args(self) -> Any:
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
        fn = lookup(n.function)
        if fn is None:
            return unknown(n.function)
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


def placeholder_name(index: int, name: str) -> str:
    """The fx name of input `index`: its wire name where that is a safe identifier, else `input_<index>` (wire
    names such as `input.1` or `meta` never reach fx's generated source)."""
    return name if is_id(name) and not name.startswith("input_") else f"input_{index}"


def input_device(x: torch.Tensor) -> torch.device:
    """Where the model runs: the device of its first input (tensors the graph creates go there too)."""
    return x.device


def build_graph_module(spec: ModelSpec, modules: Mapping[str, nn.Module]) -> fx.GraphModule:
    """The runnable fx graph of a spec. Modules are shared, not copied: versions share unchanged layers.

    `forward` takes the inputs in signature order and always returns a tuple in output order.
    """
    graph = fx.Graph()
    env: dict[str, fx.Node] = {}
    compute = spec.compute_datatype
    for i, t in enumerate(spec.inputs):
        env[t.name] = graph.placeholder(placeholder_name(i, t.name))
    first = env[spec.inputs[0].name]
    for t in spec.inputs:
        if compute is not None and t.datatype in _FLOATS and t.datatype != compute:  # cast at the boundary
            env[t.name] = graph.call_method("to", (env[t.name], OIP_TO_TORCH[compute]))
    device: list[fx.Node] = []

    def device_node() -> fx.Node:
        if not device:
            device.append(graph.call_function(input_device, (first,)))
        return device[0]

    root: dict[str, nn.Module] = {}
    for n in spec.nodes:
        ins = [env[i] for i in n.inputs]
        if n.has_module:
            root[n.id] = modules[n.id]
            env[n.id] = graph.call_module(n.id, tuple(ins))
        else:
            fn = n.function_entry()
            target, args, kwargs = fn.call(n.parsed_args(), ins, functools.partial(_size_node, graph, ins), device_node)
            env[n.id] = graph.call_function(target, args, kwargs)
    outs = [env[o.node] for o in spec.outputs]
    if compute is not None:
        outs = [graph.call_function(to_wire, (n,)) for n in outs]
    graph.output(tuple(outs))
    graph.lint()
    return fx.GraphModule(root, graph, class_name=re.sub(r"\W", "_", spec.name) or "model")

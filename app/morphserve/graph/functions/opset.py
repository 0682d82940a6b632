"""The Core ATen opset as the function vocabulary: a function node names an operator and overload
(`aten.add.Tensor`) and gives its arguments by the operator's own schema, from PyTorch's registry.

Why the opset and not a hand-written converter per function: `torch.export` followed by `run_decompositions()`
lowers any capturable model to Core ATen, a closed set of functional operators (tagged `core`) that PyTorch
documents as the target for backends. Checking arguments against each operator's schema (types, list lengths,
bounds) makes coverage structural: a model that lowers is a model that loads.

A node is data:

    {"id": "h", "function": "aten.add.Tensor", "inputs": ["x", "fc"],
     "args": {"self": {"input": 0}, "other": {"input": 1}, "alpha": 1}}

`{"input": i}` is the node's i-th input: a tensor where the schema takes a Tensor, a size node (see symbolic.py)
where it takes an int or a float, so sizes known only at run time are graph nodes. Arguments left out take the
schema's default. The server calls only the operator object this table holds for the name (or the guard in
guards.py that checks the arguments first), never anything a bundle names. Operators that are unsafe with hostile
arguments are refused here or bound-checked there; random, training-only, data-dependent and complex-valued
operators are refused by name (`EXCLUDED`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import torch

from ..dtypes import OIP_TO_TORCH, TORCH_TO_OIP
from . import guards

INT64_MIN: Final = -(1 << 63)
INT64_MAX: Final = (1 << 63) - 1
MAX_LIST: Final = 1024  # the longest int list an argument may hold (split sizes, shapes, paddings)
MAX_TENSORS: Final = 64  # the most tensors a Tensor[] argument may name (a node reads at most 64 inputs)

_REQUIRED: Final = object()


@dataclass(frozen=True)
class Ref:
    """The node's input number `input`, where an argument takes a tensor or a run-time size."""

    input: int


@dataclass(frozen=True)
class Param:
    """One schema argument: its name, the kind of value it takes, and its default."""

    name: str
    kind: str  # see _KINDS
    kwarg_only: bool
    default: Any = _REQUIRED


#: Schema types -> the kinds of value a spec may give (Optional types add `?`).
_KINDS: Final[dict[str, str]] = {
    "Tensor": "tensor",
    "Optional[Tensor]": "tensor?",
    "List[Tensor]": "tensors",
    "List[Optional[Tensor]]": "tensors?",
    "int": "int",
    "SymInt": "int",
    "Optional[int]": "int?",
    "Optional[SymInt]": "int?",
    "List[int]": "ints",
    "List[SymInt]": "ints",
    "Optional[List[int]]": "ints?",
    "Optional[List[SymInt]]": "ints?",
    "float": "float",
    "Optional[float]": "float?",
    "List[float]": "floats",
    "Optional[List[float]]": "floats?",
    "number": "scalar",
    "Optional[number]": "scalar?",
    "bool": "bool",
    "Optional[bool]": "bool?",
    "List[bool]": "bools",
    "str": "str",
    "Optional[str]": "str?",
    "ScalarType": "dtype",
    "Optional[ScalarType]": "dtype?",
    "Optional[Layout]": "layout?",
    "Optional[Device]": "device?",
    "Optional[MemoryFormat]": "memory_format?",
}
_MEMORY_FORMATS: Final = {
    "contiguous_format": torch.contiguous_format,
    "preserve_format": torch.preserve_format,
    "channels_last": torch.channels_last,
    "channels_last_3d": torch.channels_last_3d,
}
_MEMORY_FORMAT_NAMES: Final = {v: k for k, v in _MEMORY_FORMATS.items()}
#: The strings an argument may hold, per (operator, argument): a schema says only `str`.
_STRINGS: Final[dict[tuple[str, str], frozenset[str]]] = {
    ("aten.gelu.default", "approximate"): frozenset({"none", "tanh"}),
    ("aten.div.Tensor_mode", "rounding_mode"): frozenset({"trunc", "floor"}),
    ("aten.div.Scalar_mode", "rounding_mode"): frozenset({"trunc", "floor"}),
    ("aten.scatter_reduce.two", "reduce"): frozenset({"sum", "prod", "mean", "amax", "amin"}),
}

#: Core operators a spec may not use, and why (the message a bundle naming one gets).
EXCLUDED: Final[dict[str, str]] = {
    "aten.atan2.out": "it writes into an output argument",
    "aten._native_batch_norm_legit.default": "batch norm in training mode updates its running statistics in place",
    "aten.native_dropout.default": "dropout in training mode is random",
    "aten.rand.default": "a random operator (a served model gives the same answer to the same input)",
    "aten.randn.default": "a random operator (a served model gives the same answer to the same input)",
    "aten.randperm.default": "a random operator (a served model gives the same answer to the same input)",
    "aten._local_scalar_dense.default": "it reads a tensor's value into a Python number (data-dependent)",
    "aten.nonzero.default": "its result's size depends on the values",
    "aten.sym_stride.int": "it exposes a tensor's memory layout",
    "aten.sym_storage_offset.default": "it exposes a tensor's memory layout",
    "aten.sym_is_contiguous.default": "it exposes a tensor's memory layout",
    "aten._fft_r2c.default": "it produces complex tensors, which a spec cannot hold",
    "aten._fft_c2r.default": "it reads complex tensors, which a spec cannot hold",
    "aten._embedding_bag.default": "embedding bags are not supported yet (use an Embedding and a reduction)",
}
#: Operators outside Core ATen that capture keeps whole, and why (documented in docs/API.md).
KEPT: Final[dict[str, str]] = {
    "aten.scaled_dot_product_attention.default": (
        "fused attention kernels are faster than its decomposition, which also breaks on some layouts"
    ),
}

#: Operators run through a guard (guards.py) that checks their run-time arguments first.
_GUARDED: Final[dict[str, Callable[..., Any]]] = {
    "aten.as_strided.default": guards.as_strided,
    "aten.empty.memory_format": guards.empty,
    "aten.empty_strided.default": guards.empty_strided,
    "aten.full.default": guards.full,
    "aten.arange.start_step": guards.arange,
    "aten.repeat.default": guards.repeat,
    "aten.expand.default": guards.expand,
    "aten.constant_pad_nd.default": guards.bounded(torch.ops.aten.constant_pad_nd.default),
    "aten.reflection_pad1d.default": guards.bounded(torch.ops.aten.reflection_pad1d.default),
    "aten.reflection_pad2d.default": guards.bounded(torch.ops.aten.reflection_pad2d.default),
    "aten.reflection_pad3d.default": guards.bounded(torch.ops.aten.reflection_pad3d.default),
    "aten.replication_pad2d.default": guards.bounded(torch.ops.aten.replication_pad2d.default),
    "aten.replication_pad3d.default": guards.bounded(torch.ops.aten.replication_pad3d.default),
    "aten.upsample_bilinear2d.vec": guards.bounded(torch.ops.aten.upsample_bilinear2d.vec),
    "aten.upsample_nearest2d.vec": guards.bounded(torch.ops.aten.upsample_nearest2d.vec),
    "aten.convolution.default": guards.bounded(torch.ops.aten.convolution.default),
    "aten.col2im.default": guards.bounded(torch.ops.aten.col2im.default),
    "aten._adaptive_avg_pool2d.default": guards.bounded(torch.ops.aten._adaptive_avg_pool2d.default),
    "aten._adaptive_avg_pool3d.default": guards.bounded(torch.ops.aten._adaptive_avg_pool3d.default),
    "aten.avg_pool1d.default": guards.bounded(torch.ops.aten.avg_pool1d.default),
    "aten.adaptive_avg_pool1d.default": guards.bounded(torch.ops.aten.adaptive_avg_pool1d.default),
    "aten.avg_pool2d.default": guards.bounded(torch.ops.aten.avg_pool2d.default),
    "aten.avg_pool3d.default": guards.bounded(torch.ops.aten.avg_pool3d.default),
    "aten.max_pool2d_with_indices.default": guards.bounded(torch.ops.aten.max_pool2d_with_indices.default),
    "aten.max_pool3d_with_indices.default": guards.bounded(torch.ops.aten.max_pool3d_with_indices.default),
    "aten.grid_sampler_2d.default": guards.grid_sampler_2d,
    "aten.index.Tensor": guards.index,
    "aten.index_put.default": guards.index_put,
    "aten.index_select.default": guards.index_select,
    "aten.gather.default": guards.gather,
    "aten.scatter.src": guards.scatter_src,
    "aten.scatter.value": guards.scatter_value,
    "aten.scatter_add.default": guards.scatter_add,
    "aten.scatter_reduce.two": guards.scatter_reduce,
    "aten.embedding.default": guards.embedding,
    "aten.masked_scatter.default": guards.masked_scatter,
    "aten.native_group_norm.default": guards.native_group_norm,
    "aten.select_scatter.default": guards.select_scatter,
    "aten.slice_scatter.default": guards.slice_scatter,
    "aten.diagonal.default": guards.diagonal,
    "aten.scaled_dot_product_attention.default": guards.scaled_dot_product_attention,
}


def _returns(schema: torch.FunctionSchema) -> str:
    types = [str(r.type) for r in schema.returns]
    if len(types) == 1 and types[0] == "Tensor":
        return "tensor"
    if len(types) == 1 and types[0] in ("int", "SymInt", "float", "bool", "number"):
        return "scalar"
    if types and all(t in ("Tensor", "List[Tensor]") for t in types):
        return "tuple"
    return "other"


@dataclass(frozen=True)
class AtenArgs:
    """A node's validated arguments (Python values; `Ref` where an input is named), by schema name."""

    values: Mapping[str, Any]


@dataclass(frozen=True)
class AtenOp:
    """One operator of the vocabulary: its schema's parameters and what runs it."""

    name: str
    op: torch._ops.OpOverload
    params: tuple[Param, ...]
    returns: str  # "tensor", "tuple" (read through getitem nodes) or "scalar" (a size node)
    target: Callable[..., Any]  # the operator itself, or its guard
    doc: str = ""
    creates: bool = field(default=False)  # takes a device: created tensors go where the inputs are

    # -- validation -------------------------------------------------------------------------------------------
    def parse(self, inputs: Sequence[str], args: Mapping[str, Any]) -> AtenArgs:
        """The validated arguments; ValueError (one line naming the operator and argument) when malformed."""
        names = {p.name for p in self.params}
        unknown = sorted(set(args) - names)
        if unknown:
            raise ValueError(
                f"function {self.name}: unknown argument(s) {unknown}; its schema takes {[p.name for p in self.params]}"
            )
        n = len(inputs)
        values: dict[str, Any] = {}
        used: set[int] = set()
        for p in self.params:
            if p.name in args:
                try:
                    v = _value(self.name, p, args[p.name], n)
                except ValueError as e:
                    raise ValueError(f"function {self.name}: argument {p.name!r}: {e}") from None
            elif p.default is not _REQUIRED:
                v = p.default
            else:
                raise ValueError(f"function {self.name}: argument {p.name!r} is required")
            values[p.name] = v
            used |= {r.input for r in _refs(v)}
        unused = sorted(set(range(n)) - used)
        if unused:
            raise ValueError(f"function {self.name}: input(s) {unused} are not used by any argument")
        if self.name == "aten.scaled_dot_product_attention.default" and values.get("dropout_p") not in (0, 0.0):
            raise ValueError(f"function {self.name}: dropout_p must be 0 (dropout is random)")
        return AtenArgs(values)

    def input_kinds(self, parsed: Any, n: int) -> list[str]:
        """What each input must be: 'tensor' where a Tensor argument names it, 'scalar' where a number does."""
        kinds = ["tensor"] * n
        for p in self.params:
            if not p.kind.startswith("tensor"):
                for r in _refs(parsed.values[p.name]):
                    kinds[r.input] = "scalar"
        return kinds

    # -- execution --------------------------------------------------------------------------------------------
    def call(
        self, parsed: Any, inputs: Sequence[Any], size: Callable[[Any], Any], device: Callable[[], Any]
    ) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
        """(callable, positional arguments, keyword arguments) with each Ref replaced by the input's value.
        A created tensor goes to the device of the model's inputs (`device()`), whatever the bundle said."""
        pos: list[Any] = []
        kw: dict[str, Any] = {}
        for p in self.params:
            v = _resolve(parsed.values[p.name], inputs)
            if p.kind == "device?":
                v = device()
            if p.kwarg_only:
                kw[p.name] = v
            else:
                pos.append(v)
        return self.target, tuple(pos), kw

    # -- writing ----------------------------------------------------------------------------------------------
    def to_json(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The JSON args of a node from Python values (`Ref` for inputs), leaving out schema defaults."""
        out: dict[str, Any] = {}
        for p in self.params:
            if p.name not in values:
                continue
            v = values[p.name]
            if p.kind in ("device?", "layout?") or (p.kind == "bool?" and p.name == "pin_memory"):
                continue  # where a tensor lives is the server's business; only strided tensors exist
            if p.default is not _REQUIRED and _same(v, p.default):
                continue
            out[p.name] = _json(p, v)
        return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Ref) or isinstance(b, Ref):
        return False
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _json(p: Param, v: Any) -> Any:
    if isinstance(v, Ref):
        return {"input": v.input}
    if v is None:
        return None
    if isinstance(v, list | tuple):
        return [_json(p, x) for x in v]
    if isinstance(v, torch.dtype):
        return TORCH_TO_OIP[v]
    if isinstance(v, torch.memory_format):
        return _MEMORY_FORMAT_NAMES[v]
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
    return v


def _refs(v: Any) -> list[Ref]:
    if isinstance(v, Ref):
        return [v]
    if isinstance(v, list | tuple):
        return [r for x in v for r in _refs(x)]
    return []


def _resolve(v: Any, inputs: Sequence[Any]) -> Any:
    if isinstance(v, Ref):
        return inputs[v.input]
    if isinstance(v, tuple):
        return [_resolve(x, inputs) for x in v]
    return v


# -- argument values ------------------------------------------------------------------------------------------
def _ref(v: Any, n: int) -> Ref:
    if not (isinstance(v, dict) and set(v) == {"input"} and type(v["input"]) is int):
        raise ValueError(f'expected {{"input": i}} naming one of the node\'s inputs, got {_show(v)}')
    i = v["input"]
    if not 0 <= i < n:
        raise ValueError(f"names input {i}, but the node has {n} input(s)")
    return Ref(i)


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _int(v: Any, n: int) -> int | Ref:
    if isinstance(v, dict):
        return _ref(v, n)
    if type(v) is not int:
        raise ValueError(f"expected an integer, got {_show(v)}")
    if not INT64_MIN <= v <= INT64_MAX:
        raise ValueError(f"{v} is outside the 64-bit range")
    return v


def _float(v: Any, n: int) -> float | int | Ref:
    if isinstance(v, dict):
        return _ref(v, n)
    if v in ("inf", "-inf", "nan"):
        return float(v)
    if type(v) is int:
        if not INT64_MIN <= v <= INT64_MAX:
            raise ValueError(f"{v} is outside the 64-bit range")
        return v
    if type(v) is float:
        if not math.isfinite(v):
            raise ValueError('infinities and NaN are written "inf", "-inf" and "nan"')
        return v
    raise ValueError(f"expected a number, got {_show(v)}")


def _list(v: Any, limit: int) -> list[Any]:
    if not isinstance(v, list | tuple):
        raise ValueError(f"expected a list, got {_show(v)}")
    if len(v) > limit:
        raise ValueError(f"a list of at most {limit} values, got {len(v)}")
    return list(v)


def _value(op: str, p: Param, v: Any, n: int) -> Any:
    kind = p.kind
    if kind.endswith("?") and v is None:
        return None
    base = kind.rstrip("?")
    if base == "tensor":
        return _ref(v, n)
    if base == "tensors":
        items = _list(v, MAX_TENSORS)
        if kind == "tensors?":
            return tuple(None if x is None else _ref(x, n) for x in items)
        return tuple(_ref(x, n) for x in items)
    if base == "int":
        return _int(v, n)
    if base == "ints":
        return tuple(_int(x, n) for x in (_list(v, MAX_LIST) if not isinstance(v, int) else [v]))
    if base == "float":
        return _float(v, n)
    if base == "floats":
        return tuple(_float(x, n) for x in _list(v, 8))
    if base == "scalar":
        return v if type(v) is bool else _float(v, n)
    if base == "bool":
        if type(v) is not bool:
            raise ValueError(f"expected true or false, got {_show(v)}")
        return v
    if base == "bools":
        items = _list(v, 8)
        if any(type(x) is not bool for x in items):
            raise ValueError("expected a list of true/false")
        return tuple(items)
    if base == "str":
        allowed = _STRINGS.get((op, p.name), frozenset())
        if v not in allowed:
            raise ValueError(f"expected one of {sorted(allowed)}, got {_show(v)}")
        return v
    if base == "dtype":
        if v not in OIP_TO_TORCH:
            raise ValueError(f"expected a datatype ({', '.join(OIP_TO_TORCH)}), got {_show(v)}")
        return OIP_TO_TORCH[v]
    if base == "memory_format":
        if v not in _MEMORY_FORMATS:
            raise ValueError(f"expected one of {sorted(_MEMORY_FORMATS)}, got {_show(v)}")
        return _MEMORY_FORMATS[v]
    if base == "layout":
        if v != "strided":
            raise ValueError(f"only strided tensors exist here, got {_show(v)}")
        return None
    if base == "device":
        raise ValueError("a created tensor goes where the model runs; leave 'device' out")
    raise ValueError(f"arguments of kind {kind} are not supported")  # pragma: no cover - filtered in _entry


def _default(p: Any) -> Any:
    if not p.has_default_value():
        return _REQUIRED
    d = p.default_value
    if isinstance(d, list):
        return tuple(d)
    return d


def _entry(name: str, op: torch._ops.OpOverload, doc: str = "") -> AtenOp | str:
    """The vocabulary entry of one operator, or why it cannot be one."""
    params = []
    for a in op._schema.arguments:
        if a.alias_info is not None and a.alias_info.is_write:
            return "it writes into an argument"
        kind = _KINDS.get(str(a.real_type))
        if kind is None:
            return f"its argument {a.name!r} is a {a.real_type}, which a spec cannot hold"
        params.append(Param(a.name, kind, a.kwarg_only, _default(a)))
    returns = _returns(op._schema)
    if returns == "other":
        return "it does not return tensors or a size"
    target = _GUARDED.get(name, op)
    creates = any(p.kind == "device?" for p in params)
    return AtenOp(name, op, tuple(params), returns, target, doc, creates)


def _build() -> tuple[dict[str, AtenOp], dict[str, str]]:
    ops: dict[str, AtenOp] = {}
    refused: dict[str, str] = dict(EXCLUDED)
    found: list[tuple[str, torch._ops.OpOverload]] = []
    # Every registered schema, not dir(torch.ops.aten), which lists only the packets loaded so far.
    for schema in torch._C._jit_get_all_schemas():
        if not schema.name.startswith("aten::"):
            continue
        packet_name, overload = schema.name[len("aten::") :], schema.overload_name or "default"
        packet = getattr(torch.ops.aten, packet_name, None)
        op = getattr(packet, overload, None) if packet is not None else None
        if isinstance(op, torch._ops.OpOverload) and torch.Tag.core in op.tags:
            found.append((f"aten.{packet_name}.{overload}", op))
    for name in KEPT:
        _, packet_name, overload = name.split(".")
        found.append((name, getattr(getattr(torch.ops.aten, packet_name), overload)))
    for name, op in sorted(set(found)):
        if name in EXCLUDED:
            continue
        if "backward" in name:
            refused[name] = "a training kernel (gradients), not part of inference"
            continue
        entry = _entry(name, op, KEPT.get(name, ""))
        if isinstance(entry, str):
            refused[name] = entry
        else:
            ops[name] = entry
    return ops, refused


#: The vocabulary: operator name -> entry; and the operators of the opset that are refused, with the reason.
OPSET, REFUSED = _build()


def refusal(name: str) -> str:
    """Why a function name is not in the vocabulary (for a one-line error)."""
    if name in REFUSED:
        return f"{name} is refused: {REFUSED[name]}"
    return f"{name} is not a Core ATen operator"

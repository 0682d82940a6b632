"""ATen operations of an exported graph -> allowlisted functions with constant arguments.

Each converter reads one ATen call (arguments bound by its schema) and says what it is in spec terms: a function
node (`Emit`), a no-op whose value is its input (`Alias`: contiguous, clone, dropout in eval, casts to the same
dtype), or a refusal naming the op. Sizes that are symbolic (the batch) are resolved by the walker's
`Sizes` helper into -1 or `{"input": i, "dim": d}` references.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.fx as fx

from morphserve.graph.dtypes import TORCH_TO_OIP

INT64_BIG = 1 << 62  # slice ends at or beyond this mean "to the end"


class Refused(Exception):
    """The operation cannot be expressed in a spec; the message names it."""


@dataclass
class Emit:
    function: str
    inputs: list[Any]  # fx nodes (tensors) in the function's input order
    args: dict[str, Any] = field(default_factory=dict)
    first_of_tuple: bool = False  # the ATen op returns a tuple, of which only element 0 is used


@dataclass
class Alias:
    source: fx.Node


class Sizes(Protocol):
    """Resolves symbolic sizes for one node being converted (implemented by the walker)."""

    def shape(self, values: Any, data: list[fx.Node], infer: bool = True) -> list[Any]: ...

    def expand(self, values: Any, source: fx.Node, data: list[fx.Node]) -> list[Any]: ...

    def index(self, value: Any, data: list[fx.Node]) -> Any: ...


Converter = Callable[[dict[str, Any], Sizes, fx.Node], "Emit | Alias"]
CONVERTERS: dict[str, Converter] = {}


def bind(node: fx.Node) -> dict[str, Any]:
    """The node's arguments by schema name, defaults filled in."""
    schema = node.target._schema  # type: ignore[union-attr]
    out: dict[str, Any] = {}
    for i, a in enumerate(schema.arguments):
        if i < len(node.args):
            out[a.name] = node.args[i]
        elif a.name in node.kwargs:
            out[a.name] = node.kwargs[a.name]
        elif a.has_default_value():
            out[a.name] = a.default_value
        else:
            out[a.name] = None
    return out


def op_name(node: fx.Node) -> str:
    """`view`, `add_`, ... (the overload packet's name)."""
    t = node.target
    packet = getattr(t, "_overloadpacket", None)
    return packet.__name__ if packet is not None else getattr(t, "__name__", str(t))


def is_tensor(v: Any) -> bool:
    return isinstance(v, fx.Node) and isinstance(v.meta.get("val"), torch.Tensor)


def is_symbolic(v: Any) -> bool:
    return isinstance(v, fx.Node) and isinstance(v.meta.get("val"), torch.SymInt | torch.SymFloat | torch.SymBool)


def scalar(v: Any, what: str = "operand") -> int | float | str:
    """A constant scalar argument as JSON (infinities as strings); refuses run-time values."""
    if isinstance(v, fx.Node) and isinstance(val(v), int | float) and not isinstance(val(v), bool):
        v = val(v)
    if is_symbolic(v) or isinstance(v, fx.Node):
        raise Refused(f"a {what} computed at run time from a tensor size or value")
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        if math.isnan(v):
            raise Refused(f"a NaN {what}")
        return "inf" if v == math.inf else "-inf" if v == -math.inf else v
    raise Refused(f"a {what} of type {type(v).__name__}")


def dtype_name(d: Any) -> str:
    if d not in TORCH_TO_OIP:
        raise Refused(f"datatype {d}")
    return TORCH_TO_OIP[d]


def val(n: Any) -> Any:
    return n.meta.get("val") if isinstance(n, fx.Node) else n


def ints(v: Any, what: str) -> list[int]:
    v = [v] if isinstance(v, int | fx.Node) else list(v)
    v = [val(x) if isinstance(x, fx.Node) and isinstance(val(x), int) else x for x in v]
    if any(isinstance(x, fx.Node) for x in v):
        raise Refused(f"a {what} computed at run time")
    return [int(x) for x in v]


def converts(*names: str) -> Callable[[Converter], Converter]:
    def deco(fn: Converter) -> Converter:
        for n in names:
            CONVERTERS[n] = fn
        return fn

    return deco


# -- no-ops ---------------------------------------------------------------------------------------------------
@converts("contiguous", "clone", "alias", "detach", "lift_fresh_copy", "lift_fresh", "_assert_tensor_metadata")
def _noop(a: dict[str, Any], s: Sizes, n: fx.Node) -> Alias:
    return Alias(n.args[0])  # type: ignore[arg-type]


@converts("dropout", "feature_dropout", "alpha_dropout", "feature_alpha_dropout")
def _dropout(a: dict[str, Any], s: Sizes, n: fx.Node) -> Alias:
    if a["train"]:
        raise Refused("dropout in training mode (call it with training=self.training)")
    return Alias(a["input"])


@converts("_to_copy", "to")
def _to(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit | Alias:
    x = a["self"]
    want, have = val(n).dtype, val(x).dtype
    if want == have:
        return Alias(x)
    return Emit("to", [x], {"datatype": dtype_name(want)})


@converts("type_as")
def _type_as(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit | Alias:
    x = a["self"]
    if val(n).dtype == val(x).dtype:
        return Alias(x)
    return Emit("to", [x], {"datatype": dtype_name(val(n).dtype)})


# -- views and shapes -----------------------------------------------------------------------------------------
@converts("view", "reshape", "_unsafe_view", "view_copy", "_reshape_alias")
def _reshape(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    x = a["self"]
    shape = a.get("size", a.get("shape"))
    return Emit("reshape", [x], {"shape": s.shape(shape, [x])})


@converts("permute")
def _permute(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    return Emit("permute", [a["self"]], {"dims": ints(a["dims"], "permutation")})


@converts("transpose", "swapaxes", "swapdims")
def _transpose(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    d0, d1 = a.get("dim0", a.get("axis0")), a.get("dim1", a.get("axis1"))
    return Emit("transpose", [a["self"]], {"dim0": d0, "dim1": d1})


@converts("t")
def _t(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit | Alias:
    if val(a["self"]).dim() < 2:
        return Alias(a["self"])
    return Emit("transpose", [a["self"]], {"dim0": 0, "dim1": 1})


@converts("flatten")
def _flatten(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    return Emit("flatten", [a["self"]], {"start_dim": a["start_dim"], "end_dim": a["end_dim"]})


@converts("unflatten")
def _unflatten(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    return Emit("unflatten", [a["self"]], {"dim": a["dim"], "sizes": s.shape(a["sizes"], [a["self"]])})


@converts("unsqueeze")
def _unsqueeze(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    return Emit("unsqueeze", [a["self"]], {"dim": a["dim"]})


@converts("squeeze")
def _squeeze(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit | Alias:
    x = a["self"]
    shape = val(x).shape
    if a.get("dim") is None:
        # squeeze() of every size-1 dim: fix which ones now, so a batch of 1 keeps its batch dimension
        dims = [i for i, d in enumerate(shape) if isinstance(d, int) and d == 1]
    else:
        dims = ints(a["dim"], "dimension")
    dims = [d for d in dims if isinstance(shape[d], int) and shape[d] == 1]
    if not dims:
        return Alias(x)
    return Emit("squeeze", [x], {"dim": dims})


@converts("expand")
def _expand(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    x = a["self"]
    return Emit("expand", [x], {"size": s.expand(a["size"], x, [x])})


@converts("repeat")
def _repeat(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    return Emit("repeat", [a["self"]], {"repeats": ints(a["repeats"], "repeat count")})


@converts("select")
def _select(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    return Emit("select", [a["self"]], {"dim": a["dim"], "index": ints(a["index"], "index")[0]})


@converts("slice")
def _slice(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit | Alias:
    x = a["self"]
    start, end, step = a["start"], a["end"], a["step"]
    if isinstance(end, int) and end >= INT64_BIG:
        end = None
    if start == 0:
        start = None
    if start is None and end is None and step == 1:
        return Alias(x)
    args: dict[str, Any] = {"dim": a["dim"]}
    if start is not None:
        args["start"] = s.index(start, [x])
    if end is not None:
        args["end"] = s.index(end, [x])
    if step != 1:
        args["step"] = ints(step, "slice step")[0]
    return Emit("slice", [x], args)


@converts("cat", "concat", "concatenate")
def _cat(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    return Emit("cat", list(a["tensors"]), {"dim": a["dim"]})


@converts("stack")
def _stack(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    return Emit("stack", list(a["tensors"]), {"dim": a["dim"]})


@converts("split", "split_with_sizes")
def _split(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    size = a.get("split_size", a.get("split_sizes"))
    size = ints(size, "split size") if not isinstance(size, int) else size
    return Emit("split", [a["self"]], {"split_size": size, "dim": a["dim"]})


@converts("chunk")
def _chunk(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    return Emit("chunk", [a["self"]], {"chunks": a["chunks"], "dim": a["dim"]})


@converts("unbind")
def _unbind(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    return Emit("unbind", [a["self"]], {"dim": a["dim"]})


@converts("gather")
def _gather(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    if a.get("sparse_grad"):
        raise Refused("gather with sparse_grad")
    return Emit("gather", [a["self"], a["index"]], {"dim": a["dim"]})


@converts("index")
def _index(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    indices = list(a["indices"])
    dims = [i for i, t in enumerate(indices) if t is not None]
    if any(val(t).dtype == torch.bool for t in indices if t is not None):
        raise Refused("indexing with a boolean mask (its result size depends on the values)")
    return Emit("index", [a["self"], *(t for t in indices if t is not None)], {"dims": dims})


@converts("flip")
def _flip(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    return Emit("flip", [a["self"]], {"dims": ints(a["dims"], "dimension")})


@converts("roll")
def _roll(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    return Emit("roll", [a["self"]], {"shifts": ints(a["shifts"], "shift"), "dims": ints(a["dims"], "dimension")})


# -- elementwise ----------------------------------------------------------------------------------------------
def _binary(name: str, alpha: bool = False, mode: bool = False) -> Converter:
    def conv(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
        x, other = a["self"], a["other"] if "other" in a else a.get("exponent")
        args: dict[str, Any] = {}
        if alpha and a.get("alpha", 1) != 1:
            args["alpha"] = scalar(a["alpha"], "alpha")
        if mode and a.get("rounding_mode") is not None:
            args["rounding_mode"] = a["rounding_mode"]
        if is_tensor(other):
            return Emit(name, [x, other], args)
        return Emit(name, [x], {"other": scalar(other), **args})

    return conv


for _name, _alpha, _mode in [
    ("add", True, False),
    ("sub", True, False),
    ("mul", False, False),
    ("div", False, True),
    ("pow", False, False),
    ("remainder", False, False),
    ("eq", False, False),
    ("ne", False, False),
    ("lt", False, False),
    ("le", False, False),
    ("gt", False, False),
    ("ge", False, False),
    ("maximum", False, False),
    ("minimum", False, False),
    ("logical_and", False, False),
    ("logical_or", False, False),
]:
    CONVERTERS[_name] = _binary(_name, _alpha, _mode)
CONVERTERS["true_divide"] = CONVERTERS["div"]
CONVERTERS["multiply"] = CONVERTERS["mul"]
CONVERTERS["subtract"] = CONVERTERS["sub"]


@converts("rsub")
def _rsub(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    x, other = a["self"], a["other"]
    if is_tensor(other):
        return Emit("sub", [other, x], {} if a.get("alpha", 1) == 1 else {"alpha": scalar(a["alpha"])})
    args: dict[str, Any] = {"other": scalar(other)}
    if a.get("alpha", 1) != 1:
        args["alpha"] = scalar(a["alpha"], "alpha")
    return Emit("rsub", [x], args)


_UNARY = (
    "relu",
    "silu",
    "sigmoid",
    "tanh",
    "hardswish",
    "hardsigmoid",
    "mish",
    "exp",
    "log",
    "sqrt",
    "rsqrt",
    "neg",
    "abs",
    "erf",
    "reciprocal",
    "sin",
    "cos",
    "logical_not",
    "sign",
)


def _unary(name: str) -> Converter:
    def conv(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
        return Emit(name, [a["self"]])

    return conv


for _name in _UNARY:
    CONVERTERS[_name] = _unary(_name)


@converts("__and__", "bitwise_and", "__or__", "bitwise_or")
def _bool_binary(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    x, other = a["self"], a["other"]
    if val(x).dtype != torch.bool or not is_tensor(other) or val(other).dtype != torch.bool:
        raise Refused("bitwise and/or of non-boolean tensors")
    return Emit("logical_and" if "and" in op_name(n) else "logical_or", [x, other])


@converts("bitwise_not")
def _bitwise_not(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    if val(a["self"]).dtype != torch.bool:
        raise Refused("bitwise_not of a non-boolean tensor")
    return Emit("logical_not", [a["self"]])


@converts("gelu")
def _gelu(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    return Emit("gelu", [a["self"]], {} if a["approximate"] == "none" else {"approximate": a["approximate"]})


@converts("hardtanh", "relu6")
def _hardtanh(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    lo, hi = (0.0, 6.0) if op_name(n).startswith("relu6") else (a["min_val"], a["max_val"])
    return Emit("hardtanh", [a["self"]], {"min_val": float(lo), "max_val": float(hi)})


@converts("leaky_relu")
def _leaky(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    return Emit("leaky_relu", [a["self"]], {"negative_slope": float(a["negative_slope"])})


@converts("elu")
def _elu(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    if a.get("scale", 1) != 1 or a.get("input_scale", 1) != 1:
        raise Refused("elu with scale (selu/celu form)")
    return Emit("elu", [a["self"]], {"alpha": float(a["alpha"])})


@converts("softplus")
def _softplus(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    return Emit("softplus", [a["self"]], {"beta": float(a["beta"]), "threshold": float(a["threshold"])})


@converts("clamp", "clamp_min", "clamp_max", "clip")
def _clamp(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    args = {k: scalar(a[k], f"clamp {k}") for k in ("min", "max") if a.get(k) is not None}
    if any(is_tensor(a.get(k)) for k in ("min", "max")):
        raise Refused("clamp with tensor bounds")
    return Emit("clamp", [a["self"]], args)


@converts("softmax", "_softmax", "log_softmax", "_log_softmax")
def _softmax(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    name = "log_softmax" if "log" in op_name(n) else "softmax"
    args: dict[str, Any] = {"dim": a["dim"]}
    if val(n).dtype != val(a["self"]).dtype:
        args["datatype"] = dtype_name(val(n).dtype)
    return Emit(name, [a["self"]], args)


@converts("cumsum")
def _cumsum(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    if a.get("dtype") is not None and a["dtype"] != val(a["self"]).dtype:
        raise Refused("cumsum with a dtype")
    return Emit("cumsum", [a["self"]], {"dim": a["dim"]})


@converts("prelu", "_prelu_kernel")
def _prelu(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    return Emit("prelu", [a["self"], a["weight"]])


from . import aten_nn  # noqa: E402, F401  (registers the converters for reductions, nn ops, pooling, creation)

"""The function allowlist: every function a spec node may call, with a strict pydantic schema for its arguments.

A function node is data: `{"function": "reshape", "inputs": ["x"], "args": {"shape": [-1, 4, 16]}}`. The server
looks the name up here and calls only the callable registered for it, with arguments that passed the schema
(bounded ints and floats, short tuples, enums; nothing can name a Python object). Adding an op means adding an
entry here; nothing in a bundle is imported or evaluated.

Sizes that vary at run time (the batch, a sequence length) are written as `{"input": i, "dim": d}`: "dimension d
of the node's i-th input", resolved from the tensor when the graph runs. An input that only supplies such a size
comes after the function's data inputs (e.g. `expand` of a class token to the batch of `x`). A function whose
result is a tuple (`split`, `chunk`, `unbind`) is read through `getitem` nodes.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, ValidationError, model_validator

from .dtypes import OIP_TO_TORCH, Datatype

MAX_SIZE = 1 << 24  # the largest size or index a function argument may name
MAX_INPUTS = 64


class SizeRef(BaseModel):
    """Dimension `dim` of the node's input number `input`, read when the graph runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    input: Annotated[int, Field(strict=True, ge=0, lt=MAX_INPUTS)]
    dim: Annotated[int, Field(strict=True, ge=-8, le=7)]


DimArg = Annotated[int, Field(strict=True, ge=-8, le=7)]
Dims = Annotated[tuple[DimArg, ...], Field(max_length=8)]
SizeArg = Annotated[int, Field(strict=True, ge=-1, le=MAX_SIZE)] | SizeRef
Shape = Annotated[tuple[SizeArg, ...], Field(max_length=8)]
Index = Annotated[int, Field(strict=True, ge=-MAX_SIZE, le=MAX_SIZE)]
IndexArg = Index | SizeRef
PosInt = Annotated[int, Field(strict=True, ge=1, le=MAX_SIZE)]
Ints = Annotated[tuple[Annotated[int, Field(strict=True, ge=0, le=4096)], ...], Field(min_length=1, max_length=8)]
FiniteFloat = Annotated[StrictFloat, Field(allow_inf_nan=False, ge=-1e308, le=1e308)]
#: A scalar operand: ints stay ints (so integer tensors keep their dtype); infinities are spelled as strings.
Scalar = Annotated[StrictInt, Field(ge=-(1 << 62), le=1 << 62)] | FiniteFloat | Literal["inf", "-inf"]
Eps = Annotated[float, Field(strict=True, gt=0, le=1)]


class Args(BaseModel):
    """Base of every argument schema: strict (unknown names are errors) and immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoArgs(Args):
    pass


def number(v: Scalar | None) -> int | float | None:
    """A validated scalar as the number torch takes (the strings 'inf'/'-inf' become infinities)."""
    if v == "inf":
        return math.inf
    if v == "-inf":
        return -math.inf
    return v  # type: ignore[return-value]


def refs(value: Any) -> list[SizeRef]:
    """Every SizeRef inside a validated argument value."""
    if isinstance(value, SizeRef):
        return [value]
    if isinstance(value, BaseModel):
        return [r for k in type(value).model_fields for r in refs(getattr(value, k))]
    if isinstance(value, tuple | list):
        return [r for v in value for r in refs(v)]
    return []


def substitute(value: Any, size: Callable[[SizeRef], Any]) -> Any:
    """`value` with each SizeRef replaced by `size(ref)` (an int during shape propagation, an fx node in a graph)."""
    if isinstance(value, SizeRef):
        return size(value)
    if isinstance(value, tuple | list):
        return tuple(substitute(v, size) for v in value)
    return value


@dataclass(frozen=True)
class Function:
    """One allowed function: how many tensor inputs it takes, its argument schema and the callable behind it.

    `impl(*tensors, **args)` is what the built graph calls. `python` and `methods` are the Python callables and
    tensor methods that the torch.fx importer (trace.py) maps to this function.
    """

    name: str
    impl: Callable[..., Any]
    inputs: tuple[int, int] = (1, 1)
    args: type[Args] = NoArgs
    python: tuple[Callable[..., Any], ...] = ()
    methods: tuple[str, ...] = ()
    doc: str = ""

    def parse(self, inputs: Sequence[str], args: Mapping[str, Any]) -> Args:
        """Validated arguments; ValueError (one line naming the argument) when the node is malformed."""
        lo, hi = self.inputs
        try:
            parsed = self.args.model_validate(dict(args))
        except ValidationError as e:
            parts = []
            for err in e.errors(include_url=False):
                loc = ".".join(str(p) for p in err["loc"])
                parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
            raise ValueError(f"function {self.name}: bad args: {'; '.join(parts)}") from None
        used = {r.input for r in refs(parsed)}
        n = len(inputs)
        if not lo <= min(n, hi) or (n > hi and not used):
            raise ValueError(f"function {self.name} takes {_count(lo, hi)} input(s), got {n}")
        for r in sorted(used):
            if r >= n:
                raise ValueError(f"function {self.name}: a size names input {r}, but the node has {n} input(s)")
        extra = set(range(hi, n)) - used
        if extra:
            raise ValueError(f"function {self.name} takes {_count(lo, hi)} input(s); input(s) {sorted(extra)} "
                             "are not used by any size")  # fmt: skip
        return parsed

    def data_inputs(self, inputs: Sequence[Any]) -> list[Any]:
        """The inputs the callable receives (inputs after them only supply sizes)."""
        return list(inputs[: self.inputs[1]])

    def kwargs(self, parsed: Args, size: Callable[[SizeRef], Any]) -> dict[str, Any]:
        return {k: substitute(getattr(parsed, k), size) for k in type(parsed).model_fields}


def _count(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"{lo}..{hi}"


FUNCTIONS: dict[str, Function] = {}


def register(*fns: Function) -> None:
    for f in fns:
        assert f.name not in FUNCTIONS, f.name
        if f.inputs[0] != f.inputs[1]:
            # a size may only name an input after the data inputs if the data arity is fixed
            assert not _has_sizes(f.args), f.name
        FUNCTIONS[f.name] = f


def _has_sizes(args: type[Args]) -> bool:
    text = str({k: v.annotation for k, v in args.model_fields.items()})
    return "SizeRef" in text


# -- argument schemas shared by several functions -------------------------------------------------------------
class BinaryArgs(Args):
    """With two inputs: elementwise `a op b`. With one input: `a op other`, `other` a constant."""

    other: Scalar | None = None


class AlphaArgs(BinaryArgs):
    alpha: Annotated[StrictInt, Field(ge=-(1 << 30), le=1 << 30)] | FiniteFloat = 1


class DivArgs(BinaryArgs):
    rounding_mode: Literal["trunc", "floor"] | None = None


class DimArgs(Args):
    dim: DimArg


class OptDimArgs(Args):
    dim: DimArg = 0


class ReduceArgs(Args):
    dim: Dims | None = None
    keepdim: StrictBool = False


class SoftmaxArgs(Args):
    dim: DimArg
    datatype: Datatype | None = None


class CatArgs(Args):
    dim: DimArg = 0


class FlattenArgs(Args):
    start_dim: DimArg = 0
    end_dim: DimArg = -1


class SumArgs(Args):
    dim: Dims | None = None
    keepdim: StrictBool = False
    datatype: Datatype | None = None


def _dtype(name: str | None) -> torch.dtype | None:
    return OIP_TO_TORCH[name] if name is not None else None


def _with_other(op: Callable[..., torch.Tensor], x: torch.Tensor, y: torch.Tensor | None, other: Any,
                **kw: Any) -> torch.Tensor:  # fmt: skip
    if (y is None) == (other is None):
        raise ValueError("give either a second input or 'other', not both")
    return op(x, y if y is not None else number(other), **kw)


def _check_binary(parsed: Args, n: int) -> None:
    if (n == 2) == (getattr(parsed, "other", None) is not None):
        raise ValueError("with one input 'other' is required; with two inputs it must be left out")


def _binary(name: str, op: Callable[..., torch.Tensor], schema: type[BinaryArgs] = BinaryArgs,
            python: tuple[Callable[..., Any], ...] = (), methods: tuple[str, ...] = ()) -> Function:  # fmt: skip
    def impl(x: torch.Tensor, y: torch.Tensor | None = None, *, other: Any = None, **kw: Any) -> torch.Tensor:
        return _with_other(op, x, y, other, **kw)

    impl.__name__ = impl.__qualname__ = f"binary_{name}"
    return _Checked(name, impl, (1, 2), schema, python, methods, f"elementwise {name}", _check_binary)


@dataclass(frozen=True)
class _Checked(Function):
    """A function with an extra consistency rule over its inputs and arguments."""

    rule: Callable[[Args, int], None] | None = None

    def parse(self, inputs: Sequence[str], args: Mapping[str, Any]) -> Args:
        parsed = super().parse(inputs, args)
        if self.rule is not None:
            try:
                self.rule(parsed, len(inputs))
            except ValueError as e:
                raise ValueError(f"function {self.name}: {e}") from None
        return parsed


def _unary(name: str, op: Callable[..., torch.Tensor], schema: type[Args] = NoArgs,
           python: tuple[Callable[..., Any], ...] = (), methods: tuple[str, ...] = ()) -> Function:  # fmt: skip
    return Function(name, op, (1, 1), schema, python, methods, f"elementwise {name}")


def _sum(*xs: torch.Tensor, dim: tuple[int, ...] | None = None, keepdim: StrictBool = False,
         datatype: str | None = None) -> torch.Tensor:  # fmt: skip
    if len(xs) == 1:
        return torch.sum(xs[0], dim=dim, keepdim=keepdim, dtype=_dtype(datatype)) if dim is not None else \
            torch.sum(xs[0], dtype=_dtype(datatype)).reshape([1] * xs[0].dim() if keepdim else [])  # fmt: skip
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out


def _check_sum(parsed: Args, n: int) -> None:
    if n > 1 and parsed.model_fields_set:
        raise ValueError("with several inputs sum adds them elementwise and takes no args")


def _cat(*xs: torch.Tensor, dim: int = 0) -> torch.Tensor:
    return torch.cat(xs, dim=dim)


def _stack(*xs: torch.Tensor, dim: int = 0) -> torch.Tensor:
    return torch.stack(xs, dim=dim)


register(
    _binary("add", torch.add, AlphaArgs, (operator.add, torch.add), ("add",)),
    _binary("sub", torch.sub, AlphaArgs, (operator.sub, torch.sub), ("sub",)),
    _binary("mul", torch.mul, BinaryArgs, (operator.mul, torch.mul), ("mul",)),
    _binary("div", torch.div, DivArgs, (operator.truediv, torch.div), ("div",)),
    _binary("pow", torch.pow, BinaryArgs, (operator.pow, torch.pow), ("pow",)),
    _binary("remainder", torch.remainder, BinaryArgs, (operator.mod,)),
    _binary("eq", torch.eq), _binary("ne", torch.ne), _binary("lt", torch.lt), _binary("le", torch.le),
    _binary("gt", torch.gt), _binary("ge", torch.ge),
    _binary("maximum", torch.maximum), _binary("minimum", torch.minimum),
    _binary("logical_and", torch.logical_and), _binary("logical_or", torch.logical_or),
    _Checked("sum", _sum, (1, MAX_INPUTS), SumArgs, doc="several inputs: their elementwise sum; one input: the "
             "sum over `dim` (all dims when left out)", rule=_check_sum),
    Function("cat", _cat, (1, MAX_INPUTS), CatArgs, (torch.cat,), doc="concatenate the inputs along `dim`"),
    Function("stack", _stack, (1, MAX_INPUTS), CatArgs, (torch.stack,), doc="stack the inputs along a new `dim`"),
    Function("flatten", torch.flatten, (1, 1), FlattenArgs, (torch.flatten,), ("flatten",)),
)  # fmt: skip


class RsubArgs(Args):
    other: Scalar
    alpha: Annotated[StrictInt, Field(ge=-(1 << 30), le=1 << 30)] | FiniteFloat = 1


def _rsub(x: torch.Tensor, *, other: Any, alpha: Any = 1) -> torch.Tensor:
    return torch.rsub(x, number(other), alpha=alpha)  # type: ignore[arg-type]


class GeluArgs(Args):
    approximate: Literal["none", "tanh"] = "none"


class LeakyArgs(Args):
    negative_slope: Annotated[float, Field(strict=True, ge=-1e3, le=1e3)] = 0.01


class EluArgs(Args):
    alpha: Annotated[float, Field(strict=True, ge=-1e3, le=1e3)] = 1.0


class HardtanhArgs(Args):
    min_val: Annotated[float, Field(strict=True, ge=-1e6, le=1e6)] = -1.0
    max_val: Annotated[float, Field(strict=True, ge=-1e6, le=1e6)] = 1.0

    @model_validator(mode="after")
    def _ordered(self) -> HardtanhArgs:
        if self.min_val > self.max_val:
            raise ValueError("min_val must not exceed max_val")
        return self


class SoftplusArgs(Args):
    beta: Annotated[float, Field(strict=True, gt=0, le=1e3)] = 1.0
    threshold: Annotated[float, Field(strict=True, gt=0, le=1e3)] = 20.0


class ClampArgs(Args):
    min: Scalar | None = None
    max: Scalar | None = None


def _clamp(x: torch.Tensor, *, min: Any = None, max: Any = None) -> torch.Tensor:  # noqa: A002
    return torch.clamp(x, number(min), number(max))


def _softmax(x: torch.Tensor, *, dim: int, datatype: str | None = None) -> torch.Tensor:
    return torch.softmax(x, dim, dtype=_dtype(datatype))


def _log_softmax(x: torch.Tensor, *, dim: int, datatype: str | None = None) -> torch.Tensor:
    return torch.log_softmax(x, dim, dtype=_dtype(datatype))


register(
    Function("rsub", _rsub, (1, 1), RsubArgs, doc="`other - alpha * x`"),
    _unary("relu", torch.relu, python=(torch.relu, F.relu), methods=("relu",)),
    _unary("gelu", F.gelu, GeluArgs, python=(F.gelu,)),
    _unary("silu", F.silu, python=(F.silu,)),
    _unary("mish", F.mish),
    _unary("hardswish", F.hardswish),
    _unary("hardsigmoid", F.hardsigmoid),
    _unary("sigmoid", torch.sigmoid, python=(torch.sigmoid,), methods=("sigmoid",)),
    _unary("tanh", torch.tanh, python=(torch.tanh,), methods=("tanh",)),
    _unary("leaky_relu", F.leaky_relu, LeakyArgs),
    _unary("elu", F.elu, EluArgs),
    _unary("hardtanh", F.hardtanh, HardtanhArgs),
    _unary("softplus", F.softplus, SoftplusArgs),
    _unary("exp", torch.exp), _unary("log", torch.log), _unary("sqrt", torch.sqrt), _unary("rsqrt", torch.rsqrt),
    _unary("neg", torch.neg, python=(operator.neg,)), _unary("abs", torch.abs), _unary("erf", torch.erf),
    _unary("reciprocal", torch.reciprocal), _unary("sin", torch.sin), _unary("cos", torch.cos),
    _unary("logical_not", torch.logical_not), _unary("sign", torch.sign),
    _unary("clamp", _clamp, ClampArgs),
    _unary("softmax", _softmax, SoftmaxArgs),
    _unary("log_softmax", _log_softmax, SoftmaxArgs),
    _unary("cumsum", torch.cumsum, DimArgs),
)  # fmt: skip


# -- reductions -----------------------------------------------------------------------------------------------
class VarArgs(ReduceArgs):
    correction: Annotated[int, Field(strict=True, ge=0, le=1)] = 1


class NormArgs(ReduceArgs):
    ord: Annotated[float, Field(strict=True, ge=1, le=64)] = 2.0


class ArgmaxArgs(Args):
    dim: DimArg | None = None
    keepdim: StrictBool = False


def _reduce(op: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    def impl(x: torch.Tensor, *, dim: tuple[int, ...] | None = None, keepdim: StrictBool = False, **kw: Any) -> torch.Tensor:
        return op(x, dim=list(dim) if dim is not None else None, keepdim=keepdim, **kw)

    impl.__name__ = impl.__qualname__ = f"reduce_{op.__name__}"
    return impl


def _amax(x: torch.Tensor, *, dim: tuple[int, ...] | None = None, keepdim: StrictBool = False) -> torch.Tensor:
    return torch.amax(x, dim=dim if dim is not None else (), keepdim=keepdim)


def _amin(x: torch.Tensor, *, dim: tuple[int, ...] | None = None, keepdim: StrictBool = False) -> torch.Tensor:
    return torch.amin(x, dim=dim if dim is not None else (), keepdim=keepdim)


def _norm(x: torch.Tensor, *, ord: float = 2.0, dim: tuple[int, ...] | None = None,  # noqa: A002
          keepdim: StrictBool = False) -> torch.Tensor:  # fmt: skip
    return torch.linalg.vector_norm(x, ord, dim=dim, keepdim=keepdim)


register(
    Function("mean", _reduce(torch.mean), (1, 1), ReduceArgs, doc="mean over `dim` (all dims when left out)"),
    Function("amax", _amax, (1, 1), ReduceArgs), Function("amin", _amin, (1, 1), ReduceArgs),
    Function("var", _reduce(torch.var), (1, 1), VarArgs), Function("std", _reduce(torch.std), (1, 1), VarArgs),
    Function("norm", _norm, (1, 1), NormArgs, doc="vector norm of order `ord` over `dim`"),
    Function("argmax", torch.argmax, (1, 1), ArgmaxArgs),
)  # fmt: skip


# -- shapes, views and indexing -------------------------------------------------------------------------------
class ReshapeArgs(Args):
    shape: Shape

    @model_validator(mode="after")
    def _one_free(self) -> ReshapeArgs:
        if sum(1 for s in self.shape if s == -1) > 1:
            raise ValueError("at most one dimension of a shape may be -1")
        return self


class PermuteArgs(Args):
    dims: Dims

    @model_validator(mode="after")
    def _permutation(self) -> PermuteArgs:
        n = len(self.dims)
        if sorted(d % n for d in self.dims) != list(range(n)):
            raise ValueError(f"dims {list(self.dims)} are not a permutation of {n} dimensions")
        return self


class TransposeArgs(Args):
    dim0: DimArg
    dim1: DimArg


class UnflattenArgs(Args):
    dim: DimArg
    sizes: Annotated[tuple[SizeArg, ...], Field(min_length=1, max_length=8)]


class SqueezeArgs(Args):
    dim: Dims | None = None


class ExpandArgs(Args):
    size: Annotated[tuple[SizeArg, ...], Field(min_length=1, max_length=8)]


class RepeatArgs(Args):
    repeats: Annotated[tuple[PosInt, ...], Field(min_length=1, max_length=8)]


class SelectArgs(Args):
    dim: DimArg
    index: Index


class SliceArgs(Args):
    dim: DimArg = 0
    start: IndexArg | None = None
    end: IndexArg | None = None
    step: PosInt = 1


class SplitArgs(Args):
    split_size: PosInt | Annotated[tuple[Annotated[int, Field(strict=True, ge=0, le=MAX_SIZE)], ...], Field(min_length=1,
                                                                                                max_length=256)]
    dim: DimArg = 0


class ChunkArgs(Args):
    chunks: Annotated[int, Field(strict=True, ge=1, le=256)]
    dim: DimArg = 0


class GetitemArgs(Args):
    index: Annotated[int, Field(strict=True, ge=0, le=255)]


class ToArgs(Args):
    datatype: Datatype


class FlipArgs(Args):
    dims: Annotated[tuple[DimArg, ...], Field(min_length=1, max_length=8)]


class RollArgs(Args):
    shifts: Annotated[tuple[Index, ...], Field(min_length=1, max_length=8)]
    dims: Annotated[tuple[DimArg, ...], Field(min_length=1, max_length=8)]


class MaskedFillArgs(Args):
    value: Scalar


def _reshape(x: torch.Tensor, *, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.reshape(x, shape)


def _unflatten(x: torch.Tensor, *, dim: int, sizes: tuple[int, ...]) -> torch.Tensor:
    return torch.unflatten(x, dim, sizes)


def _squeeze(x: torch.Tensor, *, dim: tuple[int, ...] | None = None) -> torch.Tensor:
    return torch.squeeze(x) if dim is None else torch.squeeze(x, dim)


def _expand(x: torch.Tensor, *, size: tuple[int, ...]) -> torch.Tensor:
    return x.expand(size)


def _repeat(x: torch.Tensor, *, repeats: tuple[int, ...]) -> torch.Tensor:
    return x.repeat(repeats)


def _slice(x: torch.Tensor, *, dim: int = 0, start: int | None = None, end: int | None = None,
           step: int = 1) -> torch.Tensor:  # fmt: skip
    index = [slice(None)] * (dim % x.dim()) + [slice(start, end, step)]
    return x[tuple(index)]


def _split(x: torch.Tensor, *, split_size: int | tuple[int, ...], dim: int = 0) -> tuple[torch.Tensor, ...]:
    return torch.split(x, list(split_size) if isinstance(split_size, tuple) else split_size, dim)


def _gather(x: torch.Tensor, index: torch.Tensor, *, dim: int) -> torch.Tensor:
    return torch.gather(x, dim, index)


def _getitem(x: tuple[torch.Tensor, ...], *, index: int) -> torch.Tensor:
    return x[index]


def _to(x: torch.Tensor, *, datatype: str) -> torch.Tensor:
    return x.to(OIP_TO_TORCH[datatype])


def _masked_fill(x: torch.Tensor, mask: torch.Tensor, *, value: Any) -> torch.Tensor:
    return x.masked_fill(mask, number(value))  # type: ignore[arg-type]


register(
    Function("reshape", _reshape, (1, 1), ReshapeArgs, doc="reshape to `shape` (-1: inferred; sizes may be refs)"),
    Function("permute", torch.permute, (1, 1), PermuteArgs),
    Function("transpose", torch.transpose, (1, 1), TransposeArgs),
    Function("unflatten", _unflatten, (1, 1), UnflattenArgs),
    Function("unsqueeze", torch.unsqueeze, (1, 1), DimArgs),
    Function("squeeze", _squeeze, (1, 1), SqueezeArgs, doc="drop the size-1 dims `dim` (all when left out)"),
    Function("expand", _expand, (1, 1), ExpandArgs, doc="broadcast to `size` (-1 keeps a dim; sizes may be refs)"),
    Function("repeat", _repeat, (1, 1), RepeatArgs),
    Function("select", torch.select, (1, 1), SelectArgs, doc="`x[..., index]` along `dim` (drops the dim)"),
    Function("slice", _slice, (1, 1), SliceArgs, doc="`x[..., start:end:step]` along `dim` (bounds may be refs)"),
    Function("split", _split, (1, 1), SplitArgs, doc="a tuple of pieces of `split_size` (or of the listed sizes)"),
    Function("chunk", torch.chunk, (1, 1), ChunkArgs, doc="a tuple of `chunks` pieces"),
    Function("unbind", torch.unbind, (1, 1), OptDimArgs, doc="a tuple of the slices along `dim`"),
    Function("getitem", _getitem, (1, 1), GetitemArgs, doc="element `index` of a tuple-valued node"),
    Function("to", _to, (1, 1), ToArgs, doc="cast to `datatype`"),
    Function("flip", torch.flip, (1, 1), FlipArgs),
    Function("roll", torch.roll, (1, 1), RollArgs),
    Function("gather", _gather, (2, 2), DimArgs, doc="inputs (x, index): x's values at index along `dim`"),
    Function("masked_fill", _masked_fill, (2, 2), MaskedFillArgs, doc="inputs (x, mask): x with `value` where mask"),
    Function("where", torch.where, (3, 3), doc="inputs (condition, x, y)"),
)  # fmt: skip


# -- linear algebra, convolution, normalisation ---------------------------------------------------------------
class EinsumArgs(Args):
    equation: Annotated[str, Field(pattern=r"^[a-zA-Z ,.>-]{1,64}$")]


class ConvArgs(Args):
    stride: PosInt | Annotated[tuple[PosInt, ...], Field(min_length=1, max_length=3)] = 1
    padding: Annotated[int, Field(strict=True, ge=0, le=1024)] | Annotated[tuple[Annotated[int, Field(strict=True, ge=0, le=1024)], ...],
                                                               Field(min_length=1, max_length=3)] | \
        Literal["same", "valid"] = 0  # fmt: skip
    dilation: PosInt | Annotated[tuple[PosInt, ...], Field(min_length=1, max_length=3)] = 1
    groups: PosInt = 1


class EmbeddingArgs(Args):
    padding_idx: Index | None = None


class LayerNormArgs(Args):
    normalized_shape: Annotated[tuple[PosInt, ...], Field(min_length=1, max_length=8)]
    eps: Eps = 1e-5


class GroupNormArgs(Args):
    num_groups: PosInt
    eps: Eps = 1e-5


class RmsNormArgs(Args):
    normalized_shape: Annotated[tuple[PosInt, ...], Field(min_length=1, max_length=8)]
    eps: Eps | None = None


class NormalizeArgs(Args):
    p: Annotated[float, Field(strict=True, ge=1, le=64)] = 2.0
    dim: DimArg = 1
    eps: Eps = 1e-12


class SdpaArgs(Args):
    is_causal: StrictBool = False
    scale: Annotated[float, Field(strict=True, gt=0, le=1e3)] | None = None


def _einsum(*xs: torch.Tensor, equation: str) -> torch.Tensor:
    return torch.einsum(equation, *xs)


def _embedding(ids: torch.Tensor, weight: torch.Tensor, *, padding_idx: int | None = None) -> torch.Tensor:
    return F.embedding(ids, weight, padding_idx)


def _layer_norm(x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None, *,
                normalized_shape: tuple[int, ...], eps: float = 1e-5) -> torch.Tensor:  # fmt: skip
    return F.layer_norm(x, normalized_shape, weight, bias, eps)


def _group_norm(x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None, *,
                num_groups: int, eps: float = 1e-5) -> torch.Tensor:  # fmt: skip
    return F.group_norm(x, num_groups, weight, bias, eps)


def _rms_norm(x: torch.Tensor, weight: torch.Tensor | None = None, *, normalized_shape: tuple[int, ...],
              eps: float | None = None) -> torch.Tensor:  # fmt: skip
    return F.rms_norm(x, normalized_shape, weight, eps)


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, *,
          is_causal: StrictBool = False, scale: float | None = None) -> torch.Tensor:  # fmt: skip
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, scale=scale)


register(
    Function("matmul", torch.matmul, (2, 2), python=(torch.matmul, operator.matmul), methods=("matmul",)),
    Function("bmm", torch.bmm, (2, 2)),
    Function("linear", F.linear, (2, 3), doc="inputs (x, weight[, bias]): `x @ weight.T + bias`"),
    Function("einsum", _einsum, (1, 8), EinsumArgs),
    Function("conv1d", F.conv1d, (2, 3), ConvArgs, doc="inputs (x, weight[, bias])"),
    Function("conv2d", F.conv2d, (2, 3), ConvArgs, doc="inputs (x, weight[, bias])"),
    Function("embedding", _embedding, (2, 2), EmbeddingArgs, doc="inputs (ids, weight): rows of weight"),
    Function("layer_norm", _layer_norm, (1, 3), LayerNormArgs, doc="inputs (x[, weight[, bias]])"),
    Function("group_norm", _group_norm, (1, 3), GroupNormArgs, doc="inputs (x[, weight[, bias]])"),
    Function("rms_norm", _rms_norm, (1, 2), RmsNormArgs, doc="inputs (x[, weight])"),
    Function("normalize", F.normalize, (1, 1), NormalizeArgs, doc="x / max(norm(x, p, dim), eps)"),
    Function("scaled_dot_product_attention", _sdpa, (3, 4), SdpaArgs, doc="inputs (q, k, v[, mask]); no dropout"),
    Function("prelu", F.prelu, (2, 2), doc="inputs (x, weight)"),
)  # fmt: skip


# -- pooling, resizing, padding, creation ---------------------------------------------------------------------
Kernel = Annotated[int, Field(strict=True, ge=1, le=64)] | Annotated[tuple[Annotated[int, Field(strict=True, ge=1, le=64)], ...],
                                                        Field(min_length=1, max_length=3)]  # fmt: skip
Pad = Annotated[int, Field(strict=True, ge=0, le=32)] | Annotated[tuple[Annotated[int, Field(strict=True, ge=0, le=32)], ...],
                                                     Field(min_length=1, max_length=3)]  # fmt: skip
OutSize = PosInt | Annotated[tuple[PosInt | None, ...], Field(min_length=1, max_length=3)]


class MaxPoolArgs(Args):
    kernel_size: Kernel
    stride: Kernel | None = None
    padding: Pad = 0
    dilation: Kernel = 1
    ceil_mode: StrictBool = False


class AvgPoolArgs(Args):
    kernel_size: Kernel
    stride: Kernel | None = None
    padding: Pad = 0
    ceil_mode: StrictBool = False
    count_include_pad: StrictBool = True


class AdaptivePoolArgs(Args):
    output_size: OutSize


class InterpolateArgs(Args):
    size: Annotated[tuple[PosInt, ...], Field(min_length=1, max_length=3)] | None = None
    scale_factor: Annotated[tuple[Annotated[float, Field(strict=True, gt=0, le=64)], ...], Field(min_length=1,
                                                                                     max_length=3)] | None = None
    mode: Literal["nearest", "nearest-exact", "linear", "bilinear", "bicubic", "trilinear", "area"] = "nearest"
    align_corners: StrictBool | None = None

    @model_validator(mode="after")
    def _one(self) -> InterpolateArgs:
        if (self.size is None) == (self.scale_factor is None):
            raise ValueError("give exactly one of 'size' or 'scale_factor'")
        if self.align_corners is not None and self.mode not in ("linear", "bilinear", "bicubic", "trilinear"):
            raise ValueError(f"align_corners is only for the interpolating modes, not {self.mode!r}")
        return self


class PadArgs(Args):
    pad: Annotated[tuple[Annotated[int, Field(strict=True, ge=-4096, le=4096)], ...], Field(min_length=2, max_length=8)]
    mode: Literal["constant", "reflect", "replicate", "circular"] = "constant"
    value: FiniteFloat | StrictInt | None = None

    @model_validator(mode="after")
    def _even(self) -> PadArgs:
        if len(self.pad) % 2:
            raise ValueError("pad needs a (before, after) pair per dimension")
        if self.value is not None and self.mode != "constant":
            raise ValueError("value is only for mode 'constant'")
        return self


class ShuffleArgs(Args):
    factor: Annotated[int, Field(strict=True, ge=1, le=16)]


class FullArgs(Args):
    size: Shape
    fill_value: Scalar
    datatype: Datatype = "FP32"

    @model_validator(mode="after")
    def _positive(self) -> FullArgs:
        if any(s == -1 for s in self.size):
            raise ValueError("a created tensor has no -1 sizes; name the size with a ref")
        return self


class FullLikeArgs(Args):
    fill_value: Scalar
    datatype: Datatype | None = None


class ArangeArgs(Args):
    start: Index = 0
    end: IndexArg
    step: PosInt = 1
    datatype: Datatype = "INT64"


def _interpolate(x: torch.Tensor, *, size: tuple[int, ...] | None = None,
                 scale_factor: tuple[float, ...] | None = None, mode: str = "nearest",
                 align_corners: StrictBool | None = None) -> torch.Tensor:  # fmt: skip
    return F.interpolate(x, size=size, scale_factor=scale_factor, mode=mode, align_corners=align_corners)


def _pad(x: torch.Tensor, *, pad: tuple[int, ...], mode: str = "constant", value: float | None = None) -> torch.Tensor:
    return F.pad(x, pad, mode, value)


def _full(*_: torch.Tensor, size: tuple[int, ...], fill_value: Any, datatype: str = "FP32") -> torch.Tensor:
    return torch.full(size, number(fill_value), dtype=OIP_TO_TORCH[datatype])  # type: ignore[arg-type]


def _full_like(x: torch.Tensor, *, fill_value: Any, datatype: str | None = None) -> torch.Tensor:
    return torch.full_like(x, number(fill_value), dtype=_dtype(datatype))  # type: ignore[arg-type]


def _arange(*_: torch.Tensor, start: int = 0, end: int, step: int = 1, datatype: str = "INT64") -> torch.Tensor:
    return torch.arange(start, end, step, dtype=OIP_TO_TORCH[datatype])


def _pixel_shuffle(x: torch.Tensor, *, factor: int) -> torch.Tensor:
    return F.pixel_shuffle(x, factor)


def _pixel_unshuffle(x: torch.Tensor, *, factor: int) -> torch.Tensor:
    return F.pixel_unshuffle(x, factor)


register(
    Function("max_pool1d", F.max_pool1d, (1, 1), MaxPoolArgs), Function("max_pool2d", F.max_pool2d, (1, 1), MaxPoolArgs),
    Function("avg_pool1d", F.avg_pool1d, (1, 1), AvgPoolArgs), Function("avg_pool2d", F.avg_pool2d, (1, 1), AvgPoolArgs),
    Function("adaptive_avg_pool1d", F.adaptive_avg_pool1d, (1, 1), AdaptivePoolArgs),
    Function("adaptive_avg_pool2d", F.adaptive_avg_pool2d, (1, 1), AdaptivePoolArgs),
    Function("adaptive_max_pool2d", F.adaptive_max_pool2d, (1, 1), AdaptivePoolArgs),
    Function("interpolate", _interpolate, (1, 1), InterpolateArgs, doc="resize to `size` or by `scale_factor`"),
    Function("pad", _pad, (1, 1), PadArgs, doc="F.pad: (before, after) pairs from the last dimension backwards"),
    Function("pixel_shuffle", _pixel_shuffle, (1, 1), ShuffleArgs),
    Function("pixel_unshuffle", _pixel_unshuffle, (1, 1), ShuffleArgs),
    Function("full", _full, (0, 0), FullArgs, doc="a new tensor of `size` filled with `fill_value`; its inputs only "
             "supply sizes"),
    Function("full_like", _full_like, (1, 1), FullLikeArgs, doc="a tensor shaped like the input, filled"),
    Function("arange", _arange, (0, 0), ArangeArgs, doc="`start, start+step, ... < end`; inputs only supply `end`"),
)  # fmt: skip

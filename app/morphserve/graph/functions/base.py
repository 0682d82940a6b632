"""The machinery of the function allowlist: argument types, the Function record, the registry."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, overload

import torch
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, ValidationError

from ..dtypes import OIP_TO_TORCH, Datatype

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


@overload
def number(v: Scalar) -> int | float: ...


@overload
def number(v: None) -> None: ...


def number(v: Scalar | None) -> int | float | None:
    """A validated scalar as the number torch takes (the strings 'inf'/'-inf' become infinities)."""
    if v == "inf":
        return math.inf
    if v == "-inf":
        return -math.inf
    return v


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
            raise ValueError(
                f"function {self.name} takes {_count(lo, hi)} input(s); input(s) {sorted(extra)} "
                "are not used by any size"
            )
        return parsed

    def data_inputs(self, inputs: Sequence[Any]) -> list[Any]:
        """The inputs the callable receives (inputs after them only supply sizes)."""
        return list(inputs[: self.inputs[1]])

    def kwargs(self, parsed: Args, size: Callable[[SizeRef], Any]) -> dict[str, Any]:
        return {k: substitute(getattr(parsed, k), size) for k in type(parsed).model_fields}

    def call(
        self, parsed: Any, inputs: Sequence[Any], size: Callable[[SizeRef], Any], device: Callable[[], Any]
    ) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
        """(callable, positional arguments, keyword arguments) of this node, given its inputs' values (tensors
        when the graph runs, fake tensors during shape propagation, fx nodes while the graph is built)."""
        return self.impl, tuple(self.data_inputs(inputs)), self.kwargs(parsed, size)

    def input_kinds(self, parsed: Any, n: int) -> list[str]:
        """What each input must be: 'tensor', or 'tuple' for getitem (which reads a tuple-valued node)."""
        return ["tuple" if self.name == "getitem" else "tensor"] * n


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


def _with_other(
    op: Callable[..., torch.Tensor], x: torch.Tensor, y: torch.Tensor | None, other: Scalar | None, **kw: Any
) -> torch.Tensor:
    if (y is None) == (other is None):
        raise ValueError("give either a second input or 'other', not both")
    return op(x, y if y is not None else number(other), **kw)


def _check_binary(parsed: Args, n: int) -> None:
    if (n == 2) == (getattr(parsed, "other", None) is not None):
        raise ValueError("with one input 'other' is required; with two inputs it must be left out")


def _binary(
    name: str,
    op: Callable[..., torch.Tensor],
    schema: type[BinaryArgs] = BinaryArgs,
    python: tuple[Callable[..., Any], ...] = (),
    methods: tuple[str, ...] = (),
) -> Function:
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


def _unary(
    name: str,
    op: Callable[..., torch.Tensor],
    schema: type[Args] = NoArgs,
    python: tuple[Callable[..., Any], ...] = (),
    methods: tuple[str, ...] = (),
    doc: str = "",
) -> Function:
    return Function(name, op, (1, 1), schema, python, methods, doc or f"elementwise {name}")

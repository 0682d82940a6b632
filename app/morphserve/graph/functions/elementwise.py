"""Elementwise arithmetic and comparisons, activations, reductions, joins."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, StrictBool, StrictInt, model_validator

from .base import (
    MAX_INPUTS,
    AlphaArgs,
    Args,
    BinaryArgs,
    CatArgs,
    DimArg,
    DimArgs,
    DivArgs,
    FiniteFloat,
    FlattenArgs,
    Function,
    ReduceArgs,
    Scalar,
    SoftmaxArgs,
    SumArgs,
    _binary,
    _Checked,
    _dtype,
    _unary,
    number,
    register,
)


def _sum(
    *xs: torch.Tensor, dim: tuple[int, ...] | None = None, keepdim: StrictBool = False, datatype: str | None = None
) -> torch.Tensor:
    if len(xs) == 1:
        return (
            torch.sum(xs[0], dim=dim, keepdim=keepdim, dtype=_dtype(datatype))
            if dim is not None
            else torch.sum(xs[0], dtype=_dtype(datatype)).reshape([1] * xs[0].dim() if keepdim else [])
        )
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
    _binary("eq", torch.eq),
    _binary("ne", torch.ne),
    _binary("lt", torch.lt),
    _binary("le", torch.le),
    _binary("gt", torch.gt),
    _binary("ge", torch.ge),
    _binary("maximum", torch.maximum),
    _binary("minimum", torch.minimum),
    _binary("logical_and", torch.logical_and),
    _binary("logical_or", torch.logical_or),
    _Checked(
        "sum",
        _sum,
        (1, MAX_INPUTS),
        SumArgs,
        doc="several inputs: their elementwise sum; one input: the sum over `dim` (all dims when left out)",
        rule=_check_sum,
    ),
    Function("cat", _cat, (1, MAX_INPUTS), CatArgs, (torch.cat,), doc="concatenate the inputs along `dim`"),
    Function("stack", _stack, (1, MAX_INPUTS), CatArgs, (torch.stack,), doc="stack the inputs along a new `dim`"),
    Function("flatten", torch.flatten, (1, 1), FlattenArgs, (torch.flatten,), ("flatten",)),
)


class RsubArgs(Args):
    other: Scalar
    alpha: Annotated[StrictInt, Field(ge=-(1 << 30), le=1 << 30)] | FiniteFloat = 1


def _rsub(x: torch.Tensor, *, other: Scalar, alpha: float = 1) -> torch.Tensor:
    return torch.rsub(x, number(other), alpha=alpha)


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


def _clamp(x: torch.Tensor, *, min: Scalar | None = None, max: Scalar | None = None) -> torch.Tensor:  # noqa: A002
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
    _unary("exp", torch.exp),
    _unary("log", torch.log),
    _unary("sqrt", torch.sqrt),
    _unary("rsqrt", torch.rsqrt),
    _unary("neg", torch.neg, python=(operator.neg,)),
    _unary("abs", torch.abs),
    _unary("erf", torch.erf),
    _unary("reciprocal", torch.reciprocal),
    _unary("sin", torch.sin),
    _unary("cos", torch.cos),
    _unary("logical_not", torch.logical_not),
    _unary("sign", torch.sign),
    _unary("clamp", _clamp, ClampArgs, doc="clamp to [min, max] (either may be left out)"),
    _unary("softmax", _softmax, SoftmaxArgs, doc="softmax over `dim` (in `datatype` if given)"),
    _unary("log_softmax", _log_softmax, SoftmaxArgs, doc="log-softmax over `dim`"),
    _unary("cumsum", torch.cumsum, DimArgs, doc="cumulative sum along `dim`"),
)


# -- reductions -----------------------------------------------------------------------------------------------
class VarArgs(ReduceArgs):
    correction: Annotated[int, Field(strict=True, ge=0, le=1)] = 1


class NormArgs(ReduceArgs):
    ord: Annotated[float, Field(strict=True, ge=1, le=64)] = 2.0


class ArgmaxArgs(Args):
    dim: DimArg | None = None
    keepdim: StrictBool = False


def _reduce(op: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    def impl(
        x: torch.Tensor, *, dim: tuple[int, ...] | None = None, keepdim: StrictBool = False, **kw: Any
    ) -> torch.Tensor:
        return op(x, dim=list(dim) if dim is not None else None, keepdim=keepdim, **kw)

    impl.__name__ = impl.__qualname__ = f"reduce_{op.__name__}"
    return impl


def _amax(x: torch.Tensor, *, dim: tuple[int, ...] | None = None, keepdim: StrictBool = False) -> torch.Tensor:
    return torch.amax(x, dim=dim if dim is not None else (), keepdim=keepdim)


def _amin(x: torch.Tensor, *, dim: tuple[int, ...] | None = None, keepdim: StrictBool = False) -> torch.Tensor:
    return torch.amin(x, dim=dim if dim is not None else (), keepdim=keepdim)


def _norm(
    x: torch.Tensor,
    *,
    ord: float = 2.0,
    dim: tuple[int, ...] | None = None,
    keepdim: StrictBool = False,
) -> torch.Tensor:
    norm: torch.Tensor = torch.linalg.vector_norm(x, ord, dim=dim, keepdim=keepdim)
    return norm


register(
    Function("mean", _reduce(torch.mean), (1, 1), ReduceArgs, doc="mean over `dim` (all dims when left out)"),
    Function("amax", _amax, (1, 1), ReduceArgs),
    Function("amin", _amin, (1, 1), ReduceArgs),
    Function("var", _reduce(torch.var), (1, 1), VarArgs),
    Function("std", _reduce(torch.std), (1, 1), VarArgs),
    Function("norm", _norm, (1, 1), NormArgs, doc="vector norm of order `ord` over `dim`"),
    Function("argmax", torch.argmax, (1, 1), ArgmaxArgs),
)

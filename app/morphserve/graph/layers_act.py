"""Catalogue entries for dropout, activations and reshaping layers (one input, no weights except PReLU's)."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator
from torch import nn

from .layer_base import Bounded, DimArg, Layer, Prob, Size


class _DropoutBase(Layer):
    p: Prob = 0.5

    def build(self) -> nn.Module:
        return getattr(nn, self.type)(self.p)  # type: ignore[attr-defined]


class Dropout(_DropoutBase):
    type: Literal["Dropout"] = "Dropout"
    modules: ClassVar = (nn.Dropout,)


class Dropout1d(_DropoutBase):
    type: Literal["Dropout1d"] = "Dropout1d"
    modules: ClassVar = (nn.Dropout1d,)


class Dropout2d(_DropoutBase):
    type: Literal["Dropout2d"] = "Dropout2d"
    modules: ClassVar = (nn.Dropout2d,)


class Dropout3d(_DropoutBase):
    type: Literal["Dropout3d"] = "Dropout3d"
    modules: ClassVar = (nn.Dropout3d,)


class AlphaDropout(_DropoutBase):
    type: Literal["AlphaDropout"] = "AlphaDropout"
    modules: ClassVar = (nn.AlphaDropout,)


class _NoArgs(Layer):
    def build(self) -> nn.Module:
        return getattr(nn, self.type)()  # type: ignore[attr-defined]


def _no_args(name: str) -> type[_NoArgs]:
    """A catalogue entry for an argument-free nn module (its `inplace` flag, if any, is dropped)."""
    cls = type(
        name,
        (_NoArgs,),
        {
            "__annotations__": {"type": f'Literal["{name}"]'},
            "type": name,
            "modules": (getattr(nn, name),),
            "__module__": __name__,
            "__doc__": f"`nn.{name}()`",
        },
    )
    return cls  # type: ignore[return-value]


ReLU = _no_args("ReLU")
ReLU6 = _no_args("ReLU6")
SiLU = _no_args("SiLU")
Tanh = _no_args("Tanh")
Sigmoid = _no_args("Sigmoid")
Identity = _no_args("Identity")
Hardswish = _no_args("Hardswish")
Hardsigmoid = _no_args("Hardsigmoid")
Mish = _no_args("Mish")
SELU = _no_args("SELU")
Softsign = _no_args("Softsign")
LogSigmoid = _no_args("LogSigmoid")
Softmax2d = _no_args("Softmax2d")


class LeakyReLU(Layer):
    type: Literal["LeakyReLU"] = "LeakyReLU"
    modules: ClassVar = (nn.LeakyReLU,)
    negative_slope: Bounded = 0.01

    def build(self) -> nn.Module:
        return nn.LeakyReLU(self.negative_slope)


class ELU(Layer):
    type: Literal["ELU"] = "ELU"
    modules: ClassVar = (nn.ELU,)
    alpha: Bounded = 1.0

    def build(self) -> nn.Module:
        return nn.ELU(self.alpha)


class CELU(Layer):
    type: Literal["CELU"] = "CELU"
    modules: ClassVar = (nn.CELU,)
    alpha: Annotated[float, Field(gt=0, le=1e6)] = 1.0

    def build(self) -> nn.Module:
        return nn.CELU(self.alpha)


class Hardtanh(Layer):
    type: Literal["Hardtanh"] = "Hardtanh"
    modules: ClassVar = (nn.Hardtanh,)
    min_val: Bounded = -1.0
    max_val: Bounded = 1.0

    @model_validator(mode="after")
    def _ordered(self) -> Hardtanh:
        if self.min_val > self.max_val:
            raise ValueError("min_val must not exceed max_val")
        return self

    def build(self) -> nn.Module:
        return nn.Hardtanh(self.min_val, self.max_val)


class Softplus(Layer):
    type: Literal["Softplus"] = "Softplus"
    modules: ClassVar = (nn.Softplus,)
    beta: Annotated[float, Field(gt=0, le=1e3)] = 1.0
    threshold: Annotated[float, Field(gt=0, le=1e3)] = 20.0

    def build(self) -> nn.Module:
        return nn.Softplus(self.beta, self.threshold)


class PReLU(Layer):
    type: Literal["PReLU"] = "PReLU"
    modules: ClassVar = (nn.PReLU,)
    num_parameters: Size = 1

    def build(self) -> nn.Module:
        return nn.PReLU(self.num_parameters)


class GELU(Layer):
    type: Literal["GELU"] = "GELU"
    modules: ClassVar = (nn.GELU,)
    approximate: Literal["none", "tanh"] = "none"

    def build(self) -> nn.Module:
        return nn.GELU(approximate=self.approximate)


class GLU(Layer):
    type: Literal["GLU"] = "GLU"
    modules: ClassVar = (nn.GLU,)
    dim: DimArg = -1

    def build(self) -> nn.Module:
        return nn.GLU(self.dim)


class Softmax(Layer):
    type: Literal["Softmax"] = "Softmax"
    modules: ClassVar = (nn.Softmax,)
    dim: DimArg = -1

    def build(self) -> nn.Module:
        return nn.Softmax(dim=self.dim)


class LogSoftmax(Layer):
    type: Literal["LogSoftmax"] = "LogSoftmax"
    modules: ClassVar = (nn.LogSoftmax,)
    dim: DimArg = -1

    def build(self) -> nn.Module:
        return nn.LogSoftmax(dim=self.dim)


class Flatten(Layer):
    type: Literal["Flatten"] = "Flatten"
    modules: ClassVar = (nn.Flatten,)
    start_dim: DimArg = 1
    end_dim: DimArg = -1

    def build(self) -> nn.Module:
        return nn.Flatten(self.start_dim, self.end_dim)


class Unflatten(Layer):
    type: Literal["Unflatten"] = "Unflatten"
    modules: ClassVar = (nn.Unflatten,)
    dim: DimArg
    unflattened_size: Annotated[tuple[Size, ...], Field(min_length=1, max_length=8)]

    def build(self) -> nn.Module:
        return nn.Unflatten(self.dim, self.unflattened_size)

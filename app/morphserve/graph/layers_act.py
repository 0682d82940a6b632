"""Catalogue entries for dropout, activations and reshaping layers (one input, no weights except PReLU's).

Activations that pass part of their domain through unchanged (ReLU on [0, inf)) are identities right after a layer
whose outputs are bounded to that part (`output_range`): their identity rules say so through `pass_through_on`.
"""

from __future__ import annotations

import math
from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator
from torch import nn

from .identity import pass_through_on
from .layer_base import Bounded, DimArg, Layer, Prob, Size

_POSITIVE = (0.0, math.inf)


class _DropoutBase(Layer):
    p: Prob = 0.5

    def build(self) -> nn.Module:
        module: nn.Module = getattr(nn, self.type)(self.p)
        return module

    def init_identity(self, module: nn.Module, prev: Layer | None) -> None:
        pass  # an identity in eval mode


class Dropout(_DropoutBase):
    type: Literal["Dropout"] = "Dropout"
    modules: ClassVar = (nn.Dropout,)
    keeps_shape: ClassVar = True


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
    """An argument-free nn module (its `inplace` flag, if any, is dropped)."""

    def build(self) -> nn.Module:
        module: nn.Module = getattr(nn, self.type)()
        return module


class ReLU(_NoArgs):
    """`nn.ReLU()`"""

    type: Literal["ReLU"] = "ReLU"
    modules: ClassVar = (nn.ReLU,)
    keeps_shape: ClassVar = True

    def output_range(self) -> tuple[float, float]:
        return _POSITIVE

    def init_identity(self, module: nn.Module, prev: Layer | None) -> None:
        pass_through_on(self, _POSITIVE, prev)


class ReLU6(_NoArgs):
    """`nn.ReLU6()`"""

    type: Literal["ReLU6"] = "ReLU6"
    modules: ClassVar = (nn.ReLU6,)

    def output_range(self) -> tuple[float, float]:
        return (0.0, 6.0)

    def init_identity(self, module: nn.Module, prev: Layer | None) -> None:
        pass_through_on(self, (0.0, 6.0), prev)


class SiLU(_NoArgs):
    """`nn.SiLU()`"""

    type: Literal["SiLU"] = "SiLU"
    modules: ClassVar = (nn.SiLU,)
    keeps_shape: ClassVar = True


class Tanh(_NoArgs):
    """`nn.Tanh()`"""

    type: Literal["Tanh"] = "Tanh"
    modules: ClassVar = (nn.Tanh,)
    keeps_shape: ClassVar = True

    def output_range(self) -> tuple[float, float]:
        return (-1.0, 1.0)


class Sigmoid(_NoArgs):
    """`nn.Sigmoid()`"""

    type: Literal["Sigmoid"] = "Sigmoid"
    modules: ClassVar = (nn.Sigmoid,)
    keeps_shape: ClassVar = True

    def output_range(self) -> tuple[float, float]:
        return (0.0, 1.0)


class Identity(_NoArgs):
    """`nn.Identity()`"""

    type: Literal["Identity"] = "Identity"
    modules: ClassVar = (nn.Identity,)
    keeps_shape: ClassVar = True

    def init_identity(self, module: nn.Module, prev: Layer | None) -> None:
        pass


class Hardswish(_NoArgs):
    """`nn.Hardswish()`"""

    type: Literal["Hardswish"] = "Hardswish"
    modules: ClassVar = (nn.Hardswish,)


class Hardsigmoid(_NoArgs):
    """`nn.Hardsigmoid()`"""

    type: Literal["Hardsigmoid"] = "Hardsigmoid"
    modules: ClassVar = (nn.Hardsigmoid,)

    def output_range(self) -> tuple[float, float]:
        return (0.0, 1.0)


class Mish(_NoArgs):
    """`nn.Mish()`"""

    type: Literal["Mish"] = "Mish"
    modules: ClassVar = (nn.Mish,)


class SELU(_NoArgs):
    """`nn.SELU()`"""

    type: Literal["SELU"] = "SELU"
    modules: ClassVar = (nn.SELU,)


class Softsign(_NoArgs):
    """`nn.Softsign()`"""

    type: Literal["Softsign"] = "Softsign"
    modules: ClassVar = (nn.Softsign,)

    def output_range(self) -> tuple[float, float]:
        return (-1.0, 1.0)


class LogSigmoid(_NoArgs):
    """`nn.LogSigmoid()`"""

    type: Literal["LogSigmoid"] = "LogSigmoid"
    modules: ClassVar = (nn.LogSigmoid,)


class Softmax2d(_NoArgs):
    """`nn.Softmax2d()`"""

    type: Literal["Softmax2d"] = "Softmax2d"
    modules: ClassVar = (nn.Softmax2d,)

    def output_range(self) -> tuple[float, float]:
        return (0.0, 1.0)


class LeakyReLU(Layer):
    type: Literal["LeakyReLU"] = "LeakyReLU"
    modules: ClassVar = (nn.LeakyReLU,)
    keeps_shape: ClassVar = True
    negative_slope: Bounded = 0.01

    def build(self) -> nn.Module:
        return nn.LeakyReLU(self.negative_slope)

    def init_identity(self, module: nn.Module, prev: Layer | None) -> None:
        pass_through_on(self, _POSITIVE, prev)


class ELU(Layer):
    type: Literal["ELU"] = "ELU"
    modules: ClassVar = (nn.ELU,)
    keeps_shape: ClassVar = True
    alpha: Bounded = 1.0

    def build(self) -> nn.Module:
        return nn.ELU(self.alpha)

    def init_identity(self, module: nn.Module, prev: Layer | None) -> None:
        pass_through_on(self, _POSITIVE, prev)


class CELU(Layer):
    type: Literal["CELU"] = "CELU"
    modules: ClassVar = (nn.CELU,)
    alpha: Annotated[float, Field(gt=0, le=1e6)] = 1.0

    def build(self) -> nn.Module:
        return nn.CELU(self.alpha)

    def init_identity(self, module: nn.Module, prev: Layer | None) -> None:
        pass_through_on(self, _POSITIVE, prev)


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

    def output_range(self) -> tuple[float, float]:
        return (self.min_val, self.max_val)

    def init_identity(self, module: nn.Module, prev: Layer | None) -> None:
        pass_through_on(self, (self.min_val, self.max_val), prev)


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

    def init_identity(self, module: nn.Module, prev: Layer | None) -> None:
        assert isinstance(module, nn.PReLU)
        nn.init.ones_(module.weight)  # slope 1 on the negative side too: x everywhere


class GELU(Layer):
    type: Literal["GELU"] = "GELU"
    modules: ClassVar = (nn.GELU,)
    keeps_shape: ClassVar = True
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

    def output_range(self) -> tuple[float, float]:
        return (0.0, 1.0)


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

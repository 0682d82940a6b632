"""Catalogue entries that compose other layers: `Sequential` (one after another) and `Residual` (`x + body(x)`).

Their fields hold layer specs of any type, so they refer to `catalogue.LayerSpec`, the union of every entry;
catalogue.py completes them (`model_rebuild`) once that union exists.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

import torch
from pydantic import Field
from torch import nn

from .identity import IdentityError
from .layer_base import Layer

if TYPE_CHECKING:
    from .catalogue import LayerSpec


class ResidualBlock(nn.Module):
    """The module behind the `Residual` layer type."""

    def __init__(self, body: nn.Sequential) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = x + self.body(x)
        return out


class Residual(Layer):
    """`x + body(x)`: the body must keep the shape of its input."""

    type: Literal["Residual"] = "Residual"
    body: Annotated[list[LayerSpec], Field(min_length=1, max_length=256)]

    def build(self) -> nn.Module:
        return ResidualBlock(nn.Sequential(*(layer.build() for layer in self.body)))

    def label(self) -> str:
        return f"Residual[{', '.join(layer.label() for layer in self.body)}]"

    def init_identity(self, module: nn.Module, prev: Layer | None) -> None:
        """`x + body(x)` is `x` when the body outputs zeros: zero the tensors of its last layer."""
        assert isinstance(module, ResidualBlock)
        last_spec, last = self.body[-1], module.body[-1]
        while isinstance(last_spec, Sequential):  # a Sequential outputs what its own last layer outputs
            assert isinstance(last, nn.Sequential)
            last_spec, last = last_spec.layers[-1], last[-1]
        if isinstance(last_spec, Residual):
            raise IdentityError(
                "a Residual is an identity when its last layer outputs zeros, but its last layer is a Residual, "
                "which outputs its input plus its body"
            )
        tensors = list(last.parameters())
        if not tensors:
            raise IdentityError(
                f"a Residual is an identity when its last layer outputs zeros, but {last_spec.type} "
                "has no weights to zero"
            )
        for t in tensors:
            t.zero_()


class Sequential(Layer):
    type: Literal["Sequential"] = "Sequential"
    layers: Annotated[list[LayerSpec], Field(min_length=1, max_length=256)]

    def build(self) -> nn.Module:
        return nn.Sequential(*(layer.build() for layer in self.layers))

    def label(self) -> str:
        return f"Sequential[{', '.join(layer.label() for layer in self.layers)}]"

    def init_identity(self, module: nn.Module, prev: Layer | None) -> None:
        """A chain of identities: each layer reads what the one before it outputs."""
        assert isinstance(module, nn.Sequential)
        before = prev
        for sub_spec, sub in zip(self.layers, module, strict=True):
            sub_spec.init_identity(sub, before)
            before = sub_spec

"""The layer catalogue: the allowlist of layers users may create, each a pydantic schema of its arguments.

A layer spec is plain data (`{"type": "Linear", "in_features": 64, "out_features": 10}`); `build()` maps it to
exactly one `torch.nn` constructor. Nothing in a spec names a Python object or runs code, so specs from the
network are safe to build. Sizes are bounded so that one request cannot allocate an absurd tensor.

The entries live in layers_nn.py (one-input layers) and layers_seq.py (recurrent and attention layers);
`LayerSpec` is their union and `LAYER_TYPES` is read off it, so the two cannot drift apart.
"""

from __future__ import annotations

import typing
from typing import Annotated, Any, Literal

import torch
from pydantic import Field, TypeAdapter, ValidationError
from torch import nn

from .errors import SpecError
from .layer_base import MAX_LAYER_ELEMENTS, IntOrPair, Layer, Size
from .layers_act import (
    CELU,
    ELU,
    GELU,
    GLU,
    SELU,
    AlphaDropout,
    Dropout,
    Dropout1d,
    Dropout2d,
    Dropout3d,
    Flatten,
    Hardsigmoid,
    Hardswish,
    Hardtanh,
    Identity,
    LeakyReLU,
    LogSigmoid,
    LogSoftmax,
    Mish,
    PReLU,
    ReLU,
    ReLU6,
    Sigmoid,
    SiLU,
    Softmax,
    Softmax2d,
    Softplus,
    Softsign,
    Tanh,
    Unflatten,
)
from .layers_nn import (
    AdaptiveAvgPool1d,
    AdaptiveAvgPool2d,
    AdaptiveMaxPool1d,
    AdaptiveMaxPool2d,
    AvgPool1d,
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    BatchNorm3d,
    Conv1d,
    Conv2d,
    Conv3d,
    ConvTranspose1d,
    ConvTranspose2d,
    Embedding,
    GroupNorm,
    InstanceNorm1d,
    InstanceNorm2d,
    LayerNorm,
    Linear,
    MaxPool1d,
    MaxPool2d,
    PixelShuffle,
    PixelUnshuffle,
    RMSNorm,
    Upsample,
)
from .layers_seq import GRU, LSTM, RNN, MultiheadAttention, TransformerEncoderLayer

_Layer = Layer  # the name the rest of the package has used for the base class

__all__ = [
    "CELU",
    "ELU",
    "GELU",
    "GLU",
    "GRU",
    "LAYER_TYPES",
    "LSTM",
    "MAX_LAYER_ELEMENTS",
    "RNN",
    "SELU",
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "AdaptiveMaxPool1d",
    "AdaptiveMaxPool2d",
    "AlphaDropout",
    "AvgPool1d",
    "AvgPool2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "Dropout",
    "Dropout1d",
    "Dropout2d",
    "Dropout3d",
    "Embedding",
    "Flatten",
    "GroupNorm",
    "Hardsigmoid",
    "Hardswish",
    "Hardtanh",
    "Identity",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "IntOrPair",
    "Layer",
    "LayerNorm",
    "LayerSpec",
    "LeakyReLU",
    "Linear",
    "LogSigmoid",
    "LogSoftmax",
    "MaxPool1d",
    "MaxPool2d",
    "Mish",
    "MultiheadAttention",
    "PReLU",
    "PixelShuffle",
    "PixelUnshuffle",
    "RMSNorm",
    "ReLU",
    "ReLU6",
    "Residual",
    "ResidualBlock",
    "Sequential",
    "SiLU",
    "Sigmoid",
    "Size",
    "Softmax",
    "Softmax2d",
    "Softplus",
    "Softsign",
    "Tanh",
    "TransformerEncoderLayer",
    "Unflatten",
    "Upsample",
    "format_validation_error",
    "layer_from_module",
    "parse_layer",
]


class Residual(Layer):
    """`x + body(x)`: the body must keep the shape of its input."""

    type: Literal["Residual"] = "Residual"
    body: Annotated[list[LayerSpec], Field(min_length=1, max_length=256)]

    def build(self) -> nn.Module:
        return ResidualBlock(nn.Sequential(*(layer.build() for layer in self.body)))

    def label(self) -> str:
        return f"Residual[{', '.join(layer.label() for layer in self.body)}]"


class Sequential(Layer):
    type: Literal["Sequential"] = "Sequential"
    layers: Annotated[list[LayerSpec], Field(min_length=1, max_length=256)]

    def build(self) -> nn.Module:
        return nn.Sequential(*(layer.build() for layer in self.layers))

    def label(self) -> str:
        return f"Sequential[{', '.join(layer.label() for layer in self.layers)}]"


class ResidualBlock(nn.Module):
    """The module behind the `Residual` layer type."""

    def __init__(self, body: nn.Sequential) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


LayerSpec = Annotated[
    Linear
    | Conv1d
    | Conv2d
    | Conv3d
    | ConvTranspose1d
    | ConvTranspose2d
    | BatchNorm1d
    | BatchNorm2d
    | BatchNorm3d
    | InstanceNorm1d
    | InstanceNorm2d
    | LayerNorm
    | RMSNorm
    | GroupNorm
    | Dropout
    | Dropout1d
    | Dropout2d
    | Dropout3d
    | AlphaDropout
    | ReLU
    | ReLU6
    | LeakyReLU
    | PReLU
    | ELU
    | CELU
    | SELU
    | GELU
    | SiLU
    | Mish
    | Hardswish
    | Hardsigmoid
    | Hardtanh
    | Softplus
    | Softsign
    | Tanh
    | Sigmoid
    | LogSigmoid
    | GLU
    | Softmax
    | LogSoftmax
    | Softmax2d
    | Identity
    | Flatten
    | Unflatten
    | MaxPool1d
    | MaxPool2d
    | AvgPool1d
    | AvgPool2d
    | AdaptiveAvgPool1d
    | AdaptiveAvgPool2d
    | AdaptiveMaxPool1d
    | AdaptiveMaxPool2d
    | Upsample
    | PixelShuffle
    | PixelUnshuffle
    | Embedding
    | LSTM
    | GRU
    | RNN
    | MultiheadAttention
    | TransformerEncoderLayer
    | Sequential
    | Residual,
    Field(discriminator="type"),
]
Residual.model_rebuild()
Sequential.model_rebuild()

#: Every entry of the union, by its `type` tag.
LAYER_CLASSES: dict[str, type[Layer]] = {
    cls.model_fields["type"].default: cls for cls in typing.get_args(typing.get_args(LayerSpec)[0])
}
LAYER_TYPES: tuple[str, ...] = tuple(LAYER_CLASSES)
#: The torch module classes that map to a catalogue entry (exact types only).
MODULE_TYPES: dict[type[nn.Module], type[Layer]] = {m: cls for cls in LAYER_CLASSES.values() for m in cls.modules}

_ADAPTER: TypeAdapter[LayerSpec] = TypeAdapter(LayerSpec)


def format_validation_error(err: ValidationError, prefix: str = "") -> str:
    """One line naming each bad field, e.g. `layer.in_features: Input should be greater than or equal to 1`."""
    parts = []
    for e in err.errors(include_url=False):
        # Drop the discriminator tags pydantic puts in the location ("layer.Linear.in_features").
        loc = ".".join(str(p) for p in (prefix, *e["loc"]) if p != "" and p not in LAYER_TYPES)
        parts.append(f"{loc}: {e['msg']}" if loc else e["msg"])
    return "; ".join(parts)


def parse_layer(data: Any, where: str = "layer") -> LayerSpec:
    """Validate a JSON layer spec; a `SpecError` names the bad field."""
    if isinstance(data, _Layer):
        return data  # type: ignore[return-value]
    if isinstance(data, dict) and "type" in data and data["type"] not in LAYER_TYPES:
        raise SpecError(
            f"{where}.type: unknown layer type {data['type']!r}; allowed: {', '.join(LAYER_TYPES)}",
            field=f"{where}.type",
        )
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as e:
        raise SpecError(format_validation_error(e, where), field=where) from None


def layer_from_module(module: nn.Module) -> LayerSpec:
    """The catalogue spec of an existing module (for models imported from Python); SpecError if it has none."""
    if isinstance(module, ResidualBlock):
        return Residual(body=[layer_from_module(m) for m in module.body])
    if type(module) is nn.Sequential:
        return Sequential(layers=[layer_from_module(m) for m in module])
    cls = MODULE_TYPES.get(type(module))
    if cls is None:
        raise SpecError(f"module type {type(module).__name__} is not in the layer catalogue")
    return parse_layer({"type": cls.model_fields["type"].default, **cls.read_module(module)})

"""The layer catalogue: the allowlist of layers users may create, each a pydantic schema of its arguments.

A layer spec is plain data (`{"type": "Linear", "in_features": 64, "out_features": 10}`); `build()` maps it to
exactly one `torch.nn` constructor. Nothing in a spec names a Python object or runs code, so specs from the
network are safe to build. Sizes are bounded so that one request cannot allocate an absurd tensor.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator
from torch import nn

from .errors import SpecError

#: The most elements one layer's parameters may hold (1 GiB of FP32).
MAX_LAYER_ELEMENTS = 1 << 28

Size = Annotated[int, Field(ge=1, le=1 << 20)]
IntOrPair = int | tuple[int, int]


def _size_product(*sizes: int | tuple[int, ...]) -> int:
    total = 1
    for s in sizes:
        for v in s if isinstance(s, tuple) else (s,):
            total *= v
    return total


class _Layer(BaseModel):
    """Base of every catalogue entry: strict (unknown fields are errors) and immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def build(self) -> nn.Module:
        raise NotImplementedError

    def args(self) -> dict[str, Any]:
        """The constructor arguments, as the JSON the user wrote (defaults included)."""
        return self.model_dump(mode="json", exclude={"type"})

    def to_json(self) -> dict[str, Any]:
        """The spec as JSON with `type` first, as users write it."""
        return {"type": self.type, **self.args()}  # type: ignore[attr-defined]

    def label(self) -> str:
        """Short human form, e.g. `Linear(in_features=64, out_features=10)`, used in messages and DOT labels."""
        inner = ", ".join(f"{k}={v}" for k, v in self.args().items() if not isinstance(v, list | dict))
        return f"{self.type}({inner})"  # type: ignore[attr-defined]


class Linear(_Layer):
    type: Literal["Linear"] = "Linear"
    in_features: Size
    out_features: Size
    bias: bool = True

    @model_validator(mode="after")
    def _bounded(self) -> Linear:
        if self.in_features * self.out_features > MAX_LAYER_ELEMENTS:
            raise ValueError(f"in_features*out_features exceeds the limit of {MAX_LAYER_ELEMENTS} weights")
        return self

    def build(self) -> nn.Module:
        return nn.Linear(self.in_features, self.out_features, bias=self.bias)


class _Conv(_Layer):
    in_channels: Size
    out_channels: Size
    kernel_size: Annotated[int, Field(ge=1, le=31)] | tuple[Annotated[int, Field(ge=1, le=31)], ...]
    stride: Annotated[int, Field(ge=1, le=64)] | tuple[int, ...] = 1
    padding: Annotated[int, Field(ge=0, le=64)] | tuple[int, ...] | Literal["same", "valid"] = 0
    dilation: Annotated[int, Field(ge=1, le=64)] | tuple[int, ...] = 1
    groups: Size = 1
    bias: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> _Conv:
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError("in_channels and out_channels must both be divisible by groups")
        k = self.kernel_size
        if _size_product(self.in_channels // self.groups, self.out_channels, k) > MAX_LAYER_ELEMENTS:
            raise ValueError(f"the kernel exceeds the limit of {MAX_LAYER_ELEMENTS} weights")
        if self.padding == "same" and self.stride not in (1, (1,), (1, 1)):
            raise ValueError("padding='same' needs stride 1")
        return self


class Conv1d(_Conv):
    type: Literal["Conv1d"] = "Conv1d"

    def build(self) -> nn.Module:
        return nn.Conv1d(**self.args())


class Conv2d(_Conv):
    type: Literal["Conv2d"] = "Conv2d"

    def build(self) -> nn.Module:
        return nn.Conv2d(**self.args())


class _BatchNorm(_Layer):
    num_features: Size
    eps: Annotated[float, Field(gt=0, le=1)] = 1e-5
    momentum: Annotated[float, Field(ge=0, le=1)] | None = 0.1
    affine: bool = True
    track_running_stats: bool = True


class BatchNorm1d(_BatchNorm):
    type: Literal["BatchNorm1d"] = "BatchNorm1d"

    def build(self) -> nn.Module:
        return nn.BatchNorm1d(**self.args())


class BatchNorm2d(_BatchNorm):
    type: Literal["BatchNorm2d"] = "BatchNorm2d"

    def build(self) -> nn.Module:
        return nn.BatchNorm2d(**self.args())


class LayerNorm(_Layer):
    type: Literal["LayerNorm"] = "LayerNorm"
    normalized_shape: Size | tuple[Size, ...]
    eps: Annotated[float, Field(gt=0, le=1)] = 1e-5
    elementwise_affine: bool = True
    bias: bool = True

    @model_validator(mode="after")
    def _bounded(self) -> LayerNorm:
        if _size_product(self.normalized_shape) > MAX_LAYER_ELEMENTS:
            raise ValueError("normalized_shape is too large")
        return self

    def build(self) -> nn.Module:
        return nn.LayerNorm(**self.args())


class GroupNorm(_Layer):
    type: Literal["GroupNorm"] = "GroupNorm"
    num_groups: Size
    num_channels: Size
    eps: Annotated[float, Field(gt=0, le=1)] = 1e-5
    affine: bool = True

    @model_validator(mode="after")
    def _divisible(self) -> GroupNorm:
        if self.num_channels % self.num_groups:
            raise ValueError("num_channels must be divisible by num_groups")
        return self

    def build(self) -> nn.Module:
        return nn.GroupNorm(**self.args())


class Dropout(_Layer):
    type: Literal["Dropout"] = "Dropout"
    p: Annotated[float, Field(ge=0, le=1)] = 0.5

    def build(self) -> nn.Module:
        return nn.Dropout(self.p)


class _NoArgs(_Layer):
    def build(self) -> nn.Module:
        return getattr(nn, self.type)()  # type: ignore[attr-defined]


class ReLU(_NoArgs):
    type: Literal["ReLU"] = "ReLU"


class SiLU(_NoArgs):
    type: Literal["SiLU"] = "SiLU"


class Tanh(_NoArgs):
    type: Literal["Tanh"] = "Tanh"


class Sigmoid(_NoArgs):
    type: Literal["Sigmoid"] = "Sigmoid"


class Identity(_NoArgs):
    type: Literal["Identity"] = "Identity"


class LeakyReLU(_Layer):
    type: Literal["LeakyReLU"] = "LeakyReLU"
    negative_slope: float = 0.01

    def build(self) -> nn.Module:
        return nn.LeakyReLU(self.negative_slope)


class GELU(_Layer):
    type: Literal["GELU"] = "GELU"
    approximate: Literal["none", "tanh"] = "none"

    def build(self) -> nn.Module:
        return nn.GELU(approximate=self.approximate)


class Softmax(_Layer):
    type: Literal["Softmax"] = "Softmax"
    dim: Annotated[int, Field(ge=-8, le=8)] = -1

    def build(self) -> nn.Module:
        return nn.Softmax(dim=self.dim)


class Flatten(_Layer):
    type: Literal["Flatten"] = "Flatten"
    start_dim: Annotated[int, Field(ge=-8, le=8)] = 1
    end_dim: Annotated[int, Field(ge=-8, le=8)] = -1

    def build(self) -> nn.Module:
        return nn.Flatten(self.start_dim, self.end_dim)


class MaxPool2d(_Layer):
    type: Literal["MaxPool2d"] = "MaxPool2d"
    kernel_size: Annotated[int, Field(ge=1, le=64)] | tuple[int, int]
    stride: Annotated[int, Field(ge=1, le=64)] | tuple[int, int] | None = None
    padding: Annotated[int, Field(ge=0, le=32)] | tuple[int, int] = 0
    dilation: Annotated[int, Field(ge=1, le=32)] | tuple[int, int] = 1
    ceil_mode: bool = False

    def build(self) -> nn.Module:
        return nn.MaxPool2d(**self.args())


class AvgPool2d(_Layer):
    type: Literal["AvgPool2d"] = "AvgPool2d"
    kernel_size: Annotated[int, Field(ge=1, le=64)] | tuple[int, int]
    stride: Annotated[int, Field(ge=1, le=64)] | tuple[int, int] | None = None
    padding: Annotated[int, Field(ge=0, le=32)] | tuple[int, int] = 0
    ceil_mode: bool = False
    count_include_pad: bool = True

    def build(self) -> nn.Module:
        return nn.AvgPool2d(**self.args())


class AdaptiveAvgPool2d(_Layer):
    type: Literal["AdaptiveAvgPool2d"] = "AdaptiveAvgPool2d"
    output_size: Size | tuple[Size | None, Size | None]

    def build(self) -> nn.Module:
        return nn.AdaptiveAvgPool2d(self.output_size)


class Embedding(_Layer):
    type: Literal["Embedding"] = "Embedding"
    num_embeddings: Size
    embedding_dim: Size
    padding_idx: int | None = None

    @model_validator(mode="after")
    def _bounded(self) -> Embedding:
        if self.num_embeddings * self.embedding_dim > MAX_LAYER_ELEMENTS:
            raise ValueError(f"num_embeddings*embedding_dim exceeds the limit of {MAX_LAYER_ELEMENTS}")
        if self.padding_idx is not None and not -self.num_embeddings <= self.padding_idx < self.num_embeddings:
            raise ValueError("padding_idx must be within num_embeddings")
        return self

    def build(self) -> nn.Module:
        return nn.Embedding(self.num_embeddings, self.embedding_dim, padding_idx=self.padding_idx)


class Residual(_Layer):
    """`x + body(x)`: the body must keep the shape of its input."""

    type: Literal["Residual"] = "Residual"
    body: Annotated[list[LayerSpec], Field(min_length=1, max_length=256)]

    def build(self) -> nn.Module:
        return ResidualBlock(nn.Sequential(*(layer.build() for layer in self.body)))

    def label(self) -> str:
        return f"Residual[{', '.join(layer.label() for layer in self.body)}]"


class Sequential(_Layer):
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
    | BatchNorm1d
    | BatchNorm2d
    | LayerNorm
    | GroupNorm
    | Dropout
    | ReLU
    | LeakyReLU
    | GELU
    | SiLU
    | Tanh
    | Sigmoid
    | Softmax
    | Identity
    | Flatten
    | MaxPool2d
    | AvgPool2d
    | AdaptiveAvgPool2d
    | Embedding
    | Sequential
    | Residual,
    Field(discriminator="type"),
]
Residual.model_rebuild()
Sequential.model_rebuild()

LAYER_TYPES: tuple[str, ...] = (
    "Linear", "Conv1d", "Conv2d", "BatchNorm1d", "BatchNorm2d", "LayerNorm", "GroupNorm", "Dropout", "ReLU",
    "LeakyReLU", "GELU", "SiLU", "Tanh", "Sigmoid", "Softmax", "Identity", "Flatten", "MaxPool2d", "AvgPool2d",
    "AdaptiveAvgPool2d", "Embedding", "Sequential", "Residual",
)  # fmt: skip

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
    """The catalogue spec of an existing module (for models traced from Python); SpecError if it has none."""
    name = type(module).__name__
    if isinstance(module, ResidualBlock):
        return Residual(body=[layer_from_module(m) for m in module.body])
    if type(module) is nn.Sequential:
        return Sequential(layers=[layer_from_module(m) for m in module])
    if name not in LAYER_TYPES or type(module) is not getattr(nn, name, None):
        raise SpecError(f"module type {name} is not in the layer catalogue")
    cls: type[_Layer] = globals()[name]
    kwargs = {}
    for field in cls.model_fields:
        if field == "type":
            continue
        if field == "bias" and isinstance(module, nn.Linear | nn.Conv1d | nn.Conv2d | nn.LayerNorm):
            kwargs["bias"] = module.bias is not None
        elif field == "p":
            kwargs["p"] = module.p  # type: ignore[assignment]
        elif hasattr(module, field):
            kwargs[field] = getattr(module, field)
    if name == "Dropout":
        kwargs = {"p": module.p}  # type: ignore[dict-item]
    return parse_layer({"type": name, **kwargs})

"""The layer catalogue: the allowlist of layers users may create, each a pydantic schema of its arguments.

A layer spec is plain data (`{"type": "Linear", "in_features": 64, "out_features": 10}`); `build()` maps it to
exactly one `torch.nn` constructor. Nothing in a spec names a Python object or runs code, so specs from the
network are safe to build. Sizes are bounded so that one request cannot allocate an absurd tensor.

Each entry is one self-describing class (schema, module, identity rule, shape rule: layer_base.py) in
layers_act.py (dropout, activations, reshaping), layers_nn.py (the other one-input layers), layers_seq.py
(recurrent and attention layers) or layers_compose.py (Sequential, Residual). `LAYERS` is the one table that
registers them: `LayerSpec`, `LAYER_TYPES` and `MODULE_TYPES` are read off it, so they cannot drift apart.
"""

from __future__ import annotations

import functools
import operator
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias

from pydantic import Field, TypeAdapter, ValidationError
from torch import nn

from . import layers_act as act
from . import layers_compose as compose
from . import layers_nn as nns
from . import layers_seq as seq
from .errors import SpecError
from .layer_base import MAX_LAYER_ELEMENTS, IntOrPair, Layer, Size
from .layers_compose import Residual, ResidualBlock, Sequential
from .layers_seq import GRU, LSTM, RNN, MultiheadAttention, TransformerEncoderLayer

__all__ = [
    "GRU",
    "LAYERS",
    "LAYER_CLASSES",
    "LAYER_TYPES",
    "LSTM",
    "MAX_LAYER_ELEMENTS",
    "MODULE_TYPES",
    "RNN",
    "IntOrPair",
    "Layer",
    "LayerSpec",
    "MultiheadAttention",
    "Residual",
    "ResidualBlock",
    "Sequential",
    "Size",
    "TransformerEncoderLayer",
    "format_validation_error",
    "layer_from_module",
    "parse_layer",
]

#: Every layer users may create, in the order the catalogue lists them (in messages and in /v1/catalogue).
LAYERS: tuple[type[Layer], ...] = (
    nns.Linear,
    nns.Conv1d,
    nns.Conv2d,
    nns.Conv3d,
    nns.ConvTranspose1d,
    nns.ConvTranspose2d,
    nns.BatchNorm1d,
    nns.BatchNorm2d,
    nns.BatchNorm3d,
    nns.InstanceNorm1d,
    nns.InstanceNorm2d,
    nns.LayerNorm,
    nns.RMSNorm,
    nns.GroupNorm,
    act.Dropout,
    act.Dropout1d,
    act.Dropout2d,
    act.Dropout3d,
    act.AlphaDropout,
    act.ReLU,
    act.ReLU6,
    act.LeakyReLU,
    act.PReLU,
    act.ELU,
    act.CELU,
    act.SELU,
    act.GELU,
    act.SiLU,
    act.Mish,
    act.Hardswish,
    act.Hardsigmoid,
    act.Hardtanh,
    act.Softplus,
    act.Softsign,
    act.Tanh,
    act.Sigmoid,
    act.LogSigmoid,
    act.GLU,
    act.Softmax,
    act.LogSoftmax,
    act.Softmax2d,
    act.Identity,
    act.Flatten,
    act.Unflatten,
    nns.MaxPool1d,
    nns.MaxPool2d,
    nns.AvgPool1d,
    nns.AvgPool2d,
    nns.AdaptiveAvgPool1d,
    nns.AdaptiveAvgPool2d,
    nns.AdaptiveMaxPool1d,
    nns.AdaptiveMaxPool2d,
    nns.Upsample,
    nns.PixelShuffle,
    nns.PixelUnshuffle,
    nns.Embedding,
    seq.LSTM,
    seq.GRU,
    seq.RNN,
    seq.MultiheadAttention,
    seq.TransformerEncoderLayer,
    compose.Sequential,
    compose.Residual,
)

if TYPE_CHECKING:
    # What code may rely on a spec of unknown type: the `Layer` interface (narrow with isinstance for its fields).
    LayerSpec: TypeAlias = Layer
else:
    #: The union of every entry, discriminated by `type`: what pydantic validates a layer spec against.
    LayerSpec = Annotated[functools.reduce(operator.or_, LAYERS), Field(discriminator="type")]
compose.Residual.model_rebuild()
compose.Sequential.model_rebuild()

#: Every entry, by its `type` tag.
LAYER_CLASSES: dict[str, type[Layer]] = {cls.model_fields["type"].default: cls for cls in LAYERS}
LAYER_TYPES: tuple[str, ...] = tuple(LAYER_CLASSES)
#: The torch module classes that map to a catalogue entry (exact types only).
MODULE_TYPES: dict[type[nn.Module], type[Layer]] = {m: cls for cls in LAYERS for m in cls.modules}

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
    if isinstance(data, Layer):
        return data
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

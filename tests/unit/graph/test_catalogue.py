"""The layer catalogue: every type builds exactly its nn module; bad specs are errors naming the field."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from app.graph import LAYER_TYPES, SpecError, parse_layer
from app.graph.catalogue import ResidualBlock, layer_from_module

REQUIRED = {
    "Linear", "Conv1d", "Conv2d", "BatchNorm1d", "BatchNorm2d", "LayerNorm", "GroupNorm", "Dropout", "ReLU",
    "LeakyReLU", "GELU", "SiLU", "Tanh", "Sigmoid", "Softmax", "Identity", "Flatten", "MaxPool2d", "AvgPool2d",
    "AdaptiveAvgPool2d", "Embedding", "Sequential", "Residual",
}  # fmt: skip

EXAMPLES: dict[str, tuple[dict[str, Any], type[nn.Module]]] = {
    "Linear": ({"in_features": 4, "out_features": 3}, nn.Linear),
    "Conv1d": ({"in_channels": 2, "out_channels": 4, "kernel_size": 3}, nn.Conv1d),
    "Conv2d": ({"in_channels": 2, "out_channels": 4, "kernel_size": [3, 1], "padding": "same"}, nn.Conv2d),
    "BatchNorm1d": ({"num_features": 4}, nn.BatchNorm1d),
    "BatchNorm2d": ({"num_features": 4, "affine": False}, nn.BatchNorm2d),
    "LayerNorm": ({"normalized_shape": [4, 5]}, nn.LayerNorm),
    "GroupNorm": ({"num_groups": 2, "num_channels": 4}, nn.GroupNorm),
    "Dropout": ({"p": 0.25}, nn.Dropout),
    "ReLU": ({}, nn.ReLU),
    "LeakyReLU": ({"negative_slope": 0.3}, nn.LeakyReLU),
    "GELU": ({"approximate": "tanh"}, nn.GELU),
    "SiLU": ({}, nn.SiLU),
    "Tanh": ({}, nn.Tanh),
    "Sigmoid": ({}, nn.Sigmoid),
    "Softmax": ({"dim": 1}, nn.Softmax),
    "Identity": ({}, nn.Identity),
    "Flatten": ({"start_dim": 1}, nn.Flatten),
    "MaxPool2d": ({"kernel_size": 2}, nn.MaxPool2d),
    "AvgPool2d": ({"kernel_size": 2, "stride": 1}, nn.AvgPool2d),
    "AdaptiveAvgPool2d": ({"output_size": 1}, nn.AdaptiveAvgPool2d),
    "Embedding": ({"num_embeddings": 10, "embedding_dim": 4, "padding_idx": 0}, nn.Embedding),
    "Sequential": ({"layers": [{"type": "Linear", "in_features": 4, "out_features": 4}, {"type": "ReLU"}]},
                   nn.Sequential),
    "Residual": ({"body": [{"type": "Linear", "in_features": 4, "out_features": 4}]}, ResidualBlock),
}  # fmt: skip


def test_catalogue_has_every_required_type() -> None:
    assert set(LAYER_TYPES) == REQUIRED == set(EXAMPLES)


@pytest.mark.parametrize("type_", sorted(EXAMPLES))
def test_every_type_parses_builds_and_round_trips(type_: str) -> None:
    args, cls = EXAMPLES[type_]
    spec = parse_layer({"type": type_, **args})
    assert spec.type == type_
    module = spec.build()
    assert type(module) is cls
    j = spec.to_json()
    assert next(iter(j)) == "type" and j["type"] == type_
    assert parse_layer(j) == spec  # JSON form (with defaults) parses back to the same spec
    assert spec.label().startswith(type_)
    if type_ not in ("Sequential", "Residual"):
        # the spec recovered from a built module builds the same module (it may spell defaults differently)
        back = layer_from_module(module)
        assert back.type == type_ and repr(back.build()) == repr(module)


def test_built_modules_get_the_arguments() -> None:
    m = parse_layer({"type": "Conv2d", "in_channels": 2, "out_channels": 4, "kernel_size": 5, "stride": 2,
                     "padding": 2, "bias": False}).build()  # fmt: skip
    assert (m.kernel_size, m.stride, m.padding, m.bias) == ((5, 5), (2, 2), (2, 2), None)
    lin = parse_layer({"type": "Linear", "in_features": 7, "out_features": 3, "bias": False}).build()
    assert lin.weight.shape == (3, 7) and lin.bias is None
    res = parse_layer({"type": "Residual", "body": [{"type": "Linear", "in_features": 4, "out_features": 4}]}).build()
    x = torch.randn(2, 4)
    with torch.no_grad():
        assert torch.allclose(res(x), x + res.body(x))


def test_labels() -> None:
    assert parse_layer({"type": "Linear", "in_features": 64, "out_features": 10}).label() == (
        "Linear(in_features=64, out_features=10, bias=True)"
    )
    assert parse_layer({"type": "ReLU"}).label() == "ReLU()"
    assert parse_layer({"type": "Residual", "body": [{"type": "ReLU"}, {"type": "Tanh"}]}).label() == (
        "Residual[ReLU(), Tanh()]"
    )


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"type": "Nope"}, "layer.type: unknown layer type 'Nope'"),
        ({"type": "Linear", "in_features": 0, "out_features": 3}, "layer.in_features: Input should be greater"),
        ({"type": "Linear", "in_features": 3}, "layer.out_features: Field required"),
        ({"type": "Linear", "in_features": 3, "out_features": 3, "activation": "relu"},
         "layer.activation: Extra inputs are not permitted"),
        ({"type": "Linear", "in_features": 1 << 15, "out_features": 1 << 15}, "exceeds the limit"),
        ({"type": "Conv2d", "in_channels": 3, "out_channels": 4, "kernel_size": 3, "groups": 2}, "divisible by groups"),
        ({"type": "Conv2d", "in_channels": 3, "out_channels": 4, "kernel_size": 3, "stride": 2, "padding": "same"},
         "padding='same' needs stride 1"),
        ({"type": "Conv2d", "in_channels": 3, "out_channels": 4, "kernel_size": 99}, "layer.kernel_size"),
        ({"type": "GroupNorm", "num_groups": 3, "num_channels": 4}, "divisible by num_groups"),
        ({"type": "Dropout", "p": -0.1}, "layer.p"),
        ({"type": "Softmax", "dim": 99}, "layer.dim"),
        ({"type": "Embedding", "num_embeddings": 4, "embedding_dim": 2, "padding_idx": 9}, "padding_idx"),
        ({"type": "Sequential", "layers": [{"type": "Linear", "in_features": 2}]}, "layer.layers.0.out_features"),
        ({"type": "Residual", "body": []}, "layer.body"),
        ({"type": "ReLU", "inplace": True}, "layer.inplace"),
        ("Linear", "layer"),
    ],
)  # fmt: skip
def test_bad_layer_specs_name_the_field(data: Any, needle: str) -> None:
    with pytest.raises(SpecError) as ei:
        parse_layer(data)
    assert needle in ei.value.message, ei.value.message


def test_field_prefix_is_configurable() -> None:
    with pytest.raises(SpecError) as ei:
        parse_layer({"type": "Linear", "in_features": -2, "out_features": 1}, where="ops.3.layer")
    assert ei.value.message.startswith("ops.3.layer.in_features")


def test_layer_from_module_rejects_non_catalogue_modules() -> None:
    with pytest.raises(SpecError, match="Softplus is not in the layer catalogue"):
        layer_from_module(nn.Softplus())

    class MyLinear(nn.Linear):
        pass

    with pytest.raises(SpecError, match="MyLinear is not in the layer catalogue"):
        layer_from_module(MyLinear(2, 2))

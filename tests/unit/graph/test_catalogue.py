"""The layer catalogue: every type builds exactly its nn module; bad specs are errors naming the field."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from morphserve.graph import LAYER_TYPES, SpecError, parse_layer
from morphserve.graph.catalogue import LAYER_CLASSES, ResidualBlock, layer_from_module
from morphserve.graph.layers_seq import GRULayer, LSTMLayer, MultiheadAttentionLayer, RNNLayer

REQUIRED = {
    "Linear",
    "Conv1d",
    "Conv2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "LayerNorm",
    "GroupNorm",
    "Dropout",
    "ReLU",
    "LeakyReLU",
    "GELU",
    "SiLU",
    "Tanh",
    "Sigmoid",
    "Softmax",
    "Identity",
    "Flatten",
    "MaxPool2d",
    "AvgPool2d",
    "AdaptiveAvgPool2d",
    "Embedding",
    "Sequential",
    "Residual",
}

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
    "Sequential": (
        {"layers": [{"type": "Linear", "in_features": 4, "out_features": 4}, {"type": "ReLU"}]},
        nn.Sequential,
    ),
    "Residual": ({"body": [{"type": "Linear", "in_features": 4, "out_features": 4}]}, ResidualBlock),
    "Conv3d": (
        {"in_channels": 2, "out_channels": 4, "kernel_size": 3, "padding_mode": "reflect", "padding": 1},
        nn.Conv3d,
    ),
    "ConvTranspose1d": ({"in_channels": 2, "out_channels": 4, "kernel_size": 3, "stride": 2}, nn.ConvTranspose1d),
    "ConvTranspose2d": (
        {"in_channels": 4, "out_channels": 2, "kernel_size": 2, "stride": 2, "output_padding": 1},
        nn.ConvTranspose2d,
    ),
    "BatchNorm3d": ({"num_features": 4}, nn.BatchNorm3d),
    "InstanceNorm1d": ({"num_features": 4}, nn.InstanceNorm1d),
    "InstanceNorm2d": ({"num_features": 4, "affine": True}, nn.InstanceNorm2d),
    "RMSNorm": ({"normalized_shape": 8, "eps": 1e-6}, nn.RMSNorm),
    "Dropout1d": ({"p": 0.1}, nn.Dropout1d),
    "Dropout2d": ({"p": 0.2}, nn.Dropout2d),
    "Dropout3d": ({}, nn.Dropout3d),
    "AlphaDropout": ({"p": 0.1}, nn.AlphaDropout),
    "ReLU6": ({}, nn.ReLU6),
    "PReLU": ({"num_parameters": 4}, nn.PReLU),
    "ELU": ({"alpha": 0.5}, nn.ELU),
    "CELU": ({"alpha": 2.0}, nn.CELU),
    "SELU": ({}, nn.SELU),
    "Mish": ({}, nn.Mish),
    "Hardswish": ({}, nn.Hardswish),
    "Hardsigmoid": ({}, nn.Hardsigmoid),
    "Hardtanh": ({"min_val": 0.0, "max_val": 6.0}, nn.Hardtanh),
    "Softplus": ({"beta": 2.0}, nn.Softplus),
    "Softsign": ({}, nn.Softsign),
    "LogSigmoid": ({}, nn.LogSigmoid),
    "GLU": ({"dim": 1}, nn.GLU),
    "LogSoftmax": ({"dim": 1}, nn.LogSoftmax),
    "Softmax2d": ({}, nn.Softmax2d),
    "Unflatten": ({"dim": 1, "unflattened_size": [2, 2]}, nn.Unflatten),
    "MaxPool1d": ({"kernel_size": 2}, nn.MaxPool1d),
    "AvgPool1d": ({"kernel_size": 3, "padding": 1}, nn.AvgPool1d),
    "AdaptiveAvgPool1d": ({"output_size": 4}, nn.AdaptiveAvgPool1d),
    "AdaptiveMaxPool1d": ({"output_size": 2}, nn.AdaptiveMaxPool1d),
    "AdaptiveMaxPool2d": ({"output_size": [2, 3]}, nn.AdaptiveMaxPool2d),
    "Upsample": ({"scale_factor": 2.0, "mode": "bilinear", "align_corners": False}, nn.Upsample),
    "PixelShuffle": ({"upscale_factor": 2}, nn.PixelShuffle),
    "PixelUnshuffle": ({"downscale_factor": 2}, nn.PixelUnshuffle),
    "LSTM": (
        {"input_size": 4, "hidden_size": 8, "num_layers": 2, "bidirectional": True, "batch_first": True},
        LSTMLayer,
    ),
    "GRU": ({"input_size": 4, "hidden_size": 8}, GRULayer),
    "RNN": ({"input_size": 4, "hidden_size": 8, "nonlinearity": "relu"}, RNNLayer),
    "MultiheadAttention": (
        {"embed_dim": 8, "num_heads": 2, "batch_first": True, "kdim": 6, "vdim": 5},
        MultiheadAttentionLayer,
    ),
    "TransformerEncoderLayer": (
        {
            "d_model": 8,
            "nhead": 2,
            "dim_feedforward": 16,
            "activation": "gelu",
            "batch_first": True,
            "norm_first": True,
        },
        nn.TransformerEncoderLayer,
    ),
}


def test_catalogue_has_every_required_type() -> None:
    assert set(LAYER_TYPES) >= REQUIRED
    assert set(LAYER_TYPES) == set(EXAMPLES) == set(LAYER_CLASSES)
    assert len(LAYER_TYPES) == len(set(LAYER_TYPES))


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
        assert {k: v.shape for k, v in back.build().state_dict().items()} == {
            k: v.shape for k, v in module.state_dict().items()
        }


def test_built_modules_get_the_arguments() -> None:
    m = parse_layer(
        {
            "type": "Conv2d",
            "in_channels": 2,
            "out_channels": 4,
            "kernel_size": 5,
            "stride": 2,
            "padding": 2,
            "bias": False,
        }
    ).build()
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
        (
            {"type": "Linear", "in_features": 3, "out_features": 3, "activation": "relu"},
            "layer.activation: Extra inputs are not permitted",
        ),
        ({"type": "Linear", "in_features": 1 << 15, "out_features": 1 << 15}, "exceeds the limit"),
        ({"type": "Conv2d", "in_channels": 3, "out_channels": 4, "kernel_size": 3, "groups": 2}, "divisible by groups"),
        (
            {"type": "Conv2d", "in_channels": 3, "out_channels": 4, "kernel_size": 3, "stride": 2, "padding": "same"},
            "padding='same' needs stride 1",
        ),
        ({"type": "Conv2d", "in_channels": 3, "out_channels": 4, "kernel_size": 99}, "layer.kernel_size"),
        ({"type": "GroupNorm", "num_groups": 3, "num_channels": 4}, "divisible by num_groups"),
        ({"type": "Dropout", "p": -0.1}, "layer.p"),
        ({"type": "Softmax", "dim": 99}, "layer.dim"),
        ({"type": "Embedding", "num_embeddings": 4, "embedding_dim": 2, "padding_idx": 9}, "padding_idx"),
        ({"type": "Sequential", "layers": [{"type": "Linear", "in_features": 2}]}, "layer.layers.0.out_features"),
        ({"type": "Residual", "body": []}, "layer.body"),
        ({"type": "ReLU", "inplace": True}, "layer.inplace"),
        ({"type": "LSTM", "input_size": 1 << 14, "hidden_size": 1 << 14}, "exceed the limit"),
        ({"type": "LSTM", "input_size": 4, "hidden_size": 4, "num_layers": 100}, "layer.num_layers"),
        ({"type": "MultiheadAttention", "embed_dim": 10, "num_heads": 3}, "divisible by num_heads"),
        ({"type": "MultiheadAttention", "embed_dim": 1 << 14, "num_heads": 2}, "exceed the limit"),
        ({"type": "TransformerEncoderLayer", "d_model": 8, "nhead": 3}, "divisible by nhead"),
        ({"type": "TransformerEncoderLayer", "d_model": 8, "nhead": 2, "activation": "exec"}, "layer.activation"),
        (
            {"type": "ConvTranspose2d", "in_channels": 3, "out_channels": 4, "kernel_size": 2, "groups": 2},
            "divisible by groups",
        ),
        ({"type": "Upsample"}, "exactly one of 'size' or 'scale_factor'"),
        ({"type": "Upsample", "scale_factor": 2.0, "align_corners": True}, "align_corners"),
        ({"type": "Upsample", "scale_factor": 1000.0}, "layer.scale_factor"),
        ({"type": "Hardtanh", "min_val": 1.0, "max_val": 0.0}, "must not exceed"),
        ({"type": "PixelShuffle", "upscale_factor": 100}, "layer.upscale_factor"),
        ({"type": "PReLU", "num_parameters": 0}, "layer.num_parameters"),
        (
            {"type": "Conv2d", "in_channels": 2, "out_channels": 2, "kernel_size": 3, "padding_mode": "mirror"},
            "layer.padding_mode",
        ),
        ("Linear", "layer"),
    ],
)
def test_bad_layer_specs_name_the_field(data: Any, needle: str) -> None:
    with pytest.raises(SpecError) as ei:
        parse_layer(data)
    assert needle in ei.value.message, ei.value.message


def test_field_prefix_is_configurable() -> None:
    with pytest.raises(SpecError) as ei:
        parse_layer({"type": "Linear", "in_features": -2, "out_features": 1}, where="ops.3.layer")
    assert ei.value.message.startswith("ops.3.layer.in_features")


def test_layer_from_module_rejects_non_catalogue_modules() -> None:
    with pytest.raises(SpecError, match="Bilinear is not in the layer catalogue"):
        layer_from_module(nn.Bilinear(2, 2, 2))
    with pytest.raises(SpecError, match="Embedding with max_norm=1.0 is not in the layer catalogue"):
        layer_from_module(nn.Embedding(4, 2, max_norm=1.0))
    with pytest.raises(SpecError, match="MaxPool2d with return_indices=True"):
        layer_from_module(nn.MaxPool2d(2, return_indices=True))
    with pytest.raises(SpecError, match="TransformerEncoderLayer with activation"):
        layer_from_module(nn.TransformerEncoderLayer(8, 2, activation=nn.SiLU()))

    class MyLinear(nn.Linear):
        pass

    with pytest.raises(SpecError, match="MyLinear is not in the layer catalogue"):
        layer_from_module(MyLinear(2, 2))


def test_sequence_layers_declare_inputs_and_outputs() -> None:
    x = torch.randn(2, 5, 4)
    lstm = parse_layer({"type": "LSTM", "input_size": 4, "hidden_size": 8, "batch_first": True})
    assert lstm.input_range() == (1, 3) and lstm.n_outputs() == 3
    out, h, c = lstm.build()(x)
    assert out.shape == (2, 5, 8) and h.shape == c.shape == (1, 2, 8)
    out2, _, _ = lstm.build()(x, torch.zeros(1, 2, 8), torch.zeros(1, 2, 8))
    assert out2.shape == out.shape
    mha = parse_layer({"type": "MultiheadAttention", "embed_dim": 8, "num_heads": 2, "batch_first": True})
    assert mha.input_range() == (3, 3) and mha.n_outputs() == 1
    q = torch.randn(2, 5, 8)
    assert mha.build()(q, q, q).shape == (2, 5, 8)
    weighted = mha.model_copy(update={"need_weights": True})
    assert weighted.n_outputs() == 2 and len(weighted.build()(q, q, q)) == 2
    gru = parse_layer({"type": "GRU", "input_size": 4, "hidden_size": 3})
    assert gru.input_range() == (1, 2) and gru.n_outputs() == 2
    assert parse_layer({"type": "Linear", "in_features": 2, "out_features": 2}).input_range() == (1, 1)


def test_wrapped_modules_compute_what_torch_computes() -> None:
    torch.manual_seed(0)
    ref = nn.LSTM(4, 6, batch_first=True).eval()
    mine = layer_from_module(ref).build().eval()
    mine.load_state_dict(ref.state_dict())
    x = torch.randn(3, 7, 4)
    with torch.no_grad():
        (o1, (h1, c1)), (o2, h2, c2) = ref(x), mine(x)
    assert torch.equal(o1, o2) and torch.equal(h1, h2) and torch.equal(c1, c2)
    mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    m2 = layer_from_module(mha).build().eval()
    m2.load_state_dict(mha.state_dict())
    q = torch.randn(2, 4, 8)
    with torch.no_grad():
        assert torch.equal(mha(q, q, q, need_weights=False)[0], m2(q, q, q))

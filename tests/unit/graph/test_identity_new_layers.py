"""Identity rules of the layers added for imported models: exact where weights exist, a reason where not."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from morphserve.graph import EditError, LiveModel, from_spec


def _model(shape: list[int], first: dict[str, Any]) -> LiveModel:
    """input -> `first` (what the inserted layer reads) -> output."""
    return LiveModel(
        from_spec(
            {
                "name": "m",
                "inputs": [{"name": "x", "shape": shape}],
                "outputs": [{"name": "out", "node": "a"}],
                "nodes": [{"id": "a", "layer": first, "inputs": ["x"]}],
            },
            seed=3,
        )
    )


def _x(shape: list[int]) -> torch.Tensor:
    return torch.randn([4 if d == -1 else d for d in shape], generator=torch.Generator().manual_seed(0))


IMG = [-1, 4, 8, 8]
SEQ = [-1, 5, 8]
RELU, RELU6, TANH = {"type": "ReLU"}, {"type": "ReLU6"}, {"type": "Tanh"}
EXACT = [
    (IMG, RELU6, {"type": "ReLU6"}),
    (IMG, RELU6, {"type": "Hardtanh", "min_val": 0.0, "max_val": 6.0}),
    (IMG, TANH, {"type": "Hardtanh"}),
    (IMG, RELU, {"type": "LeakyReLU", "negative_slope": 0.3}),
    (IMG, RELU, {"type": "ELU"}),
    (IMG, RELU, {"type": "CELU", "alpha": 2.0}),
    (IMG, TANH, {"type": "PReLU", "num_parameters": 4}),
    (
        IMG,
        TANH,
        {
            "type": "Conv2d",
            "in_channels": 4,
            "out_channels": 4,
            "kernel_size": 3,
            "padding": 1,
            "padding_mode": "reflect",
        },
    ),
    (IMG, TANH, {"type": "ConvTranspose2d", "in_channels": 4, "out_channels": 4, "kernel_size": 3, "padding": 1}),
    (IMG, TANH, {"type": "InstanceNorm2d", "num_features": 4, "track_running_stats": True, "affine": True}),
    (IMG, TANH, {"type": "Dropout2d"}),
    (IMG, TANH, {"type": "MaxPool2d", "kernel_size": 1}),
    (IMG, TANH, {"type": "AvgPool2d", "kernel_size": 1}),
    (IMG, TANH, {"type": "Upsample", "scale_factor": 1.0}),
    (IMG, TANH, {"type": "PixelShuffle", "upscale_factor": 1}),
    ([-1, 4, 2, 4, 4], TANH, {"type": "Conv3d", "in_channels": 4, "out_channels": 4, "kernel_size": 3, "padding": 1}),
    ([-1, 4, 2, 4, 4], TANH, {"type": "BatchNorm3d", "num_features": 4}),
    ([-1, 4, 8], TANH, {"type": "ConvTranspose1d", "in_channels": 4, "out_channels": 4, "kernel_size": 1}),
    (
        SEQ,
        TANH,
        {
            "type": "TransformerEncoderLayer",
            "d_model": 8,
            "nhead": 2,
            "dim_feedforward": 16,
            "batch_first": True,
            "norm_first": True,
        },
    ),
]


@pytest.mark.parametrize(
    ("shape", "first", "layer"), EXACT, ids=lambda v: v.get("type") if isinstance(v, dict) else None
)
def test_identity_insert_is_exact(shape: list[int], first: dict[str, Any], layer: dict[str, Any]) -> None:
    lm = _model(shape, first)
    v2 = lm.propose([{"op": "insert", "after": "a", "layer": layer, "init": "identity", "name": "i"}])
    x = _x(shape)
    (y1,), (y2,) = lm.current.run(x), v2.run(x)
    assert float((y1 - y2).abs().max()) <= 1e-6
    # and the default init really is not an identity for the layers with weights (the rule did something)
    if layer["type"] in ("PReLU", "Conv2d", "ConvTranspose2d", "TransformerEncoderLayer", "Conv3d"):
        v3 = lm.propose([{"op": "insert", "after": "a", "layer": layer, "name": "i", "seed": 5}])
        assert float((y1 - v3.run(x)[0]).abs().max()) > 1e-4


REFUSED = [
    (IMG, TANH, {"type": "ReLU6"}, "after Tanh, whose outputs span [-1.0, 1.0]"),
    (IMG, {"type": "Identity"}, {"type": "LeakyReLU"}, "after Identity, which outputs any value"),
    (SEQ, TANH, {"type": "LSTM", "input_size": 8, "hidden_size": 8}, "LSTM mixes positions"),
    (SEQ, TANH, {"type": "TransformerEncoderLayer", "d_model": 8, "nhead": 2}, "post-norm"),
    (IMG, TANH, {"type": "Upsample", "scale_factor": 2.0}, "only scale_factor 1"),
    (IMG, TANH, {"type": "InstanceNorm2d", "num_features": 4}, "without running statistics"),
    (IMG, TANH, {"type": "PixelShuffle", "upscale_factor": 2}, "rearranges the shape"),
    (
        IMG,
        TANH,
        {"type": "ConvTranspose2d", "in_channels": 4, "out_channels": 4, "kernel_size": 2, "stride": 2},
        "odd kernel, stride 1",
    ),
    (IMG, TANH, {"type": "RMSNorm", "normalized_shape": 8}, "re-normalises"),
    (IMG, TANH, {"type": "Mish"}, "not an identity function"),
    (IMG, TANH, {"type": "MaxPool2d", "kernel_size": 2}, "pools windows of 2"),
]


@pytest.mark.parametrize(
    ("shape", "first", "layer", "reason"), REFUSED, ids=lambda v: v.get("type") if isinstance(v, dict) else None
)
def test_identity_refusals_say_why(shape: list[int], first: dict[str, Any], layer: dict[str, Any], reason: str) -> None:
    lm = _model(shape, first)
    with pytest.raises(EditError) as ei:
        lm.propose([{"op": "insert", "after": "a", "layer": layer, "init": "identity"}])
    assert reason in ei.value.message, ei.value.message
    assert lm.current.version == 1


def test_multi_input_layers_cannot_be_inserted_on_one_edge() -> None:
    lm = _model(SEQ, TANH)
    with pytest.raises(EditError, match="MultiheadAttention reads 3..3 inputs"):
        lm.propose(
            [{"op": "insert", "after": "a", "layer": {"type": "MultiheadAttention", "embed_dim": 8, "num_heads": 2}}]
        )

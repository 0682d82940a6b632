"""Catalogue entries for sequence layers: LSTM, GRU, RNN, MultiheadAttention, TransformerEncoderLayer.

These read several inputs or return several tensors. Their modules are thin subclasses of the torch modules
(same state dict, same computation) whose forward takes the inputs positionally and returns a flat tuple, so a
spec can wire them: `getitem` nodes pick `output`, `h_n` (and `c_n`) out of an LSTM's result.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from .errors import SpecError
from .identity import IdentityError
from .layer_base import MAX_LAYER_ELEMENTS, Eps, Layer, Prob, Size

Layers = Annotated[int, Field(ge=1, le=64)]


def _mixes_positions(layer: Layer) -> IdentityError:
    return IdentityError(f"{layer.type} mixes positions through gates or attention; no weights make it an identity")


# The forwards below change the signature of torch's on purpose (a graph node passes tensors positionally and reads
# a flat tuple), hence their `type: ignore[override]`: these modules are only ever called that way.


class LSTMLayer(nn.LSTM):
    """nn.LSTM with a flat call: `(x[, h0, c0]) -> (output, h_n, c_n)`."""

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, h0: torch.Tensor | None = None, c0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if h0 is not None and c0 is not None:
            hx: tuple[torch.Tensor, torch.Tensor] | None = (h0, c0)
        elif h0 is None and c0 is None:
            hx = None
        else:
            raise ValueError("an LSTM takes both h0 and c0, or neither")
        out, (h, c) = super().forward(x, hx)
        return out, h, c


class GRULayer(nn.GRU):
    """nn.GRU with a flat call: `(x[, h0]) -> (output, h_n)`."""

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, h0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return super().forward(x, h0)


class RNNLayer(nn.RNN):
    """nn.RNN with a flat call: `(x[, h0]) -> (output, h_n)`."""

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, h0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return super().forward(x, h0)


class _Recurrent(Layer):
    input_size: Size
    hidden_size: Size
    num_layers: Layers = 1
    bias: bool = True
    batch_first: bool = False
    dropout: Prob = 0.0
    bidirectional: bool = False
    _gates: ClassVar[int] = 1

    @model_validator(mode="after")
    def _bounded(self) -> _Recurrent:
        dirs = 2 if self.bidirectional else 1
        per_layer = self._gates * self.hidden_size * (max(self.input_size, self.hidden_size * dirs) + self.hidden_size)
        if per_layer * self.num_layers * dirs > MAX_LAYER_ELEMENTS:
            raise ValueError(f"the weights exceed the limit of {MAX_LAYER_ELEMENTS}")
        return self

    def input_range(self) -> tuple[int, int]:
        return (1, 2)

    def n_outputs(self) -> int:
        return 2

    def init_identity(self, module: nn.Module, prev: Layer | None) -> None:
        raise _mixes_positions(self)


class LSTM(_Recurrent):
    type: Literal["LSTM"] = "LSTM"
    modules: ClassVar = (nn.LSTM, LSTMLayer)
    proj_size: Annotated[int, Field(ge=0, le=1 << 20)] = 0
    _gates: ClassVar[int] = 4

    def input_range(self) -> tuple[int, int]:
        return (1, 3)

    def n_outputs(self) -> int:
        return 3

    def build(self) -> nn.Module:
        return LSTMLayer(**self.args())


class GRU(_Recurrent):
    type: Literal["GRU"] = "GRU"
    modules: ClassVar = (nn.GRU, GRULayer)
    _gates: ClassVar[int] = 3

    def build(self) -> nn.Module:
        return GRULayer(**self.args())


class RNN(_Recurrent):
    type: Literal["RNN"] = "RNN"
    modules: ClassVar = (nn.RNN, RNNLayer)
    nonlinearity: Literal["tanh", "relu"] = "tanh"

    def build(self) -> nn.Module:
        return RNNLayer(**self.args())


class MultiheadAttentionLayer(nn.MultiheadAttention):
    """nn.MultiheadAttention called as `(query, key, value)`; returns the output, or (output, weights)."""

    def __init__(
        self, *args: Any, need_weights: bool = False, average_attn_weights: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.need_weights = need_weights
        self.average_attn_weights = average_attn_weights

    def forward(  # type: ignore[override]
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        out, weights = super().forward(
            query, key, value, need_weights=self.need_weights, average_attn_weights=self.average_attn_weights
        )
        if not self.need_weights:
            return out
        assert weights is not None  # torch returns them whenever need_weights is set
        return out, weights


class MultiheadAttention(Layer):
    """Reads (query, key, value). `need_weights` and `average_attn_weights` are the call's options."""

    type: Literal["MultiheadAttention"] = "MultiheadAttention"
    modules: ClassVar = (nn.MultiheadAttention, MultiheadAttentionLayer)
    embed_dim: Size
    num_heads: Annotated[int, Field(ge=1, le=1024)]
    dropout: Prob = 0.0
    bias: bool = True
    add_bias_kv: bool = False
    add_zero_attn: bool = False
    kdim: Size | None = None
    vdim: Size | None = None
    batch_first: bool = False
    need_weights: bool = False
    average_attn_weights: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> MultiheadAttention:
        if self.embed_dim % self.num_heads:
            raise ValueError("embed_dim must be divisible by num_heads")
        e = self.embed_dim
        if e * (2 * e + (self.kdim or e) + (self.vdim or e)) > MAX_LAYER_ELEMENTS:
            raise ValueError(f"the weights exceed the limit of {MAX_LAYER_ELEMENTS}")
        return self

    def input_range(self) -> tuple[int, int]:
        return (3, 3)

    def n_outputs(self) -> int:
        return 2 if self.need_weights else 1

    def build(self) -> nn.Module:
        return MultiheadAttentionLayer(**self.args())

    def init_identity(self, module: nn.Module, prev: Layer | None) -> None:
        raise _mixes_positions(self)

    @classmethod
    def read_module(cls, module: nn.Module) -> dict[str, Any]:
        assert isinstance(module, nn.MultiheadAttention)
        return {
            "embed_dim": module.embed_dim,
            "num_heads": module.num_heads,
            "dropout": module.dropout,
            "bias": module.in_proj_bias is not None,
            "add_bias_kv": module.bias_k is not None,
            "add_zero_attn": module.add_zero_attn,
            "batch_first": module.batch_first,
            "kdim": None if module.kdim == module.embed_dim else module.kdim,
            "vdim": None if module.vdim == module.embed_dim else module.vdim,
            "need_weights": getattr(module, "need_weights", False),
            "average_attn_weights": getattr(module, "average_attn_weights", True),
        }


class TransformerEncoderLayer(Layer):
    type: Literal["TransformerEncoderLayer"] = "TransformerEncoderLayer"
    modules: ClassVar = (nn.TransformerEncoderLayer,)
    d_model: Size
    nhead: Annotated[int, Field(ge=1, le=1024)]
    dim_feedforward: Size = 2048
    dropout: Prob = 0.1
    activation: Literal["relu", "gelu"] = "relu"
    layer_norm_eps: Eps = 1e-5
    batch_first: bool = False
    norm_first: bool = False
    bias: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> TransformerEncoderLayer:
        if self.d_model % self.nhead:
            raise ValueError("d_model must be divisible by nhead")
        if 4 * self.d_model**2 + 2 * self.d_model * self.dim_feedforward > MAX_LAYER_ELEMENTS:
            raise ValueError(f"the weights exceed the limit of {MAX_LAYER_ELEMENTS}")
        return self

    def build(self) -> nn.Module:
        return nn.TransformerEncoderLayer(**self.args())

    def init_identity(self, module: nn.Module, prev: Layer | None) -> None:
        if not self.norm_first:
            raise IdentityError(
                "a post-norm TransformerEncoderLayer ends in a LayerNorm, which re-normalises; only a pre-norm "
                "one (norm_first: true) can be an identity"
            )
        assert isinstance(module, nn.TransformerEncoderLayer)
        # x + attn(norm1(x)) + ff(norm2(.)): zero both residual branches' last projections.
        for lin in (module.self_attn.out_proj, module.linear2):
            nn.init.zeros_(lin.weight)
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)

    @classmethod
    def read_module(cls, module: nn.Module) -> dict[str, Any]:
        assert isinstance(module, nn.TransformerEncoderLayer)
        act = module.activation
        if act is F.relu or isinstance(act, nn.ReLU):
            activation = "relu"
        elif act is F.gelu or (isinstance(act, nn.GELU) and act.approximate == "none"):
            activation = "gelu"
        else:
            raise SpecError(
                f"TransformerEncoderLayer with activation {act!r} is not in the layer catalogue (only relu and gelu)"
            )
        return {
            "d_model": module.self_attn.embed_dim,
            "nhead": module.self_attn.num_heads,
            "dim_feedforward": module.linear1.out_features,
            "dropout": module.dropout.p,
            "activation": activation,
            "layer_norm_eps": module.norm1.eps,
            "batch_first": module.self_attn.batch_first,
            "norm_first": module.norm_first,
            "bias": module.linear1.bias is not None,
        }

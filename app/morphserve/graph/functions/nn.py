"""Linear algebra, convolution, normalisation, attention, pooling, resizing, padding, creation."""

from __future__ import annotations

import operator
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, StrictBool, StrictInt, model_validator

from ..dtypes import OIP_TO_TORCH, Datatype
from .base import (
    Args,
    DimArg,
    Eps,
    FiniteFloat,
    Function,
    Index,
    IndexArg,
    PosInt,
    Scalar,
    Shape,
    _dtype,
    number,
    register,
)

# An int in a range, or 1-3 of them (one per spatial dimension).
_ConvPadInt = Annotated[int, Field(strict=True, ge=0, le=1024)]
ConvPad = _ConvPadInt | Annotated[tuple[_ConvPadInt, ...], Field(min_length=1, max_length=3)]


# -- linear algebra, convolution, normalisation ---------------------------------------------------------------
class EinsumArgs(Args):
    equation: Annotated[str, Field(pattern=r"^[a-zA-Z ,.>-]{1,64}$")]


class ConvArgs(Args):
    stride: PosInt | Annotated[tuple[PosInt, ...], Field(min_length=1, max_length=3)] = 1
    padding: ConvPad | Literal["same", "valid"] = 0
    dilation: PosInt | Annotated[tuple[PosInt, ...], Field(min_length=1, max_length=3)] = 1
    groups: PosInt = 1


class EmbeddingArgs(Args):
    padding_idx: Index | None = None


class LayerNormArgs(Args):
    normalized_shape: Annotated[tuple[PosInt, ...], Field(min_length=1, max_length=8)]
    eps: Eps = 1e-5


class GroupNormArgs(Args):
    num_groups: PosInt
    eps: Eps = 1e-5


class RmsNormArgs(Args):
    normalized_shape: Annotated[tuple[PosInt, ...], Field(min_length=1, max_length=8)]
    eps: Eps | None = None


class NormalizeArgs(Args):
    p: Annotated[float, Field(strict=True, ge=1, le=64)] = 2.0
    dim: DimArg = 1
    eps: Eps = 1e-12


class SdpaArgs(Args):
    is_causal: StrictBool = False
    scale: Annotated[float, Field(strict=True, gt=0, le=1e3)] | None = None


def _einsum(*xs: torch.Tensor, equation: str) -> torch.Tensor:
    return torch.einsum(equation, *xs)


def _embedding(ids: torch.Tensor, weight: torch.Tensor, *, padding_idx: int | None = None) -> torch.Tensor:
    return F.embedding(ids, weight, padding_idx)


def _layer_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    *,
    normalized_shape: tuple[int, ...],
    eps: float = 1e-5,
) -> torch.Tensor:
    return F.layer_norm(x, normalized_shape, weight, bias, eps)


def _group_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    *,
    num_groups: int,
    eps: float = 1e-5,
) -> torch.Tensor:
    return F.group_norm(x, num_groups, weight, bias, eps)


def _rms_norm(
    x: torch.Tensor, weight: torch.Tensor | None = None, *, normalized_shape: tuple[int, ...], eps: float | None = None
) -> torch.Tensor:
    return F.rms_norm(x, normalized_shape, weight, eps)


def _sdpa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    is_causal: StrictBool = False,
    scale: float | None = None,
) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, scale=scale)


register(
    Function("matmul", torch.matmul, (2, 2), python=(torch.matmul, operator.matmul), methods=("matmul",)),
    Function("bmm", torch.bmm, (2, 2)),
    Function("linear", F.linear, (2, 3), doc="inputs (x, weight[, bias]): `x @ weight.T + bias`"),
    Function("einsum", _einsum, (1, 8), EinsumArgs),
    Function("conv1d", F.conv1d, (2, 3), ConvArgs, doc="inputs (x, weight[, bias])"),
    Function("conv2d", F.conv2d, (2, 3), ConvArgs, doc="inputs (x, weight[, bias])"),
    Function("embedding", _embedding, (2, 2), EmbeddingArgs, doc="inputs (ids, weight): rows of weight"),
    Function("layer_norm", _layer_norm, (1, 3), LayerNormArgs, doc="inputs (x[, weight[, bias]])"),
    Function("group_norm", _group_norm, (1, 3), GroupNormArgs, doc="inputs (x[, weight[, bias]])"),
    Function("rms_norm", _rms_norm, (1, 2), RmsNormArgs, doc="inputs (x[, weight])"),
    Function("normalize", F.normalize, (1, 1), NormalizeArgs, doc="x / max(norm(x, p, dim), eps)"),
    Function("scaled_dot_product_attention", _sdpa, (3, 4), SdpaArgs, doc="inputs (q, k, v[, mask]); no dropout"),
    Function("prelu", F.prelu, (2, 2), doc="inputs (x, weight)"),
)


# -- pooling, resizing, padding, creation ---------------------------------------------------------------------
_KernelInt = Annotated[int, Field(strict=True, ge=1, le=64)]
Kernel = _KernelInt | Annotated[tuple[_KernelInt, ...], Field(min_length=1, max_length=3)]
_PadInt = Annotated[int, Field(strict=True, ge=0, le=32)]
Pad = _PadInt | Annotated[tuple[_PadInt, ...], Field(min_length=1, max_length=3)]
OutSize = PosInt | Annotated[tuple[PosInt | None, ...], Field(min_length=1, max_length=3)]


class MaxPoolArgs(Args):
    kernel_size: Kernel
    stride: Kernel | None = None
    padding: Pad = 0
    dilation: Kernel = 1
    ceil_mode: StrictBool = False


class AvgPoolArgs(Args):
    kernel_size: Kernel
    stride: Kernel | None = None
    padding: Pad = 0
    ceil_mode: StrictBool = False
    count_include_pad: StrictBool = True


class AdaptivePoolArgs(Args):
    output_size: OutSize


class InterpolateArgs(Args):
    size: Annotated[tuple[PosInt, ...], Field(min_length=1, max_length=3)] | None = None
    scale_factor: (
        Annotated[tuple[Annotated[float, Field(strict=True, gt=0, le=64)], ...], Field(min_length=1, max_length=3)]
        | None
    ) = None
    mode: Literal["nearest", "nearest-exact", "linear", "bilinear", "bicubic", "trilinear", "area"] = "nearest"
    align_corners: StrictBool | None = None

    @model_validator(mode="after")
    def _one(self) -> InterpolateArgs:
        if (self.size is None) == (self.scale_factor is None):
            raise ValueError("give exactly one of 'size' or 'scale_factor'")
        if self.align_corners is not None and self.mode not in ("linear", "bilinear", "bicubic", "trilinear"):
            raise ValueError(f"align_corners is only for the interpolating modes, not {self.mode!r}")
        return self


class PadArgs(Args):
    pad: Annotated[tuple[Annotated[int, Field(strict=True, ge=-4096, le=4096)], ...], Field(min_length=2, max_length=8)]
    mode: Literal["constant", "reflect", "replicate", "circular"] = "constant"
    value: FiniteFloat | StrictInt | None = None

    @model_validator(mode="after")
    def _even(self) -> PadArgs:
        if len(self.pad) % 2:
            raise ValueError("pad needs a (before, after) pair per dimension")
        if self.value is not None and self.mode != "constant":
            raise ValueError("value is only for mode 'constant'")
        return self


class ShuffleArgs(Args):
    factor: Annotated[int, Field(strict=True, ge=1, le=16)]


class FullArgs(Args):
    size: Shape
    fill_value: Scalar
    datatype: Datatype = "FP32"

    @model_validator(mode="after")
    def _positive(self) -> FullArgs:
        if any(s == -1 for s in self.size):
            raise ValueError("a created tensor has no -1 sizes; name the size with a ref")
        return self


class FullLikeArgs(Args):
    fill_value: Scalar
    datatype: Datatype | None = None


class ArangeArgs(Args):
    start: Index = 0
    end: IndexArg
    step: PosInt = 1
    datatype: Datatype = "INT64"


def _interpolate(
    x: torch.Tensor,
    *,
    size: tuple[int, ...] | None = None,
    scale_factor: tuple[float, ...] | None = None,
    mode: str = "nearest",
    align_corners: StrictBool | None = None,
) -> torch.Tensor:
    return F.interpolate(x, size=size, scale_factor=scale_factor, mode=mode, align_corners=align_corners)


def _pad(x: torch.Tensor, *, pad: tuple[int, ...], mode: str = "constant", value: float | None = None) -> torch.Tensor:
    return F.pad(x, pad, mode, value)


def _full(*_: torch.Tensor, size: tuple[int, ...], fill_value: Scalar, datatype: str = "FP32") -> torch.Tensor:
    return torch.full(size, number(fill_value), dtype=OIP_TO_TORCH[datatype])


def _full_like(x: torch.Tensor, *, fill_value: Scalar, datatype: str | None = None) -> torch.Tensor:
    return torch.full_like(x, number(fill_value), dtype=_dtype(datatype))


def _arange(*_: torch.Tensor, start: int = 0, end: int, step: int = 1, datatype: str = "INT64") -> torch.Tensor:
    return torch.arange(start, end, step, dtype=OIP_TO_TORCH[datatype])


def _pixel_shuffle(x: torch.Tensor, *, factor: int) -> torch.Tensor:
    return F.pixel_shuffle(x, factor)


def _pixel_unshuffle(x: torch.Tensor, *, factor: int) -> torch.Tensor:
    return F.pixel_unshuffle(x, factor)


register(
    Function("max_pool1d", F.max_pool1d, (1, 1), MaxPoolArgs),
    Function("max_pool2d", F.max_pool2d, (1, 1), MaxPoolArgs),
    Function("avg_pool1d", F.avg_pool1d, (1, 1), AvgPoolArgs),
    Function("avg_pool2d", F.avg_pool2d, (1, 1), AvgPoolArgs),
    Function("adaptive_avg_pool1d", F.adaptive_avg_pool1d, (1, 1), AdaptivePoolArgs),
    Function("adaptive_avg_pool2d", F.adaptive_avg_pool2d, (1, 1), AdaptivePoolArgs),
    Function("adaptive_max_pool2d", F.adaptive_max_pool2d, (1, 1), AdaptivePoolArgs),
    Function("interpolate", _interpolate, (1, 1), InterpolateArgs, doc="resize to `size` or by `scale_factor`"),
    Function("pad", _pad, (1, 1), PadArgs, doc="F.pad: (before, after) pairs from the last dimension backwards"),
    Function("pixel_shuffle", _pixel_shuffle, (1, 1), ShuffleArgs),
    Function("pixel_unshuffle", _pixel_unshuffle, (1, 1), ShuffleArgs),
    Function(
        "full",
        _full,
        (0, 0),
        FullArgs,
        doc="a new tensor of `size` filled with `fill_value`; its inputs only supply sizes",
    ),
    Function("full_like", _full_like, (1, 1), FullLikeArgs, doc="a tensor shaped like the input, filled"),
    Function("arange", _arange, (0, 0), ArangeArgs, doc="`start, start+step, ... < end`; inputs only supply `end`"),
)

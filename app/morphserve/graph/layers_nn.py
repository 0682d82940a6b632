"""Catalogue entries for the one-input layers: linear, convolution, normalisation, pooling, activation, resizing.

Each entry is a pydantic schema of one `torch.nn` constructor's arguments, bounded so that one request cannot
allocate an absurd tensor, and `build()` calls exactly that constructor. The identity rules are Net2Net's: an eye
for a square Linear, a dirac kernel for a size-keeping convolution, pass-through statistics for a normalisation.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from .identity import IdentityError
from .layer_base import MAX_LAYER_ELEMENTS, Eps, Layer, Prob, ShapeDtype, Size, size_product


def _ones(v: int | float | tuple[int | float, ...]) -> bool:
    return all(x == 1 for x in (v if isinstance(v, tuple) else (v,)))


def _any(v: int | tuple[int, ...]) -> bool:
    return any(x != 0 for x in (v if isinstance(v, tuple) else (v,)))


class Linear(Layer):
    type: Literal["Linear"] = "Linear"
    modules: ClassVar = (nn.Linear,)
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

    def init_identity(self, module: nn.Module, prev: Layer | None) -> None:
        if self.in_features != self.out_features:
            raise IdentityError(
                f"Linear({self.in_features}->{self.out_features}) changes the width; "
                "only a square Linear can be an identity"
            )
        assert isinstance(module, nn.Linear)
        nn.init.eye_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)

    @classmethod
    def output_shape(cls, module: nn.Module, shape: tuple[int, ...], dtype: torch.dtype) -> ShapeDtype | None:
        """Why a rule: a fake-tensor Linear goes through torch's decompositions, ~2 ms of interpreter work per probe
        pair, which a loaded server stretches ten-fold (docs/BENCHMARKS.md, "Edit-to-live"), and Linear is what
        edits insert most; the rule is a few tuple operations."""
        assert isinstance(module, nn.Linear)
        w, bias = module.weight, module.bias
        if w.dtype != dtype or (bias is not None and bias.dtype != w.dtype):
            return None  # torch refuses mixed dtypes
        if not shape or shape[-1] != module.in_features:
            return None
        return shape[:-1] + (module.out_features,), w.dtype


Kernel = Annotated[int, Field(ge=1, le=31)] | tuple[Annotated[int, Field(ge=1, le=31)], ...]
Stride = Annotated[int, Field(ge=1, le=64)] | tuple[Annotated[int, Field(ge=1, le=64)], ...]
Padding = Annotated[int, Field(ge=0, le=64)] | tuple[Annotated[int, Field(ge=0, le=64)], ...]


class _Conv(Layer):
    in_channels: Size
    out_channels: Size
    kernel_size: Kernel
    stride: Stride = 1
    padding: Padding | Literal["same", "valid"] = 0
    dilation: Stride = 1
    groups: Size = 1
    bias: bool = True
    padding_mode: Literal["reflect", "replicate", "circular"] | None = None  # None: zeros
    _cls: ClassVar[type[nn.Module]]

    @model_validator(mode="after")
    def _consistent(self) -> _Conv:
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError("in_channels and out_channels must both be divisible by groups")
        if size_product(self.in_channels // self.groups, self.out_channels, self.kernel_size) > MAX_LAYER_ELEMENTS:
            raise ValueError(f"the kernel exceeds the limit of {MAX_LAYER_ELEMENTS} weights")
        if self.padding == "same" and self.stride not in (1, (1,), (1, 1), (1, 1, 1)):
            raise ValueError("padding='same' needs stride 1")
        return self

    def args(self) -> dict[str, Any]:
        out = super().args()
        if out["padding_mode"] is None:  # zero padding: the JSON of specs written before padding_mode existed
            del out["padding_mode"]
        return out

    def build(self) -> nn.Module:
        return self._cls(**{**self.args(), "padding_mode": self.padding_mode or "zeros"})

    @classmethod
    def read_module(cls, module: nn.Module) -> dict[str, Any]:
        out = super().read_module(module)
        if out.get("padding_mode") == "zeros":
            out["padding_mode"] = None
        return out

    def init_identity(self, module: nn.Module, prev: Layer | None) -> None:
        assert isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d)
        if self.in_channels != self.out_channels:
            raise IdentityError(f"{self.type} changes channels {self.in_channels}->{self.out_channels}")
        ks, st, dl = module.kernel_size, module.stride, module.dilation
        if any(k % 2 == 0 for k in ks):
            raise IdentityError(f"{self.type} with an even kernel {list(ks)} shifts its input; use an odd kernel")
        if any(s != 1 for s in st):
            raise IdentityError(f"{self.type} with stride {list(st)} downsamples; use stride 1")
        if any(d != 1 for d in dl):
            raise IdentityError(f"{self.type} needs dilation 1 to be an identity")
        pad = module.padding
        if pad != "same" and tuple(pad) != tuple(k // 2 for k in ks):
            raise IdentityError(
                f"{self.type} with padding {pad} changes the size; use padding {[k // 2 for k in ks]} or 'same'"
            )
        nn.init.dirac_(module.weight, groups=module.groups)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class Conv1d(_Conv):
    type: Literal["Conv1d"] = "Conv1d"
    modules: ClassVar = (nn.Conv1d,)
    _cls: ClassVar = nn.Conv1d


class Conv2d(_Conv):
    type: Literal["Conv2d"] = "Conv2d"
    modules: ClassVar = (nn.Conv2d,)
    _cls: ClassVar = nn.Conv2d


class Conv3d(_Conv):
    type: Literal["Conv3d"] = "Conv3d"
    modules: ClassVar = (nn.Conv3d,)
    _cls: ClassVar = nn.Conv3d


class _ConvTranspose(Layer):
    in_channels: Size
    out_channels: Size
    kernel_size: Kernel
    stride: Stride = 1
    padding: Padding = 0
    output_padding: Padding = 0
    groups: Size = 1
    bias: bool = True
    dilation: Stride = 1
    unsupported: ClassVar = {"padding_mode": "zeros"}
    _cls: ClassVar[type[nn.Module]]

    @model_validator(mode="after")
    def _consistent(self) -> _ConvTranspose:
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError("in_channels and out_channels must both be divisible by groups")
        if size_product(self.in_channels, self.out_channels // self.groups, self.kernel_size) > MAX_LAYER_ELEMENTS:
            raise ValueError(f"the kernel exceeds the limit of {MAX_LAYER_ELEMENTS} weights")
        return self

    def build(self) -> nn.Module:
        return self._cls(**self.args())

    def init_identity(self, module: nn.Module, prev: Layer | None) -> None:
        assert isinstance(module, nn.ConvTranspose1d | nn.ConvTranspose2d)
        if self.in_channels != self.out_channels or self.groups != 1:
            raise IdentityError(f"{self.type} needs in_channels == out_channels and groups 1 to be an identity")
        ks = module.kernel_size
        if any(k % 2 == 0 for k in ks) or any(s != 1 for s in module.stride) or any(d != 1 for d in module.dilation):
            raise IdentityError(f"{self.type} needs an odd kernel, stride 1 and dilation 1 to be an identity")
        if tuple(module.padding) != tuple(k // 2 for k in ks) or any(module.output_padding):
            raise IdentityError(
                f"{self.type} needs padding {[k // 2 for k in ks]} and no output_padding to keep the size"
            )
        nn.init.dirac_(module.weight)  # weight is (in, out, k...): dirac on the square (C, C) pair is the identity
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class ConvTranspose1d(_ConvTranspose):
    type: Literal["ConvTranspose1d"] = "ConvTranspose1d"
    modules: ClassVar = (nn.ConvTranspose1d,)
    _cls: ClassVar = nn.ConvTranspose1d


class ConvTranspose2d(_ConvTranspose):
    type: Literal["ConvTranspose2d"] = "ConvTranspose2d"
    modules: ClassVar = (nn.ConvTranspose2d,)
    _cls: ClassVar = nn.ConvTranspose2d


class _Norm(Layer):
    num_features: Size
    eps: Eps = 1e-5
    momentum: Prob | None = 0.1
    affine: bool = True
    track_running_stats: bool = True
    _cls: ClassVar[type[nn.Module]]

    def build(self) -> nn.Module:
        return self._cls(**self.args())

    def init_identity(self, module: nn.Module, prev: Layer | None) -> None:
        if not self.track_running_stats:
            raise IdentityError(
                f"{self.type} without running statistics normalises each batch; it cannot be an identity"
            )
        assert isinstance(module, nn.modules.batchnorm._NormBase)
        assert module.running_mean is not None and module.running_var is not None
        module.running_mean.zero_()
        # (x - 0) / sqrt((1 - eps) + eps) == x: the eval-mode statistics pass the input through.
        module.running_var.fill_(1.0 - self.eps)
        if module.affine:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class BatchNorm1d(_Norm):
    type: Literal["BatchNorm1d"] = "BatchNorm1d"
    modules: ClassVar = (nn.BatchNorm1d,)
    _cls: ClassVar = nn.BatchNorm1d


class BatchNorm2d(_Norm):
    type: Literal["BatchNorm2d"] = "BatchNorm2d"
    modules: ClassVar = (nn.BatchNorm2d,)
    _cls: ClassVar = nn.BatchNorm2d


class BatchNorm3d(_Norm):
    type: Literal["BatchNorm3d"] = "BatchNorm3d"
    modules: ClassVar = (nn.BatchNorm3d,)
    _cls: ClassVar = nn.BatchNorm3d


class InstanceNorm1d(_Norm):
    type: Literal["InstanceNorm1d"] = "InstanceNorm1d"
    modules: ClassVar = (nn.InstanceNorm1d,)
    _cls: ClassVar = nn.InstanceNorm1d
    affine: bool = False
    track_running_stats: bool = False


class InstanceNorm2d(_Norm):
    type: Literal["InstanceNorm2d"] = "InstanceNorm2d"
    modules: ClassVar = (nn.InstanceNorm2d,)
    _cls: ClassVar = nn.InstanceNorm2d
    affine: bool = False
    track_running_stats: bool = False


NormShape = Size | tuple[Size, ...]


def _renormalises(layer: Layer) -> IdentityError:
    return IdentityError(
        f"{layer.type} re-normalises its input, so no weights make it an exact identity; insert it with init 'default'"
    )


class LayerNorm(Layer):
    type: Literal["LayerNorm"] = "LayerNorm"
    modules: ClassVar = (nn.LayerNorm,)
    normalized_shape: NormShape
    eps: Eps = 1e-5
    elementwise_affine: bool = True
    bias: bool = True

    @model_validator(mode="after")
    def _bounded(self) -> LayerNorm:
        if size_product(self.normalized_shape) > MAX_LAYER_ELEMENTS:
            raise ValueError("normalized_shape is too large")
        return self

    def build(self) -> nn.Module:
        return nn.LayerNorm(**self.args())

    def init_identity(self, module: nn.Module, prev: Layer | None) -> None:
        raise _renormalises(self)


class RMSNorm(Layer):
    type: Literal["RMSNorm"] = "RMSNorm"
    modules: ClassVar = (nn.RMSNorm,)
    normalized_shape: NormShape
    eps: Eps | None = None
    elementwise_affine: bool = True

    @model_validator(mode="after")
    def _bounded(self) -> RMSNorm:
        if size_product(self.normalized_shape) > MAX_LAYER_ELEMENTS:
            raise ValueError("normalized_shape is too large")
        return self

    def build(self) -> nn.Module:
        return nn.RMSNorm(**self.args())

    def init_identity(self, module: nn.Module, prev: Layer | None) -> None:
        raise _renormalises(self)


class GroupNorm(Layer):
    type: Literal["GroupNorm"] = "GroupNorm"
    modules: ClassVar = (nn.GroupNorm,)
    num_groups: Size
    num_channels: Size
    eps: Eps = 1e-5
    affine: bool = True

    @model_validator(mode="after")
    def _divisible(self) -> GroupNorm:
        if self.num_channels % self.num_groups:
            raise ValueError("num_channels must be divisible by num_groups")
        return self

    def build(self) -> nn.Module:
        return nn.GroupNorm(**self.args())

    def init_identity(self, module: nn.Module, prev: Layer | None) -> None:
        raise _renormalises(self)


PoolKernel = Annotated[int, Field(ge=1, le=64)] | tuple[Annotated[int, Field(ge=1, le=64)], ...]
PoolPad = Annotated[int, Field(ge=0, le=32)] | tuple[Annotated[int, Field(ge=0, le=32)], ...]


def _pool_identity(layer: _MaxPool | _AvgPool) -> None:
    if _ones(layer.kernel_size) and _ones(layer.stride if layer.stride is not None else 1) and not _any(layer.padding):
        return
    raise IdentityError(
        f"{layer.type} pools windows of {layer.kernel_size}; only kernel 1, stride 1 and "
        "no padding pass the input through"
    )


class _MaxPool(Layer):
    kernel_size: PoolKernel
    stride: PoolKernel | None = None
    padding: PoolPad = 0
    dilation: PoolKernel = 1
    ceil_mode: bool = False
    unsupported: ClassVar = {"return_indices": False}

    def build(self) -> nn.Module:
        module: nn.Module = getattr(nn, self.type)(**self.args())
        return module

    def init_identity(self, module: nn.Module, prev: Layer | None) -> None:
        _pool_identity(self)


class MaxPool1d(_MaxPool):
    type: Literal["MaxPool1d"] = "MaxPool1d"
    modules: ClassVar = (nn.MaxPool1d,)


class MaxPool2d(_MaxPool):
    type: Literal["MaxPool2d"] = "MaxPool2d"
    modules: ClassVar = (nn.MaxPool2d,)


class _AvgPool(Layer):
    kernel_size: PoolKernel
    stride: PoolKernel | None = None
    padding: PoolPad = 0
    ceil_mode: bool = False
    count_include_pad: bool = True

    def build(self) -> nn.Module:
        module: nn.Module = getattr(nn, self.type)(**self.args())
        return module

    def init_identity(self, module: nn.Module, prev: Layer | None) -> None:
        _pool_identity(self)


class AvgPool1d(_AvgPool):
    type: Literal["AvgPool1d"] = "AvgPool1d"
    modules: ClassVar = (nn.AvgPool1d,)


class AvgPool2d(_AvgPool):
    type: Literal["AvgPool2d"] = "AvgPool2d"
    modules: ClassVar = (nn.AvgPool2d,)
    unsupported: ClassVar = {"divisor_override": None}


OutSize = Size | tuple[Size | None, ...]


class _AdaptivePool(Layer):
    output_size: OutSize

    def build(self) -> nn.Module:
        module: nn.Module = getattr(nn, self.type)(self.output_size)
        return module


class AdaptiveAvgPool1d(_AdaptivePool):
    type: Literal["AdaptiveAvgPool1d"] = "AdaptiveAvgPool1d"
    modules: ClassVar = (nn.AdaptiveAvgPool1d,)


class AdaptiveAvgPool2d(_AdaptivePool):
    type: Literal["AdaptiveAvgPool2d"] = "AdaptiveAvgPool2d"
    modules: ClassVar = (nn.AdaptiveAvgPool2d,)


class AdaptiveMaxPool1d(_AdaptivePool):
    type: Literal["AdaptiveMaxPool1d"] = "AdaptiveMaxPool1d"
    modules: ClassVar = (nn.AdaptiveMaxPool1d,)
    unsupported: ClassVar = {"return_indices": False}


class AdaptiveMaxPool2d(_AdaptivePool):
    type: Literal["AdaptiveMaxPool2d"] = "AdaptiveMaxPool2d"
    modules: ClassVar = (nn.AdaptiveMaxPool2d,)
    unsupported: ClassVar = {"return_indices": False}


class Upsample(Layer):
    type: Literal["Upsample"] = "Upsample"
    modules: ClassVar = (nn.Upsample,)
    size: Size | tuple[Size, ...] | None = None
    scale_factor: Annotated[float, Field(gt=0, le=64)] | tuple[Annotated[float, Field(gt=0, le=64)], ...] | None = None
    mode: Literal["nearest", "nearest-exact", "linear", "bilinear", "bicubic", "trilinear"] = "nearest"
    align_corners: bool | None = None
    unsupported: ClassVar = {"recompute_scale_factor": None}

    @model_validator(mode="after")
    def _one(self) -> Upsample:
        if (self.size is None) == (self.scale_factor is None):
            raise ValueError("give exactly one of 'size' or 'scale_factor'")
        if self.align_corners is not None and self.mode in ("nearest", "nearest-exact"):
            raise ValueError("align_corners is only for the interpolating modes")
        return self

    def build(self) -> nn.Module:
        return nn.Upsample(**self.args())

    def init_identity(self, module: nn.Module, prev: Layer | None) -> None:
        if self.scale_factor is None or not _ones(self.scale_factor):
            raise IdentityError("Upsample changes the size; only scale_factor 1 is an identity")


class PixelShuffle(Layer):
    type: Literal["PixelShuffle"] = "PixelShuffle"
    modules: ClassVar = (nn.PixelShuffle,)
    upscale_factor: Annotated[int, Field(ge=1, le=16)]

    def build(self) -> nn.Module:
        return nn.PixelShuffle(self.upscale_factor)

    def init_identity(self, module: nn.Module, prev: Layer | None) -> None:
        _rearranges(self, self.upscale_factor)


class PixelUnshuffle(Layer):
    type: Literal["PixelUnshuffle"] = "PixelUnshuffle"
    modules: ClassVar = (nn.PixelUnshuffle,)
    downscale_factor: Annotated[int, Field(ge=1, le=16)]

    def build(self) -> nn.Module:
        return nn.PixelUnshuffle(self.downscale_factor)

    def init_identity(self, module: nn.Module, prev: Layer | None) -> None:
        _rearranges(self, self.downscale_factor)


def _rearranges(layer: PixelShuffle | PixelUnshuffle, factor: int) -> None:
    if factor != 1:
        raise IdentityError(f"{layer.type} with factor {factor} rearranges the shape; only factor 1 is an identity")


class Embedding(Layer):
    type: Literal["Embedding"] = "Embedding"
    modules: ClassVar = (nn.Embedding,)
    num_embeddings: Size
    embedding_dim: Size
    padding_idx: int | None = None
    # max_norm renormalises the weights in place during forward: not an immutable layer.
    unsupported: ClassVar = {"max_norm": None}

    @model_validator(mode="after")
    def _bounded(self) -> Embedding:
        if self.num_embeddings * self.embedding_dim > MAX_LAYER_ELEMENTS:
            raise ValueError(f"num_embeddings*embedding_dim exceeds the limit of {MAX_LAYER_ELEMENTS}")
        if self.padding_idx is not None and not -self.num_embeddings <= self.padding_idx < self.num_embeddings:
            raise ValueError("padding_idx must be within num_embeddings")
        return self

    def build(self) -> nn.Module:
        return nn.Embedding(self.num_embeddings, self.embedding_dim, padding_idx=self.padding_idx)

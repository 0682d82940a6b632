"""Function-preserving initialisation (Net2Net-style): make a freshly built layer compute the identity.

Each rule either sets the layer's tensors so that `layer(x) == x` exactly (up to float rounding) for every
input it can receive at that place, or raises `IdentityError` saying why no such weights exist.
"""

from __future__ import annotations

import torch
from torch import nn

from . import catalogue as c


class IdentityError(ValueError):
    """No weights make this layer an identity here; the message says why."""


_INF = float("inf")


def _output_range(layer: c.LayerSpec | None) -> tuple[float, float] | None:
    """The interval every output of `layer` lies in, when it is bounded by construction."""
    match layer:
        case c.ReLU():
            return (0.0, _INF)
        case c.ReLU6():
            return (0.0, 6.0)
        case c.Hardtanh():
            return (layer.min_val, layer.max_val)
        case c.Sigmoid() | c.Hardsigmoid() | c.Softmax() | c.Softmax2d():
            return (0.0, 1.0)
        case c.Tanh() | c.Softsign():
            return (-1.0, 1.0)
    return None


def _identity_domain(layer: c.LayerSpec) -> tuple[float, float] | None:
    """The interval on which an activation passes its input through unchanged."""
    match layer:
        case c.ReLU() | c.LeakyReLU() | c.ELU() | c.CELU():
            return (0.0, _INF)
        case c.ReLU6():
            return (0.0, 6.0)
        case c.Hardtanh():
            return (layer.min_val, layer.max_val)
    return None


def make_identity(layer: c.LayerSpec, module: nn.Module, prev: c.LayerSpec | None) -> None:
    """Set `module` (built from `layer`) to the identity. `prev` is the layer whose output it will read."""
    with torch.no_grad():
        _identity(layer, module, prev)


def _identity(layer: c.LayerSpec, module: nn.Module, prev: c.LayerSpec | None) -> None:
    match layer:
        case c.Linear():
            if layer.in_features != layer.out_features:
                raise IdentityError(
                    f"Linear({layer.in_features}->{layer.out_features}) changes the width; "
                    "only a square Linear can be an identity"
                )
            assert isinstance(module, nn.Linear)
            nn.init.eye_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        case c.Conv1d() | c.Conv2d():
            _conv_identity(layer, module)
        case c.BatchNorm1d() | c.BatchNorm2d():
            _norm_identity(layer, module)
        case c.Dropout() | c.Identity():
            pass  # identities in eval mode
        case c.ReLU() | c.ReLU6() | c.LeakyReLU() | c.ELU() | c.CELU() | c.Hardtanh():
            domain, got = _identity_domain(layer), _output_range(prev)
            assert domain is not None
            if got is None or not domain[0] <= got[0] <= got[1] <= domain[1]:
                after = (
                    f"after {prev.type}, which outputs any value"
                    if prev is not None and got is None
                    else (
                        f"after {prev.type}, whose outputs span {list(got)}"
                        if prev is not None and got is not None
                        else "at an input, which may hold any value"
                    )
                )
                raise IdentityError(
                    f"{layer.type} is an identity only on inputs within {list(domain)}, not {after}: "
                    f"place it right after a layer bounded to that range (e.g. a ReLU)"
                )
        case c.PReLU():
            assert isinstance(module, nn.PReLU)
            nn.init.ones_(module.weight)  # slope 1 on the negative side too: x everywhere
        case c.BatchNorm3d() | c.InstanceNorm1d() | c.InstanceNorm2d():
            _norm_identity(layer, module)
        case c.Dropout1d() | c.Dropout2d() | c.Dropout3d() | c.AlphaDropout():
            pass  # identities in eval mode
        case c.Conv3d():
            _conv_identity(layer, module)
        case c.ConvTranspose1d() | c.ConvTranspose2d():
            _conv_transpose_identity(layer, module)
        case c.MaxPool1d() | c.MaxPool2d() | c.AvgPool1d() | c.AvgPool2d():
            if (
                _ones(layer.kernel_size)
                and _ones(layer.stride if layer.stride is not None else 1)
                and not _any(layer.padding)
            ):
                return
            raise IdentityError(
                f"{layer.type} pools windows of {layer.kernel_size}; only kernel 1, stride 1 and "
                "no padding pass the input through"
            )
        case c.Upsample():
            if layer.scale_factor is not None and _ones(layer.scale_factor):
                return
            raise IdentityError("Upsample changes the size; only scale_factor 1 is an identity")
        case c.PixelShuffle() | c.PixelUnshuffle():
            factor = layer.upscale_factor if isinstance(layer, c.PixelShuffle) else layer.downscale_factor
            if factor != 1:
                raise IdentityError(
                    f"{layer.type} with factor {factor} rearranges the shape; only factor 1 is an identity"
                )
        case c.TransformerEncoderLayer():
            if not layer.norm_first:
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
        case c.LSTM() | c.GRU() | c.RNN() | c.MultiheadAttention():
            raise IdentityError(
                f"{layer.type} mixes positions through gates or attention; no weights make it an identity"
            )
        case c.Residual():
            assert isinstance(module, c.ResidualBlock)
            last_spec, last = layer.body[-1], list(module.body)[-1]
            while isinstance(last_spec, c.Sequential):  # a Sequential outputs what its own last layer outputs
                last_spec, last = last_spec.layers[-1], list(last)[-1]  # type: ignore[arg-type]
            if isinstance(last_spec, c.Residual):
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
        case c.Sequential():
            assert isinstance(module, nn.Sequential)
            before = prev
            for sub_spec, sub in zip(layer.layers, module, strict=True):
                _identity(sub_spec, sub, before)
                before = sub_spec
        case c.LayerNorm() | c.GroupNorm() | c.RMSNorm():
            raise IdentityError(
                f"{layer.type} re-normalises its input, so no weights make it an exact identity; "
                "insert it with init 'default'"
            )
        case _:
            raise IdentityError(f"{layer.type} is not an identity function for any weights")


def _ones(v: int | float | tuple[int | float, ...]) -> bool:
    return all(x == 1 for x in (v if isinstance(v, tuple) else (v,)))


def _any(v: int | tuple[int, ...]) -> bool:
    return any(x != 0 for x in (v if isinstance(v, tuple) else (v,)))


def _norm_identity(layer: c.LayerSpec, module: nn.Module) -> None:
    if not layer.track_running_stats:  # type: ignore[union-attr]
        raise IdentityError(f"{layer.type} without running statistics normalises each batch; it cannot be an identity")
    assert isinstance(module, nn.modules.batchnorm._NormBase)
    assert module.running_mean is not None and module.running_var is not None
    module.running_mean.zero_()
    # (x - 0) / sqrt((1 - eps) + eps) == x: the eval-mode statistics pass the input through.
    module.running_var.fill_(1.0 - layer.eps)  # type: ignore[union-attr]
    if module.affine:
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def _conv_transpose_identity(layer: c.ConvTranspose1d | c.ConvTranspose2d, module: nn.Module) -> None:
    assert isinstance(module, nn.ConvTranspose1d | nn.ConvTranspose2d)
    if layer.in_channels != layer.out_channels or layer.groups != 1:
        raise IdentityError(f"{layer.type} needs in_channels == out_channels and groups 1 to be an identity")
    ks = module.kernel_size
    if any(k % 2 == 0 for k in ks) or any(s != 1 for s in module.stride) or any(d != 1 for d in module.dilation):
        raise IdentityError(f"{layer.type} needs an odd kernel, stride 1 and dilation 1 to be an identity")
    if tuple(module.padding) != tuple(k // 2 for k in ks) or any(module.output_padding):
        raise IdentityError(f"{layer.type} needs padding {[k // 2 for k in ks]} and no output_padding to keep the size")
    nn.init.dirac_(module.weight)  # weight is (in, out, k...): dirac on the square (C, C) pair is the identity
    if module.bias is not None:
        nn.init.zeros_(module.bias)


def _conv_identity(layer: c.Conv1d | c.Conv2d | c.Conv3d, module: nn.Module) -> None:
    assert isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d)
    if layer.in_channels != layer.out_channels:
        raise IdentityError(f"{layer.type} changes channels {layer.in_channels}->{layer.out_channels}")
    ks, st, dl = module.kernel_size, module.stride, module.dilation
    if any(k % 2 == 0 for k in ks):
        raise IdentityError(f"{layer.type} with an even kernel {list(ks)} shifts its input; use an odd kernel")
    if any(s != 1 for s in st):
        raise IdentityError(f"{layer.type} with stride {list(st)} downsamples; use stride 1")
    if any(d != 1 for d in dl):
        raise IdentityError(f"{layer.type} needs dilation 1 to be an identity")
    pad = module.padding
    if pad != "same" and tuple(pad) != tuple(k // 2 for k in ks):  # type: ignore[arg-type]
        raise IdentityError(
            f"{layer.type} with padding {pad} changes the size; use padding {[k // 2 for k in ks]} or 'same'"
        )
    nn.init.dirac_(module.weight, groups=module.groups)
    if module.bias is not None:
        nn.init.zeros_(module.bias)

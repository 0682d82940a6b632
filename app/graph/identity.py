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


_NON_NEGATIVE = ("ReLU",)


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
            if not layer.track_running_stats:
                raise IdentityError("BatchNorm without running statistics normalises each batch; it cannot be an identity")
            assert isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d)
            assert module.running_mean is not None and module.running_var is not None
            module.running_mean.zero_()
            # (x - 0) / sqrt((1 - eps) + eps) == x: the eval-mode statistics pass the input through.
            module.running_var.fill_(1.0 - layer.eps)
            if module.affine:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        case c.Dropout() | c.Identity():
            pass  # identities in eval mode
        case c.ReLU():
            if prev is None or prev.type not in _NON_NEGATIVE:
                raise IdentityError(
                    "ReLU is an identity only on non-negative input: place it right after a ReLU"
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
        case c.LayerNorm() | c.GroupNorm():
            raise IdentityError(
                f"{layer.type} re-normalises its input, so no weights make it an exact identity; "
                "insert it with init 'default'"
            )
        case _:
            raise IdentityError(f"{layer.type} is not an identity function for any weights")


def _conv_identity(layer: c.Conv1d | c.Conv2d, module: nn.Module) -> None:
    assert isinstance(module, nn.Conv1d | nn.Conv2d)
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

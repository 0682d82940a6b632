"""Function-preserving initialisation (Net2Net-style): make a freshly built layer compute the identity.

Each layer owns its rule (`Layer.init_identity`, beside its schema in layers_*.py): it either sets the layer's
tensors so that `layer(x) == x` exactly (up to float rounding) for every input it can receive at that place, or
raises `IdentityError` saying why no such weights exist. This module holds what the rules share: the error, the
entry point, and the check that an activation only ever sees inputs it passes through unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from .layer_base import Layer


class IdentityError(ValueError):
    """No weights make this layer an identity here; the message says why."""


def make_identity(layer: Layer, module: nn.Module, prev: Layer | None) -> None:
    """Set `module` (built from `layer`) to the identity. `prev` is the layer whose output it will read."""
    with torch.no_grad():
        layer.init_identity(module, prev)


def pass_through_on(layer: Layer, domain: tuple[float, float], prev: Layer | None) -> None:
    """The rule of an activation that is the identity on `domain` (a ReLU on [0, inf)): it has no weights to set,
    so it is an identity only where every value it can receive lies in `domain`, i.e. right after a layer whose
    outputs are bounded to it."""
    got = prev.output_range() if prev is not None else None
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

"""Modules of well-known libraries that are a catalogue layer in all but name.

Hugging Face's `Conv1D` (GPT-2, GPT-J's ancestors, DistilGPT-2) is a Linear layer whose weight is stored
transposed: `addmm(bias, x, weight)`. Captured as a `Linear` with the weight transposed back, GPT-2's projections
are layers named from the module tree (`transformer_h_0_attn_c_attn`) that edits can replace, not glue.
Modules are recognised by their class's qualified name, so nothing here imports the library.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from morphserve.graph.catalogue import LayerSpec, parse_layer


@dataclass(frozen=True)
class Adapter:
    """How a library module becomes a catalogue layer: its spec, and its tensors in that layer's layout."""

    layer: Callable[[nn.Module], LayerSpec]
    state_dict: Callable[[nn.Module], dict[str, torch.Tensor]]


def _conv1d_layer(m: nn.Module) -> LayerSpec:
    weight: Any = m.weight
    bias = getattr(m, "bias", None)
    return parse_layer(
        {"type": "Linear", "in_features": weight.shape[0], "out_features": weight.shape[1], "bias": bias is not None}
    )


def _conv1d_state(m: nn.Module) -> dict[str, torch.Tensor]:
    weight: Any = m.weight
    out = {"weight": weight.detach().t().contiguous()}
    bias = getattr(m, "bias", None)
    if bias is not None:
        out["bias"] = bias.detach()
    return out


ADAPTERS: dict[str, Adapter] = {
    "transformers.pytorch_utils.Conv1D": Adapter(_conv1d_layer, _conv1d_state),
}


def adapter_for(module: nn.Module) -> Adapter | None:
    cls = type(module)
    return ADAPTERS.get(f"{cls.__module__}.{cls.__qualname__}")

"""Parameter nodes: a tensor the model reads directly (a class token, a position embedding, a layer-scale factor).

A parameter node has no inputs; its spec says only the shape and datatype, and its value travels in
weights.safetensors under `<node>.value` like any layer's tensors. Backing it with a one-tensor module keeps
everything that works on layer weights working on it unchanged: set_weights (tensor name `value`), sharing
between versions, content-addressed blobs, device placement.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from .dtypes import OIP_TO_TORCH, Datatype

#: The most elements one parameter node may hold (1 GiB of FP32), the same bound as one layer's weights.
MAX_PARAMETER_ELEMENTS = 1 << 28


class ParameterSpec(BaseModel):
    """Shape and datatype of a parameter node's tensor (a 0-d scalar has shape [])."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    shape: Annotated[tuple[Annotated[int, Field(ge=1, le=1 << 24)], ...], Field(max_length=8)]
    datatype: Datatype = "FP32"

    @model_validator(mode="after")
    def _bounded(self) -> ParameterSpec:
        if math.prod(self.shape) > MAX_PARAMETER_ELEMENTS:
            raise ValueError(f"a parameter holds at most {MAX_PARAMETER_ELEMENTS} elements")
        return self

    def build(self) -> ParameterModule:
        """Zeros of the declared shape and datatype (a bundle's weights overwrite them)."""
        return ParameterModule(torch.zeros(self.shape, dtype=OIP_TO_TORCH[self.datatype]))

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def label(self) -> str:
        return f"Parameter({self.datatype} {list(self.shape)})"


class ParameterModule(nn.Module):
    """Holds one tensor as `value` (a frozen nn.Parameter when floating, else a buffer) and returns it."""

    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        if value.is_floating_point() or value.is_complex():
            self.value = nn.Parameter(value, requires_grad=False)
        else:
            self.register_buffer("value", value)

    def forward(self) -> torch.Tensor:
        return self.value

"""Serving a model in half precision: a compute datatype for the whole model, cast at its boundary.

A model's inputs and outputs keep their wire datatype (what clients send and receive, FP32 for a float model); its
layers and parameter nodes hold tensors of the compute datatype (FP16 or BF16 on GPUs, BF16 on CPUs that have it).
The fx graph casts floating inputs to the compute datatype after the placeholders and floating outputs back to FP32
before returning, so a client never sees the difference but in the numbers. New layers an edit brings (inserted,
replaced) are built in FP32, initialised (identity init included: exact in any datatype), then cast; weights sent in
FP32 are cast to the model's datatype; the `cast` op makes a new version in another datatype (copies of every tensor:
the parent keeps its own).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Literal, get_args

import torch
from torch import nn

from .dtypes import OIP_TO_TORCH

#: Datatypes a model may compute in.
ComputeDatatype = Literal["FP32", "FP16", "BF16", "FP64"]
COMPUTE: tuple[ComputeDatatype, ...] = get_args(ComputeDatatype)


def cast_module(module: nn.Module, datatype: str) -> nn.Module:
    """A copy of `module` whose floating tensors are `datatype` (integer buffers, e.g. BatchNorm's counter, stay)."""
    return copy.deepcopy(module).to(OIP_TO_TORCH[datatype])


def conform(module: nn.Module, datatype: str | None) -> nn.Module:
    """A freshly built module (nobody else holds it) brought to a model's compute datatype, in place."""
    return module if datatype is None else module.to(OIP_TO_TORCH[datatype])


def cast_modules(modules: Mapping[str, nn.Module], datatype: str) -> dict[str, nn.Module]:
    """Every module cast, sharing stays shared: a module used by two nodes is copied once."""
    copies: dict[int, nn.Module] = {}
    out = {}
    for nid, m in modules.items():
        if id(m) not in copies:
            copies[id(m)] = cast_module(m, datatype)
        out[nid] = copies[id(m)]
    return out


def like(tensor: torch.Tensor, ref: torch.Tensor, datatype: str | None) -> torch.Tensor:
    """Weights for a model that computes in `datatype`: floating tensors are brought to the reference's datatype."""
    if datatype is not None and tensor.is_floating_point() and ref.is_floating_point():
        return tensor.to(ref.dtype)
    return tensor


def to_wire(t: torch.Tensor) -> torch.Tensor:
    """Graph function at the outputs of a model with a compute datatype: floating results go out as FP32."""
    return t.float() if t.is_floating_point() else t

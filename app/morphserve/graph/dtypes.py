"""The datatype table (datatypes.py) keyed for torch code: OIP name <-> torch dtype."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, TypeAlias

import torch

from .datatypes import DATATYPES, NAMES, torch_dtype

if TYPE_CHECKING:
    # A Literal built from the table cannot be checked statically: to type checkers a datatype is a name.
    Datatype: TypeAlias = str
else:
    #: The OIP datatype names a spec may use (inputs, outputs, parameter nodes, casts): the table's, not a copy.
    Datatype = Literal[NAMES]

OIP_TO_TORCH: dict[str, torch.dtype] = {n: torch_dtype(n) for n in DATATYPES}
TORCH_TO_OIP: dict[torch.dtype, str] = {v: k for k, v in OIP_TO_TORCH.items()}

"""The datatype table (datatypes.py) keyed for torch code: OIP name <-> torch dtype."""

from __future__ import annotations

from typing import Literal

import torch

from .datatypes import DATATYPES, NAMES, torch_dtype

#: The OIP datatype names a spec may use (inputs, outputs, parameter nodes, casts): the table's, not a copy.
Datatype = Literal[*NAMES]  # type: ignore[valid-type]

OIP_TO_TORCH: dict[str, torch.dtype] = {n: torch_dtype(n) for n in DATATYPES}
TORCH_TO_OIP: dict[torch.dtype, str] = {v: k for k, v in OIP_TO_TORCH.items()}

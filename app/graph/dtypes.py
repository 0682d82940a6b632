"""The datatype table (datatypes.py) keyed for torch code: OIP name <-> torch dtype."""

from __future__ import annotations

import torch

from .datatypes import DATATYPES, torch_dtype

OIP_TO_TORCH: dict[str, torch.dtype] = {n: torch_dtype(n) for n in DATATYPES}
TORCH_TO_OIP: dict[torch.dtype, str] = {v: k for k, v in OIP_TO_TORCH.items()}

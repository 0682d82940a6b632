"""OIP datatype names and their torch dtypes: the one table both the graph and the server use."""

from __future__ import annotations

from typing import Literal

import torch

#: The OIP datatype names a spec may use (inputs, outputs, parameter nodes, casts).
Datatype = Literal[
    "BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "FP16", "BF16", "FP32", "FP64"
]  # fmt: skip

OIP_TO_TORCH: dict[str, torch.dtype] = {
    "BOOL": torch.bool,
    "INT8": torch.int8,
    "INT16": torch.int16,
    "INT32": torch.int32,
    "INT64": torch.int64,
    "UINT8": torch.uint8,
    "UINT16": torch.uint16,
    "UINT32": torch.uint32,
    "UINT64": torch.uint64,
    "FP16": torch.float16,
    "BF16": torch.bfloat16,
    "FP32": torch.float32,
    "FP64": torch.float64,
}
TORCH_TO_OIP: dict[torch.dtype, str] = {v: k for k, v in OIP_TO_TORCH.items()}


def oip_name(dtype: torch.dtype) -> str:
    return TORCH_TO_OIP[dtype]

"""The one table of tensor datatypes: OIP name, torch dtype, numpy dtype, element size.

Spec validation, the wire codecs (JSON and binary OIP), the inference path and the store all read it, so a
datatype is either supported end to end or refused by name everywhere. Importing this module pulls in numpy
only (never torch), so torch-free clients and the CLI use it too; torch dtypes are looked up on first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class DataType:
    name: str  # Open Inference Protocol name
    torch_name: str  # attribute of the torch module
    numpy: np.dtype[Any] | None  # None: numpy has no such type, so it cannot cross the wire (BF16)
    itemsize: int


DATATYPES: dict[str, DataType] = {
    d.name: d
    for d in (
        DataType("BOOL", "bool", np.dtype(np.bool_), 1),
        DataType("INT8", "int8", np.dtype(np.int8), 1),
        DataType("INT16", "int16", np.dtype(np.int16), 2),
        DataType("INT32", "int32", np.dtype(np.int32), 4),
        DataType("INT64", "int64", np.dtype(np.int64), 8),
        DataType("UINT8", "uint8", np.dtype(np.uint8), 1),
        DataType("UINT16", "uint16", np.dtype(np.uint16), 2),
        DataType("UINT32", "uint32", np.dtype(np.uint32), 4),
        DataType("UINT64", "uint64", np.dtype(np.uint64), 8),
        DataType("FP16", "float16", np.dtype(np.float16), 2),
        DataType("BF16", "bfloat16", None, 2),
        DataType("FP32", "float32", np.dtype(np.float32), 4),
        DataType("FP64", "float64", np.dtype(np.float64), 8),
    )
}
NAMES: tuple[str, ...] = tuple(DATATYPES)
#: Datatypes that can travel in requests and responses (JSON or binary): those numpy can hold.
OIP_TO_NUMPY: dict[str, np.dtype[Any]] = {n: d.numpy for n, d in DATATYPES.items() if d.numpy is not None}
NUMPY_TO_OIP: dict[np.dtype[Any], str] = {dt: n for n, dt in OIP_TO_NUMPY.items()}


def wire_problem(name: str) -> str | None:
    """Why a datatype cannot be an input or output on the wire, or None when it can."""
    if name not in DATATYPES:
        return f"unknown datatype {name!r}"
    if name not in OIP_TO_NUMPY:
        return f"{name} tensors cannot be sent or received; give the model FP32 inputs and outputs"
    return None


def torch_dtype(name: str) -> torch.dtype:
    import torch

    dtype: torch.dtype = getattr(torch, DATATYPES[name].torch_name)
    return dtype


def name_of_torch(dtype: torch.dtype) -> str:
    """The OIP name of a torch dtype (KeyError for dtypes outside the table, e.g. complex)."""
    return _torch_names()[dtype]


def _torch_names() -> dict[torch.dtype, str]:
    global _TORCH_NAMES
    if _TORCH_NAMES is None:
        _TORCH_NAMES = {torch_dtype(n): n for n in DATATYPES}
    return _TORCH_NAMES


_TORCH_NAMES: dict[torch.dtype, str] | None = None

"""JSON values -> numpy arrays, checked: the one converter for inference inputs (OIP JSON, /v1) and for weights
sent as JSON in edits.

numpy alone is permissive (it turns "1.5" into 1.5, True into 1, wraps 300 into a uint8 and makes object arrays
of ragged lists), so values are type- and range-checked first, level by level without recursion, so that hostile
nesting costs one pass and cannot exhaust the Python stack. Every refusal is an `ArrayError` whose message names
the tensor and says what was expected and what arrived.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .datatypes import OIP_TO_NUMPY, wire_problem

MAX_ELEMENTS = 1 << 27
MAX_NDIM = 32  # numpy 1.x caps arrays at 32 dimensions (2.x at 64)

_JSON_NAMES: dict[type, str] = {
    type(None): "null",
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
}
_PLURAL = {
    "null": "nulls",
    "boolean": "booleans",
    "integer": "integers",
    "number": "numbers",
    "string": "strings",
    "array": "arrays",
    "object": "objects",
}
_ALLOWED: dict[str, set[type]] = {"b": {bool}, "i": {int}, "u": {int}, "f": {int, float}}
_WANT = {"b": "booleans", "i": "integers", "u": "integers", "f": "numbers"}


class ArrayError(ValueError):
    """A JSON tensor that does not fit its datatype or shape; the message is meant for the client."""

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields


def json_type(v: Any) -> str:
    """JSON-flavoured type name for messages (clients speak JSON, not Python)."""
    return _JSON_NAMES.get(type(v), type(v).__name__)


def nested_shape(data: Any) -> list[int]:
    """The shape a nested list claims by its first elements (checked in full by `from_json`)."""
    shape: list[int] = []
    while isinstance(data, list) and len(shape) <= MAX_NDIM:
        shape.append(len(data))
        if not data:
            break
        data = data[0]
    return shape


def from_json(
    data: Any, datatype: str, *, what: str, shape: Sequence[int] | None = None, max_elements: int = MAX_ELEMENTS
) -> np.ndarray:
    """`data` (flat, or nested exactly like `shape`) as an array of `datatype`; `shape` None takes the nesting's."""
    problem = wire_problem(datatype)
    if problem is not None:
        raise ArrayError(f"{what}: {problem}")
    dtype = OIP_TO_NUMPY[datatype]
    if not isinstance(data, list):
        raise ArrayError(f"{what}: 'data' must be an array, got {json_type(data)}")
    inferred = shape is None
    shape = list(nested_shape(data) if shape is None else shape)
    if len(shape) > MAX_NDIM:
        raise ArrayError(f"{what}: {len(shape)} dimensions, at most {MAX_NDIM} allowed")
    count = math.prod(shape)  # exact Python int: nothing allocated yet
    if count > max_elements:
        raise ArrayError(f"{what}: shape {shape} has {count} elements, the limit is {max_elements}")
    try:
        flat = _flatten(data, what, shape, count)
    except ArrayError as e:
        if inferred:  # the client gave no shape: say what the real problem is
            detail = e.message.removeprefix(what + ": ")
            raise ArrayError(f"{what} is not a rectangular array of numbers: {detail}") from None
        raise
    kind = dtype.kind
    bad = set(map(type, flat)) - _ALLOWED[kind]
    if bad:
        if list in bad:
            raise ArrayError(f"{what}: data is nested deeper than shape {shape} or mixes arrays and values")
        names = (_JSON_NAMES.get(t, t.__name__) for t in bad)
        got = ", ".join(sorted(_PLURAL.get(n, n) for n in names))
        raise ArrayError(f"{what}: {datatype} data needs {_WANT[kind]}, got {got}", expected=datatype, got=got)
    if kind in "iu" and flat:
        info = np.iinfo(dtype)
        lo, hi = min(flat), max(flat)
        if lo < info.min or hi > info.max:
            v = lo if lo < info.min else hi
            raise ArrayError(
                f"{what}: value {v} out of range for {datatype} [{info.min}, {info.max}]", expected=datatype
            )
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            arr = np.asarray(flat, dtype=dtype)
    except (OverflowError, ValueError, TypeError) as e:  # e.g. an integer too large for a float
        raise ArrayError(f"{what}: {datatype} data could not be converted: {e}") from None
    if kind == "f" and not np.isfinite(arr).all():
        raise ArrayError(
            f"{what}: value out of range for {datatype} (values must be finite numbers: no NaN, no "
            f"infinity, none beyond {float(np.finfo(dtype).max):.4g})",
            expected=datatype,
        )
    return arr.reshape(shape)


def _flatten(data: list[Any], what: str, shape: list[int], count: int) -> list[Any]:
    if data and isinstance(data[0], list):  # nested form: each level must match its dimension exactly
        level: list[Any] = [data]
        for depth, dim in enumerate(shape):
            nxt: list[Any] = []
            for item in level:
                if not isinstance(item, list):
                    raise ArrayError(
                        f"{what}: nested data at depth {depth} has a {json_type(item)} where shape "
                        f"{shape} needs an array of {dim}"
                    )
                if len(item) != dim:
                    raise ArrayError(
                        f"{what}: nested data at depth {depth} has {len(item)} entries, shape {shape} "
                        f"needs {dim} (the rows must all have the same length)"
                    )
                nxt.extend(item)
            level = nxt
        data = level
    if len(data) != count:
        raise ArrayError(f"{what}: shape {shape} needs {count} elements, got {len(data)}")
    return data

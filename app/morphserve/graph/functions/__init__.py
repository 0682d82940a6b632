"""The function vocabulary of spec nodes: the Core ATen opset (opset.py), size arithmetic (symbolic.py), and the
legacy functions that specs written before the opset use (base.py and its neighbours).

A function node is data: `{"function": "aten.view.default", "inputs": ["x", "batch"], "args": {"self":
{"input": 0}, "size": [{"input": 1}, -1, 16]}}`. The server looks the name up here and calls only the callable this
table holds for it, with arguments that passed its schema; nothing in a bundle is imported or evaluated.

The legacy vocabulary (104 functions such as `reshape` or `layer_norm`, with pydantic schemas) stays, so that
journals and bundles written with it load and edit as before. Sizes that vary at run time are written there as
`{"input": i, "dim": d}`: "dimension d of the node's i-th input". A function whose result is a tuple (`split`,
`chunk`, `unbind`, and Core ATen operators with several results) is read through `getitem` nodes.
"""

from . import elementwise, nn, tensors  # noqa: F401  (registers the legacy functions, in this order)
from .base import FUNCTIONS, Args, Function, NoArgs, SizeRef, number, refs, register, substitute
from .opset import OPSET, REFUSED, AtenArgs, AtenOp, Ref, refusal
from .symbolic import SYMBOLIC, SymOp

Entry = Function | AtenOp | SymOp


def lookup(name: str) -> Entry | None:
    """The vocabulary entry a function node names, or None."""
    return FUNCTIONS.get(name) or OPSET.get(name) or SYMBOLIC.get(name)


def unknown(name: str) -> str:
    """Why `name` is not a function (one line, for the error that names the node)."""
    if name.startswith("aten."):
        return refusal(name)
    return (
        f"unknown function {name!r}: a function is a Core ATen operator (aten.NAME.OVERLOAD), size arithmetic "
        "(sym.add, sym.mul, ...) or one of the legacy functions (docs/API.md, 'The spec format')"
    )


__all__ = [
    "FUNCTIONS",
    "OPSET",
    "REFUSED",
    "SYMBOLIC",
    "Args",
    "AtenArgs",
    "AtenOp",
    "Entry",
    "Function",
    "NoArgs",
    "Ref",
    "SizeRef",
    "SymOp",
    "lookup",
    "number",
    "refs",
    "register",
    "substitute",
    "unknown",
]

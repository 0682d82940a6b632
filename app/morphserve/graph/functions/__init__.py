"""The function allowlist: every function a spec node may call, with a strict pydantic schema for its arguments.

A function node is data: `{"function": "reshape", "inputs": ["x"], "args": {"shape": [-1, 4, 16]}}`. The server
looks the name up here and calls only the callable registered for it, with arguments that passed the schema
(bounded ints and floats, short tuples, enums; nothing can name a Python object). Adding an op means adding an
entry here; nothing in a bundle is imported or evaluated.

Sizes that vary at run time (the batch, a sequence length) are written as `{"input": i, "dim": d}`: "dimension d
of the node's i-th input", resolved from the tensor when the graph runs. An input that only supplies such a size
comes after the function's data inputs (e.g. `expand` of a class token to the batch of `x`). A function whose
result is a tuple (`split`, `chunk`, `unbind`) is read through `getitem` nodes.
"""

from . import elementwise, nn, tensors  # noqa: F401  (registers the functions, in this order)
from .base import FUNCTIONS, Args, Function, NoArgs, SizeRef, number, refs, register, substitute

__all__ = ["FUNCTIONS", "Args", "Function", "NoArgs", "SizeRef", "number", "refs", "register", "substitute"]

"""Symbolic sizes of an exported program -> size nodes of the spec.

Every size export could not fix (the batch, a `-1` dimension of `--input`) is a sympy expression over symbols, and
in a non-strict export every symbol is a dimension of a user input. So a size is rebuilt from its expression, not
from the fx nodes export happened to emit (which may read tensors inside a layer the walk keeps whole): each
symbol becomes `aten.sym_size.int` of the input it comes from, each operation a `sym.*` node, each distinct
expression once. A symbol that is no input's dimension comes from a tensor's values (`.item()`, `nonzero`) and
cannot be a size of a served graph.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sympy  # type: ignore[import-untyped]
import torch
import torch.fx as fx
import torch.utils._sympy.functions as SF

from .refusals import CaptureError

#: sympy function -> the size node for it (n-ary ones are folded pairwise).
_BINARY: dict[type, str] = {
    sympy.Add: "sym.add",
    sympy.Mul: "sym.mul",
    SF.FloorDiv: "sym.floordiv",
    SF.CleanDiv: "sym.floordiv",
    SF.Mod: "sym.mod",
    SF.PythonMod: "sym.mod",
    SF.IntTrueDiv: "sym.truediv",
    SF.FloatTrueDiv: "sym.truediv",
    SF.PowByNatural: "sym.pow",
    SF.FloatPow: "sym.pow",
    sympy.Pow: "sym.pow",
    SF.Max: "sym.max",
    SF.Min: "sym.min",
}
_UNARY: dict[type, str] = {
    SF.CeilToInt: "sym.ceil",
    SF.FloorToInt: "sym.floor",
    SF.TruncToInt: "sym.int",
    SF.ToFloat: "sym.float",
    SF.OpaqueUnaryFn_sqrt: "sym.sqrt",
}

#: Emits one node (function, input ids, args) and returns its id.
Emit = Callable[[str, list[str], dict[str, Any]], str]


class SizeNodes:
    """The size nodes of one walk: `value(v)` for a SymInt/SymFloat gives a node id (or a constant)."""

    def __init__(self, placeholders: list[tuple[fx.Node, str]], emit: Emit) -> None:
        self.emit = emit
        self.symbols: dict[sympy.Symbol, tuple[str, int]] = {}
        for node, input_id in placeholders:
            shape = getattr(node.meta.get("val"), "shape", ())
            for d, size in enumerate(shape):
                if isinstance(size, torch.SymInt):
                    expr = size.node.expr
                    if isinstance(expr, sympy.Symbol) and expr not in self.symbols:
                        self.symbols[expr] = (input_id, d)
        self.cache: dict[sympy.Expr, str | int | float] = {}

    def value(self, v: torch.SymInt | torch.SymFloat | torch.SymBool, where: str) -> str | int | float:
        """A node id for a run-time size, or the constant it is; CaptureError for a data-dependent one."""
        expr = v.node.expr
        if isinstance(v, torch.SymBool):
            raise CaptureError(f"a condition on a run-time size ({expr}) is used as a value{where}")
        return self.expr(sympy.sympify(expr), where)

    def expr(self, e: sympy.Expr, where: str) -> str | int | float:
        if e in self.cache:
            return self.cache[e]
        out = self._build(e, where)
        self.cache[e] = out
        return out

    def _build(self, e: sympy.Expr, where: str) -> str | int | float:
        if e.is_Integer:
            return int(e)
        if e.is_Rational or e.is_Float:
            return float(e)
        if isinstance(e, sympy.Symbol):
            if e not in self.symbols:
                raise CaptureError(
                    f"a size that depends on a tensor's values ({e}){where}: the result's shape must follow from the "
                    "input shapes alone"
                )
            input_id, dim = self.symbols[e]
            return self.emit("aten.sym_size.int", [input_id], {"self": {"input": 0}, "dim": dim})
        func = type(e)
        if func in _UNARY or func in _BINARY:
            args = [self.expr(a, where) for a in e.args]
            if func in _UNARY:
                (a,) = args
                return self._node(_UNARY[func], {"a": a})
            acc = args[0]
            for b in args[1:]:
                acc = self._node(_BINARY[func], {"a": acc, "b": b})
            return acc
        raise CaptureError(f"a size computed at run time as {e}{where}, which size nodes cannot express yet")

    def _node(self, function: str, values: dict[str, str | int | float]) -> str | int | float:
        if all(not isinstance(v, str) for v in values.values()):  # constants: compute now
            from morphserve.graph.functions import SYMBOLIC

            return SYMBOLIC[function].target(*values.values())  # type: ignore[no-any-return]
        inputs: list[str] = []
        args: dict[str, Any] = {}
        for k, v in values.items():
            if isinstance(v, str):
                if v not in inputs:
                    inputs.append(v)
                args[k] = {"input": inputs.index(v)}
            else:
                args[k] = v
        return self.emit(function, inputs, args)

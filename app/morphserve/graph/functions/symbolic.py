"""Size arithmetic as graph nodes: what makes a variable sequence length, a reshape by a computed size or a buffer
sliced to the input's length importable.

`aten.sym_size.int` reads a dimension of a tensor when the graph runs; the functions here combine such sizes
(`{"function": "sym.mul", "inputs": ["batch", "seq"], "args": {"a": {"input": 0}, "b": {"input": 1}}}`), and an
operator's int or float argument may name the result (`{"input": i}`). Results are Python numbers, bounded so that
no chain of them grows without limit.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from .opset import AtenArgs, Param, Ref, _float, _refs, _resolve

LIMIT: Final = 1 << 62  # the largest magnitude a size node may hold


def _bounded(v: Any) -> Any:
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and not -LIMIT <= v <= LIMIT:
        raise ValueError(f"a size computed at run time is out of range ({v})")
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError("a size computed at run time is not finite")
    return v


def sym_add(a: Any, b: Any) -> Any:
    return _bounded(a + b)


def sym_sub(a: Any, b: Any) -> Any:
    return _bounded(a - b)


def sym_mul(a: Any, b: Any) -> Any:
    return _bounded(a * b)


def sym_floordiv(a: Any, b: Any) -> Any:
    return _bounded(a // b)


def sym_mod(a: Any, b: Any) -> Any:
    return _bounded(a % b)


def sym_truediv(a: Any, b: Any) -> Any:
    return _bounded(a / b)


def sym_pow(a: Any, b: Any) -> Any:
    if isinstance(b, int) and b > 64:
        raise ValueError(f"a size raised to the power {b}")
    return _bounded(a**b)


def sym_max(a: Any, b: Any) -> Any:
    return max(a, b)


def sym_min(a: Any, b: Any) -> Any:
    return min(a, b)


def sym_neg(a: Any) -> Any:
    return -a


def sym_float(a: Any) -> float:
    return float(a)


def sym_int(a: Any) -> int:
    return _bounded(int(a))  # type: ignore[no-any-return]


def sym_ceil(a: Any) -> int:
    return _bounded(math.ceil(a))  # type: ignore[no-any-return]


def sym_floor(a: Any) -> int:
    return _bounded(math.floor(a))  # type: ignore[no-any-return]


def sym_sqrt(a: Any) -> float:
    return math.sqrt(a)


@dataclass(frozen=True)
class SymOp:
    """Arithmetic on sizes: one or two number arguments (`a`, `b`), each a constant or an input."""

    name: str
    target: Callable[..., Any]
    params: tuple[Param, ...]
    python: tuple[Callable[..., Any], ...]  # what the capture recognises as this function
    returns: str = "scalar"
    doc: str = ""

    def parse(self, inputs: Sequence[str], args: Mapping[str, Any]) -> AtenArgs:
        names = [p.name for p in self.params]
        if set(args) != set(names):
            raise ValueError(f"function {self.name} takes the arguments {names}, got {sorted(args)}")
        values: dict[str, Any] = {}
        for p in self.params:
            try:
                values[p.name] = _float(args[p.name], len(inputs))
            except ValueError as e:
                raise ValueError(f"function {self.name}: argument {p.name!r}: {e}") from None
        used = {r.input for v in values.values() for r in _refs(v)}
        if used != set(range(len(inputs))):
            raise ValueError(f"function {self.name}: each input must be named by an argument")
        return AtenArgs(values)

    def input_kinds(self, parsed: Any, n: int) -> list[str]:
        return ["scalar"] * n

    def call(
        self, parsed: Any, inputs: Sequence[Any], size: Callable[[Any], Any], device: Callable[[], Any]
    ) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
        return self.target, tuple(_resolve(parsed.values[p.name], inputs) for p in self.params), {}

    def to_json(self, values: Mapping[str, Any]) -> dict[str, Any]:
        return {k: {"input": v.input} if isinstance(v, Ref) else v for k, v in values.items()}


_A = (Param("a", "float", False),)
_AB = (Param("a", "float", False), Param("b", "float", False))

SYMBOLIC: dict[str, SymOp] = {
    s.name: s
    for s in (
        SymOp("sym.add", sym_add, _AB, (operator.add,), doc="a + b"),
        SymOp("sym.sub", sym_sub, _AB, (operator.sub,), doc="a - b"),
        SymOp("sym.mul", sym_mul, _AB, (operator.mul,), doc="a * b"),
        SymOp("sym.floordiv", sym_floordiv, _AB, (operator.floordiv,), doc="a // b"),
        SymOp("sym.mod", sym_mod, _AB, (operator.mod,), doc="a % b"),
        SymOp("sym.truediv", sym_truediv, _AB, (operator.truediv,), doc="a / b"),
        SymOp("sym.pow", sym_pow, _AB, (operator.pow,), doc="a ** b (b at most 64)"),
        SymOp("sym.max", sym_max, _AB, (max,), doc="max(a, b)"),
        SymOp("sym.min", sym_min, _AB, (min,), doc="min(a, b)"),
        SymOp("sym.neg", sym_neg, _A, (operator.neg,), doc="-a"),
        SymOp("sym.float", sym_float, _A, (float,), doc="float(a)"),
        SymOp("sym.int", sym_int, _A, (int,), doc="int(a) (towards zero)"),
        SymOp("sym.ceil", sym_ceil, _A, (math.ceil,), doc="ceil(a)"),
        SymOp("sym.floor", sym_floor, _A, (math.floor,), doc="floor(a)"),
        SymOp("sym.sqrt", sym_sqrt, _A, (math.sqrt,), doc="sqrt(a)"),
    )
}

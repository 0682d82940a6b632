"""Symbolic sizes in an exported graph -> what a spec can say: -1, or "dimension d of input i"."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.fx as fx

from .aten import Refused, is_symbolic, val

if TYPE_CHECKING:
    from .walk import Walker


class RunTimeSizes:
    """Symbolic sizes of one node -> -1 or {"input": i, "dim": d}; inputs it needs for sizes go to `extra`."""

    def __init__(self, walker: Walker, node: fx.Node) -> None:
        self.w, self.node = walker, node
        self.extra: list[fx.Node] = []

    def ref(self, v: Any, data: list[fx.Node]) -> Any:
        if isinstance(v, fx.Node) and isinstance(val(v), int):
            return int(val(v))  # a size that export knows to be constant
        if not is_symbolic(v):
            if isinstance(v, fx.Node):
                raise Refused("a size that is a tensor value")
            return int(v)
        expr = val(v).node.expr
        for i, t in enumerate([*data, *self.extra]):
            for d, size in enumerate(getattr(val(t), "shape", ())):
                if isinstance(size, torch.SymInt) and size.node.expr == expr:
                    return {"input": i, "dim": d}
        for p in self.w.user_placeholders:
            for d, size in enumerate(val(p).shape):
                if isinstance(size, torch.SymInt) and size.node.expr == expr:
                    self.extra.append(p)
                    return {"input": len(data) + len(self.extra) - 1, "dim": d}
        raise Refused(f"a size computed at run time ({expr}) that is no input's dimension")

    def shape(self, values: Any, data: list[fx.Node], infer: bool = True) -> list[Any]:
        values = [int(val(v)) if isinstance(v, fx.Node) and isinstance(val(v), int) else v for v in values]
        symbolic = [i for i, v in enumerate(values) if is_symbolic(v)]
        if infer and len(symbolic) == 1 and -1 not in values:
            return [-1 if i == symbolic[0] else int(v) for i, v in enumerate(values)]
        return [self.ref(v, data) for v in values]

    def expand(self, values: Any, source: fx.Node, data: list[fx.Node]) -> list[Any]:
        values = list(values)
        src = list(val(source).shape)
        offset = len(values) - len(src)
        out = []
        for i, v in enumerate(values):
            j = i - offset
            same = (
                j >= 0 and is_symbolic(v) and isinstance(src[j], torch.SymInt) and src[j].node.expr == val(v).node.expr
            )
            out.append(-1 if same else self.ref(v, data))
        return out

    def index(self, value: Any, data: list[fx.Node]) -> Any:
        return None if value is None else self.ref(value, data)

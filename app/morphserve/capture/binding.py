"""Which forward parameter each `--input` is: by name where forward has a parameter of that name (`input_ids`,
`attention_mask`, `pixel_values`), else by position among the parameters left.

A Hugging Face forward takes a dozen optional arguments in an order few people know (GPT-2's second one is
`past_key_values`), so binding by position alone put `--input attention_mask:...` on the cache. An input that
lands on a parameter that cannot take a tensor is refused with a message naming the parameter.
"""

from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from morphserve.graph.spec import TensorSpec

from .refusals import CaptureError

#: Parameters that hold a model's cache or state, never an input a served model takes.
_NOT_INPUTS = ("past_key_values", "cache", "cache_params", "mems", "cache_position", "past_key_value")


@dataclass(frozen=True)
class Bound:
    """Where each --input goes: `keyword[i]` is the forward parameter of input i (None: positional only)."""

    keyword: tuple[str | None, ...]
    how: tuple[str, ...]  # "by name" or "by position", for messages

    def call_args(self, tensors: tuple[torch.Tensor, ...]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        args = tuple(t for t, k in zip(tensors, self.keyword, strict=True) if k is None)
        kwargs = {k: t for t, k in zip(tensors, self.keyword, strict=True) if k is not None}
        return args, kwargs

    def describe(self, specs: list[TensorSpec]) -> str:
        parts = [
            f"{t.name}->{k or f'argument {i}'} ({h})"
            for i, (t, k, h) in enumerate(zip(specs, self.keyword, self.how, strict=True))
        ]
        return ", ".join(parts)


def bind(module: nn.Module, specs: list[TensorSpec]) -> Bound:
    """Bind each input to a forward parameter; CaptureError naming the parameter when one cannot take it."""
    try:
        signature = inspect.signature(module.forward)
    except (TypeError, ValueError):
        return Bound((None,) * len(specs), ("by position",) * len(specs))
    params = list(signature.parameters.values())
    named = [p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if not named and any(p.kind == p.VAR_POSITIONAL for p in params):
        return Bound((None,) * len(specs), ("by position",) * len(specs))
    by_name = {p.name: p for p in named if p.kind != p.POSITIONAL_ONLY}
    taken: set[str] = {t.name for t in specs if t.name in by_name}
    free = [p for p in named if p.name not in taken and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    keyword: list[str | None] = []
    how: list[str] = []
    for t in specs:
        if t.name in by_name:
            keyword.append(t.name)
            how.append("by name")
            continue
        if not free:
            raise CaptureError(
                f"--input {t.name!r}: forward has no parameter of that name and no positional parameter left for it "
                f"(forward takes {', '.join(p.name for p in named) or 'no named parameters'}): "
                "forward takes fewer tensor inputs than --input gives"
            )
        p = free.pop(0)
        if p.kind == p.POSITIONAL_ONLY:
            keyword.append(None)
        else:
            keyword.append(p.name)
        how.append("by position")
    hints = _hints(module)
    for t, k, h in zip(specs, keyword, how, strict=True):
        if k is None:
            continue
        problem = _cannot_take_tensor(k, hints.get(k, signature.parameters[k].annotation))
        if problem is not None:
            order = ", ".join(p.name for p in named[:6]) + (", ..." if len(named) > 6 else "")
            raise CaptureError(
                f"--input {t.name!r} lands on forward parameter {k!r} ({h}), which {problem}: name each --input after "
                f"the parameter it is for (forward takes {order})"
            )
    return Bound(tuple(keyword), tuple(how))


def _hints(module: nn.Module) -> dict[str, Any]:
    try:
        return typing.get_type_hints(module.forward)
    except Exception:  # noqa: BLE001 - annotations that do not resolve (forward references): use the raw ones
        return {}


def _cannot_take_tensor(name: str, annotation: Any) -> str | None:
    """Why a parameter cannot take a tensor (its name or annotation says it is a cache or not a tensor), or None."""
    if name in _NOT_INPUTS:
        return "is the model's cache, not an input"
    if annotation is inspect.Parameter.empty or annotation is Any:
        return None
    if isinstance(annotation, str):
        return None if "Tensor" in annotation or "Any" in annotation else f"takes {annotation}, not a tensor"
    kinds = typing.get_args(annotation) or (annotation,)
    flat: list[Any] = []
    for k in kinds:
        flat.extend(typing.get_args(k) or (k,))
    for k in flat:
        if k is Any or (isinstance(k, type) and (issubclass(k, torch.Tensor) or _tensor_type(k))):
            return None
        if isinstance(k, typing.TypeVar | str):
            return None
    shown = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
    return f"takes {shown}, not a tensor"


def _tensor_type(k: type) -> bool:
    """torch.LongTensor and friends: legacy tensor types that are no subclasses of torch.Tensor."""
    return k.__module__ == "torch" and k.__name__.endswith("Tensor")

"""Call boundaries of catalogue layers, made visible in the exported graph.

Before export, every module whose type is in the layer catalogue gets a forward pre-hook and a forward hook that
pass each tensor argument and each tensor result through `morphserve_capture::mark`, an identity custom op that
carries (module path, call number, index, in/out) as constants. torch.export keeps custom ops as they are, so
after export the marks say exactly which graph values went into and came out of each call, whatever the module
did inside and however often it was called. The hooks also record the call's non-tensor arguments
(`need_weights=False`) and which signature parameter each tensor was bound to.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils import _pytree as pytree

from morphserve.graph.catalogue import MODULE_TYPES

from .adapters import adapter_for


@torch.library.custom_op("morphserve_capture::mark", mutates_args=())
def mark(x: torch.Tensor, path: str, call: int, index: int, output: bool) -> torch.Tensor:
    return x.clone()


@mark.register_fake
def _(x: torch.Tensor, path: str, call: int, index: int, output: bool) -> torch.Tensor:
    return torch.empty_like(x)


MARK = torch.ops.morphserve_capture.mark.default

#: Modules run opaquely during export (path -> module, original forward). Export traces into a module's
#: implementation, and for some the decomposition fixes a -1 dimension to the example size (an LSTM unrolls over
#: time steps, max pooling guards on the length). For these the catalogue layer is the whole story anyway, so
#: export sees one custom op whose fake implementation computes the result shapes from the module's config.
_OPAQUE: dict[str, tuple[nn.Module, Any]] = {}


@torch.library.custom_op("morphserve_capture::opaque", mutates_args=())
def opaque(xs: list[torch.Tensor], path: str) -> list[torch.Tensor]:
    module, forward = _OPAQUE[path]
    return [t.clone() for t in pytree.tree_leaves(forward(*xs)) if isinstance(t, torch.Tensor)]


@opaque.register_fake
def _(xs: list[torch.Tensor], path: str) -> list[torch.Tensor]:
    module, _ = _OPAQUE[path]
    return [t for t in pytree.tree_leaves(_result_like(module, xs)) if isinstance(t, torch.Tensor)]


OPAQUE = torch.ops.morphserve_capture.opaque.default


def _pool_len(n: Any, k: int, s: int, p: int, d: int) -> Any:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def _result_like(module: nn.Module, xs: list[torch.Tensor]) -> Any:
    """Empty tensors shaped like the module's result for inputs `xs` (computed from its configuration)."""
    x = xs[0]
    if isinstance(module, nn.RNNBase):
        batched = x.dim() == 3
        dirs = 2 if module.bidirectional else 1
        h_out = getattr(module, "proj_size", 0) or module.hidden_size
        if batched:
            b, t = (x.shape[0], x.shape[1]) if module.batch_first else (x.shape[1], x.shape[0])
            out = x.new_empty((b, t, dirs * h_out) if module.batch_first else (t, b, dirs * h_out))
            state: tuple[int, ...] = (module.num_layers * dirs, b)
        else:
            out = x.new_empty((x.shape[0], dirs * h_out))
            state = (module.num_layers * dirs,)
        h = x.new_empty((*state, h_out))
        if isinstance(module, nn.LSTM):
            return out, (h, x.new_empty((*state, module.hidden_size)))
        return out, h
    # max / average pooling without ceil_mode
    nd = 1 if isinstance(module, nn.MaxPool1d | nn.AvgPool1d) else 2

    def tup(v: Any) -> tuple[int, ...]:
        return tuple(v) if isinstance(v, tuple | list) else (v,) * nd

    k, p = tup(module.kernel_size), tup(module.padding)
    s = tup(module.stride if module.stride is not None else module.kernel_size)
    d = tup(getattr(module, "dilation", 1))
    lead, spatial = x.shape[: x.dim() - nd], x.shape[x.dim() - nd :]
    return x.new_empty((*lead, *(_pool_len(n, *a) for n, a in zip(spatial, zip(k, s, p, d, strict=True), strict=True))))


def _opaque_ok(module: nn.Module) -> bool:
    if isinstance(module, nn.LSTM | nn.GRU | nn.RNN):
        return type(module) in (nn.LSTM, nn.GRU, nn.RNN)
    if type(module) in (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d):
        return not module.ceil_mode and not getattr(module, "return_indices", False)
    return False


def _opaque_forward(path: str, module: nn.Module) -> Any:
    signature = inspect.signature(module.forward)

    def forward(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        leaves, _ = pytree.tree_flatten((bound.args, bound.kwargs))
        if not all(isinstance(v, torch.Tensor) or v is None for v in leaves):
            raise TypeError(f"{type(module).__name__} at {path!r} is called with non-tensor arguments")
        xs = [v for v in leaves if isinstance(v, torch.Tensor)]
        like = _result_like(module, xs)
        flat, spec = pytree.tree_flatten(like)
        return pytree.tree_unflatten(list(opaque(xs, path)), spec)

    forward.__signature__ = signature  # type: ignore[attr-defined]  # so the hooks bind arguments by name
    return forward


@dataclass
class Call:
    """One call of a catalogue module during export."""

    path: str
    number: int
    module: nn.Module
    #: per signature parameter: ("tensor", [mark indices]) for tensors (several for a tuple of tensors), or
    #: ("value", python value) for anything else
    bound: dict[str, tuple[str, Any]] = field(default_factory=dict)
    n_inputs: int = 0
    n_outputs: int = 0


@contextmanager
def marked(root: nn.Module) -> Iterator[dict[tuple[str, int], Call]]:
    """Hooks on every catalogue-typed submodule for the duration of an export; yields the recorded calls."""
    calls: dict[tuple[str, int], Call] = {}
    counts: dict[str, int] = {}
    handles = []

    def pre(path: str, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        number = counts.get(path, 0)
        counts[path] = number + 1
        call = Call(path, number, module)
        calls[(path, number)] = call
        try:
            bound = inspect.signature(module.forward).bind(*args, **kwargs)
        except TypeError:
            return None  # a call torch itself would refuse; leave it alone
        index = 0

        def tag(x: Any) -> Any:
            nonlocal index
            if isinstance(x, torch.Tensor):
                index += 1
                return mark(x, path, number, index - 1, False)
            return x

        new: dict[str, Any] = {}
        for name, value in bound.arguments.items():
            leaves = [v for v in pytree.tree_leaves(value) if isinstance(v, torch.Tensor)]
            if leaves:
                first = index
                new[name] = pytree.tree_map(tag, value)
                call.bound[name] = ("tensor", list(range(first, index)))
            else:
                new[name] = value
                call.bound[name] = ("value", value)
        call.n_inputs = index
        bound.arguments.update(new)
        return bound.args, bound.kwargs

    def post(path: str, module: nn.Module, args: Any, kwargs: Any, out: Any) -> Any:
        call = calls[(path, counts[path] - 1)]
        index = 0

        def tag(x: Any) -> Any:
            nonlocal index
            if isinstance(x, torch.Tensor):
                index += 1
                return mark(x, path, call.number, index - 1, True)
            return x

        result = pytree.tree_map(tag, out)
        call.n_outputs = index
        return result

    opaque_paths = []
    for path, module in root.named_modules():
        if path and _opaque_ok(module):
            _OPAQUE[path] = (module, module.forward)
            module.forward = _opaque_forward(path, module)
            opaque_paths.append(path)
        if path and (type(module) in MODULE_TYPES or adapter_for(module) is not None):
            handles.append(module.register_forward_pre_hook(lambda m, a, k, p=path: pre(p, m, a, k), with_kwargs=True))
            handles.append(
                module.register_forward_hook(lambda m, a, k, o, p=path: post(p, m, a, k, o), with_kwargs=True)
            )
    try:
        yield calls
    finally:
        for h in handles:
            h.remove()
        for path in opaque_paths:
            module, _ = _OPAQUE.pop(path)
            del module.forward  # the instance attribute; the class's forward shows again

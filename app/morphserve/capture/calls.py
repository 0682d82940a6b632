"""Which recorded module calls can become one catalogue layer node, and how its inputs are wired.

A call becomes a layer node when the catalogue entry can express it: the module's configuration is in the
catalogue, and the call passes its tensors the way the entry's inputs are ordered (query, key, value for
attention; input[, h0[, c0]] for recurrent layers; the one input for everything else) with no options the
entry lacks (masks, packed sequences). Anything else is dissolved: its operations are captured one by one as
functions and parameter nodes, which is always exact, just less convenient to edit.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from morphserve.graph import catalogue as c
from morphserve.graph.errors import SpecError

from .adapters import adapter_for
from .marks import Call


class NotALayer(Exception):
    """This call cannot be one layer node (the reason is kept for debugging; the call is dissolved)."""


def layer_for_call(call: Call) -> tuple[c.LayerSpec, list[int]]:
    """The layer spec for `call` and, in the layer's input order, the mark index of each input."""
    adapter = adapter_for(call.module)
    try:
        layer = adapter.layer(call.module) if adapter is not None else c.layer_from_module(call.module)
    except SpecError as e:
        raise NotALayer(e.message) from None
    match layer:
        case c.MultiheadAttention():
            _only_defaults(call, ("key_padding_mask", "attn_mask"), {"is_causal": False})
            need = _value(call, "need_weights", True)
            average = _value(call, "average_attn_weights", True)
            layer = layer.model_copy(update={"need_weights": bool(need), "average_attn_weights": bool(average)})
            inputs = [i for name in ("query", "key", "value") for i in _tensor(call, name, 1)]
        case c.LSTM() | c.GRU() | c.RNN():
            _only_defaults(call, (), {})
            inputs = _tensor(call, "input", 1)
            if call.bound.get("hx", ("value", None))[0] == "tensor":
                inputs += _tensor(call, "hx", 2 if isinstance(layer, c.LSTM) else 1)
        case c.TransformerEncoderLayer():
            _only_defaults(call, ("src_mask", "src_key_padding_mask"), {"is_causal": False})
            inputs = _tensor(call, "src", 1)
        case _:
            names = list(call.bound)
            if not names:
                raise NotALayer("no arguments")
            _only_defaults(call, tuple(names[1:]), {})
            inputs = _tensor(call, names[0], 1)
    if len(inputs) != call.n_inputs:
        raise NotALayer(f"{call.n_inputs} tensor arguments, the layer reads {len(inputs)}")
    if layer.n_outputs() != call.n_outputs:
        raise NotALayer(f"{call.n_outputs} tensor results, the layer returns {layer.n_outputs()}")
    return layer, inputs


def _tensor(call: Call, name: str, count: int) -> list[int]:
    kind, value = call.bound.get(name, ("value", None))
    if kind != "tensor" or len(value) != count:
        raise NotALayer(f"argument {name!r} is not {count} tensor(s)")
    return list(value)


def _value(call: Call, name: str, default: Any) -> Any:
    kind, value = call.bound.get(name, ("value", default))
    if kind != "value":
        raise NotALayer(f"argument {name!r} is a tensor")
    return value


def _only_defaults(call: Call, nones: tuple[str, ...], values: dict[str, Any]) -> None:
    """The arguments in `nones` must be None (absent) and those in `values` must have the given value."""
    for name in nones:
        if call.bound.get(name, ("value", None)) != ("value", None):
            raise NotALayer(f"argument {name!r} is given")
    for name, want in values.items():
        if call.bound.get(name, ("value", want)) != ("value", want):
            raise NotALayer(f"argument {name!r} is not {want!r}")


def is_layer_module(module: nn.Module) -> bool:
    return type(module) in c.MODULE_TYPES or adapter_for(module) is not None

"""Hugging Face specifics: a served model has no cache, and its experts run in one graph.

A decoder's forward returns its key/value cache (a `DynamicCache`) unless told not to; a served model answers
each request on its own, so capture turns the cache off (`config.use_cache = False`, and `use_cache=False` where
forward takes it) and says so in one line. `ModelOutput` fields become the named outputs (walk.py reads the
output tree's keys), and tied weights stay one tensor (walk.py).
"""

from __future__ import annotations

from torch import nn

from .binding import Bound


def prepare(module: nn.Module, bound: Bound, notes: list[str]) -> None:
    config = getattr(module, "config", None)
    turned_off = False
    if config is not None and getattr(config, "use_cache", False):
        config.use_cache = False
        turned_off = True
    for sub in module.modules():  # encoder-decoder parts keep their own config
        c = getattr(sub, "config", None)
        if c is not None and c is not config and getattr(c, "use_cache", False):
            c.use_cache = False
            turned_off = True
    if turned_off:
        notes.append("use_cache is off: the model is served without its key/value cache (each request on its own)")
    _batched_experts(module, notes)


def _batched_experts(module: nn.Module, notes: list[str]) -> None:
    """Mixture-of-experts layers run with the `batched_mm` experts implementation: the grouped one counts the
    tokens routed to each expert (`histc`) and sizes its work by that count, which one graph cannot; batched_mm
    gathers each token's chosen experts' weights instead, with the same result."""
    configs = {id(c): c for m in module.modules() if (c := getattr(m, "config", None)) is not None}
    changed = False
    for c in configs.values():
        current = getattr(c, "_experts_implementation", None)
        if current is not None and current != "batched_mm":
            try:
                c._experts_implementation = "batched_mm"
            except (AttributeError, ValueError):
                continue
            changed = True
    if changed:
        notes.append("the mixture-of-experts layers run as batched_mm (the same result, in one graph)")

"""Hugging Face specifics: a served model has no cache.

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

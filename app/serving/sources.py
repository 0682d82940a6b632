"""Where a model's first version comes from: the zoo, a JSON spec, or a bundle file (zip / directory / spec file).

Each source is a small object with `load(name, budget)`, so that the registry serves any of them the same way and
a new kind of source (an uploaded bundle) is one more class, not another branch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from app.graph import ZOO, ModelVersion, SpecError, from_spec, load_zoo, parse_spec, read_bundle
from app.graph.zoo import zoo_spec

from .budget import MemoryBudget

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise SpecError(f"model name {name!r} must match {NAME.pattern}")
    return name


class ModelSource(Protocol):
    def load(self, name: str | None, budget: MemoryBudget) -> ModelVersion:
        """Version 1, named `name` (or the source's own name), sized against `budget` before it is built."""

    def __str__(self) -> str: ...


@dataclass(frozen=True)
class ZooSource:
    zoo: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def load(self, name: str | None, budget: MemoryBudget) -> ModelVersion:
        budget.check_spec(zoo_spec(self.zoo, **self.options))
        return load_zoo(self.zoo, as_name=check_name(name or self.zoo), **self.options)

    def __str__(self) -> str:
        return f"zoo model {self.zoo}"


@dataclass(frozen=True)
class SpecSource:
    spec: Mapping[str, Any]
    tensors: Mapping[str, torch.Tensor] | None = None

    def load(self, name: str | None, budget: MemoryBudget) -> ModelVersion:
        spec = parse_spec(dict(self.spec))
        budget.check_spec(spec)
        return from_spec(spec, self.tensors, name=check_name(name or spec.name))

    def __str__(self) -> str:
        return "a JSON spec"


@dataclass(frozen=True)
class BundleSource:
    path: Path

    def load(self, name: str | None, budget: MemoryBudget) -> ModelVersion:
        spec, tensors = read_bundle(self.path)
        parsed = parse_spec(spec)
        budget.check_spec(parsed)
        return from_spec(parsed, tensors, name=check_name(name or spec.get("name") or self.path.stem))

    def __str__(self) -> str:
        return f"bundle {self.path}"


def parse_entry(entry: str) -> tuple[str | None, ModelSource]:
    """A `--model` entry: `zoo`, `path`, or `name=zoo|path`."""
    name, _, source = entry.partition("=") if "=" in entry else (None, "", entry)
    if source in ZOO:
        return name or source, ZooSource(source)
    path = Path(source)
    if not path.exists():
        raise SpecError(f"model source {source!r} is neither a zoo model ({', '.join(ZOO)}) nor a file")
    return name, BundleSource(path)

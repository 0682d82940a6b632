"""The working copy an edit's ops rewrite: a version's wiring and module table, mutable, discarded on failure."""

from __future__ import annotations

import torch
from torch import nn

from .catalogue import LayerSpec
from .errors import NotFoundError
from .spec import ModelSpec, NodeSpec, OutputSpec, TensorSpec
from .version import ModelVersion


class Draft:
    """What the ops of one edit change, in order; the base version is never touched (its lists are copied, its
    modules shared until an op replaces one)."""

    def __init__(self, base: ModelVersion) -> None:
        self.inputs: tuple[TensorSpec, ...] = base.spec.inputs
        self.nodes: list[NodeSpec] = list(base.spec.nodes)
        self.outputs: list[OutputSpec] = list(base.spec.outputs)
        self.modules: dict[str, nn.Module] = dict(base.modules)
        self.compute: str | None = base.spec.compute_datatype

    def index(self, node_id: str) -> int:
        for i, n in enumerate(self.nodes):
            if n.id == node_id:
                return i
        raise NotFoundError(f"node {node_id!r} does not exist", node=node_id)

    def ids(self) -> set[str]:
        return {t.name for t in self.inputs} | {n.id for n in self.nodes}

    def rewire(self, old: str, new: str, skip: str) -> None:
        """Point every reader of `old` (except node `skip`) and every output at `new`."""
        for i, n in enumerate(self.nodes):
            if n.id != skip and old in n.inputs:
                self.nodes[i] = n.model_copy(update={"inputs": tuple(new if x == old else x for x in n.inputs)})
        self.outputs = [o.model_copy(update={"node": new}) if o.node == old else o for o in self.outputs]

    def layer_of(self, node_id: str) -> LayerSpec | None:
        n = next((n for n in self.nodes if n.id == node_id), None)
        return n.layer if n is not None else None

    def fresh_name(self, layer: LayerSpec) -> str:
        """`<type>_<k>` with the smallest k that names no node, input or output."""
        taken = self.ids() | {o.name for o in self.outputs}
        base = layer.type.lower()
        k = 1
        while f"{base}_{k}" in taken:
            k += 1
        return f"{base}_{k}"

    def spec(self, name: str) -> ModelSpec:
        return ModelSpec(
            name=name,
            inputs=self.inputs,
            outputs=tuple(self.outputs),
            nodes=tuple(self.nodes),
            compute_datatype=self.compute,
        )


def build_seeded(layer: LayerSpec, seed: int) -> nn.Module:
    """The layer's module with its default initialisation drawn from `seed`: the same op builds the same weights
    on every replica, and the global random state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return layer.build()

"""Import records each node's module path (what the page groups by): a layer's own path, a function's calling
module, a parameter's path; it survives the bundle and the journal and passes through the graph JSON."""

from __future__ import annotations

import torch
from torch import nn

from morphserve.capture import capture
from morphserve.graph.bundle import from_spec, read_bundle, write_bundle
from morphserve.graph.views import describe
from tests.models.hf import gpt2


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.scale = nn.Parameter(torch.ones(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x)) * self.scale


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(Block(), Block())
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def test_nodes_carry_the_module_path_they_came_from(tmp_path) -> None:  # type: ignore[no-untyped-def]
    v = capture(Net().eval(), ["x:FP32:-1,8"], name="net")
    paths = {n.id: n.path for n in v.spec.nodes}
    layers = {n.path for n in v.spec.nodes if n.layer is not None}
    assert {"encoder.0.fc", "encoder.1.fc", "head"} <= layers, paths
    functions = [n for n in v.spec.nodes if n.function is not None and n.function.startswith("aten.mul")]
    assert {n.path for n in functions} == {"encoder.0", "encoder.1"}, paths  # the module that called it
    params = {n.path for n in v.spec.nodes if n.parameter is not None}
    assert {"encoder.0.scale", "encoder.1.scale"} <= params
    write_bundle(v, tmp_path / "net.zip")
    spec, weights = read_bundle(tmp_path / "net.zip")
    again = from_spec(spec, weights)
    assert {n.id: n.path for n in again.spec.nodes} == paths  # kept by the bundle
    described = {n.id: n.path for n in describe(again).nodes if n.kind != "input" and n.kind != "output"}
    assert described == paths


def test_a_transformer_keeps_its_module_tree() -> None:
    v = capture(gpt2(), ["input_ids:INT64:-1,-1"], name="g")
    layer_paths = [n.path for n in v.spec.nodes if n.layer is not None and n.path]
    assert any(p.startswith("transformer.h.0.") for p in layer_paths), layer_paths
    assert any(p.startswith("transformer.h.1.") for p in layer_paths), layer_paths

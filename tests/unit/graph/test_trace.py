"""Importing an nn.Module with torch.fx (trace.from_module)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load as st_load
from torch import nn

from morphserve.graph import SpecError, apply_edit, describe, from_module, from_spec, spec_json, weights_bytes

from .helpers import max_diff


class ResidualNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc_in = nn.Linear(12, 16)
        self.act = nn.ReLU()
        self.block = nn.Sequential(nn.Linear(16, 16), nn.GELU(), nn.Linear(16, 16))
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.fc_in(x))
        h = h + self.block(h)  # a residual add
        return self.head(self.norm(h))


def test_from_module_residual_same_outputs() -> None:
    m = ResidualNet().eval()
    x = torch.randn(5, 12)
    v = from_module(m, x, name="resid")
    assert v.model == "resid" and v.version == 1
    assert [(t.name, t.datatype, t.shape) for t in v.inputs] == [("x", "FP32", (-1, 12))]
    assert v.outputs[0].shape == (-1, 3)
    kinds = {n.id: (n.layer.type if n.layer is not None else n.function) for n in v.spec.nodes}
    assert "add" in kinds.values()
    assert {"Linear", "ReLU", "GELU", "LayerNorm"} <= set(kinds.values())
    add = next(n for n in v.spec.nodes if n.function == "add")
    assert len(add.inputs) == 2
    with torch.no_grad():
        expected = m(x)
    (got,) = v.run(x)
    assert torch.equal(got, expected)
    # a deep copy: the original module is not shared with the version
    assert all(mod is not m.fc_in for mod in v.modules.values())


def test_traced_model_is_editable_and_exportable() -> None:
    m = ResidualNet().eval()
    x = torch.randn(4, 12)
    v = from_module(m, x)
    relu = next(n.id for n in v.spec.nodes if n.layer is not None and n.layer.type == "ReLU")
    v2 = apply_edit(
        v,
        [
            {
                "op": "insert",
                "after": relu,
                "layer": {"type": "Linear", "in_features": 16, "out_features": 16},
                "init": "identity",
            }
        ],
        version=2,
    )
    assert max_diff(v.run(x), v2.run(x)) <= 1e-6
    w = from_spec(spec_json(v2), st_load(weights_bytes(v2)))
    assert torch.equal(w.run(x)[0], v2.run(x)[0])
    assert describe(w).totals.params == describe(v2).totals.params


def test_residual_block_traces_as_one_layer() -> None:
    from morphserve.graph.catalogue import parse_layer

    block = parse_layer({"type": "Residual", "body": [{"type": "Linear", "in_features": 8, "out_features": 8}]}).build()
    net = nn.Sequential(block, nn.Tanh())
    v = from_module(net, torch.randn(2, 8))
    assert [n.layer.type for n in v.spec.nodes] == ["Residual", "Tanh"]
    x = torch.randn(3, 8)
    with torch.no_grad():
        assert torch.equal(v.run(x)[0], net.eval()(x))


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 6)
        self.b = nn.Linear(5, 6)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.a(x) + self.b(y)
        return s, torch.cat([s, s], dim=1)


def test_two_inputs_two_outputs() -> None:
    m = TwoInputs().eval()
    x, y = torch.randn(3, 4), torch.randn(3, 5)
    v = from_module(m, (x, y))
    assert [t.name for t in v.inputs] == ["x", "y"]
    assert [(o.name, o.shape) for o in v.outputs] == [("output_0", (-1, 6)), ("output_1", (-1, 12))]
    with torch.no_grad():
        e = m(x, y)
    got = v.run(x, y)
    assert all(torch.equal(a, b) for a, b in zip(got, e, strict=True))


def test_shared_layer_called_twice_can_be_exported() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 8)
            self.act = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.act(self.fc(x)))

    m = Twice().eval()
    x = torch.randn(3, 8)
    v = from_module(m, x)
    assert len([n for n in v.spec.nodes if n.layer is not None and n.layer.type == "Linear"]) == 2
    w = from_spec(spec_json(v), st_load(weights_bytes(v)))  # safetensors refuses shared storage unless copied
    assert torch.equal(w.run(x)[0], v.run(x)[0])
    with torch.no_grad():
        assert torch.equal(v.run(x)[0], m(x))


class Custom(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


class UsesCustom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c = Custom()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(x)


class UsesSoftplus(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.f = nn.Hardshrink()  # not in the catalogue: traced into F.hardshrink

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(x)


class UsesExp(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(x)


class DataDependent(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x
        return -x


@pytest.mark.parametrize(
    ("module", "needle"),
    [
        (UsesCustom(), "constant arguments to mul are not supported"),  # x * 2
        (UsesSoftplus(), "hardshrink of type object"),
        (UsesExp(), "not an allowed function"),
        (DataDependent(), "torch.fx cannot trace"),
    ],
)
def test_untraceable_or_unsupported_modules_are_spec_errors(module: nn.Module, needle: str) -> None:
    with pytest.raises(SpecError) as ei:
        from_module(module, torch.randn(2, 4))
    assert needle in ei.value.message, ei.value.message

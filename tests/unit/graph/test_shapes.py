"""Shape rules (the fast path of shape propagation, `Layer.output_shape`) agree with fake-tensor evaluation wherever
they answer, and step aside wherever torch would refuse the input, so the fake-tensor run reports the error.

Every catalogue layer's module is checked (one built from each example of test_catalogue, and the default module of
each shape-keeping layer), so a rule added to a layer class is checked here without being listed."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from morphserve.graph.catalogue import LAYER_CLASSES, parse_layer
from morphserve.graph.dtypes import TORCH_TO_OIP
from morphserve.graph.layer_base import Layer
from morphserve.graph.shapes import NodeShape, _by_rule

from .test_catalogue import EXAMPLES

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
PROBES = (((2, 8), (3, 8)), ((2, 5, 8), (3, 5, 8)), ((8,), (8,)), ((2, 7), (3, 7)), ((2, 32, 8), (3, 40, 8)))


def _input(probe: tuple[tuple[int, ...], tuple[int, ...]], dtype: torch.dtype) -> NodeShape:
    a, b = probe
    return NodeShape(tuple(x if x == y else -1 for x, y in zip(a, b, strict=True)), TORCH_TO_OIP[dtype], probe, ())


def _faked(module: nn.Module, ins: NodeShape) -> tuple[Any, Any] | None:
    """Both probes' (shape, dtype) as torch computes them on fake tensors; None where torch refuses."""
    out = []
    try:
        with FakeTensorMode(allow_non_fake_inputs=True), torch.no_grad():
            for p in ins.probe:
                y = module(torch.empty(p, dtype=torch.float32).to(TORCH_TO_OIP_INV[ins.datatype]))
                out.append((tuple(y.shape), y.dtype))
    except Exception:  # noqa: BLE001 - any refusal
        return None
    return out[0], out[1]


TORCH_TO_OIP_INV = {v: k for k, v in TORCH_TO_OIP.items()}


def _linears() -> list[nn.Module]:
    mods: list[nn.Module] = []
    for dtype, bias in itertools.product(DTYPES, (True, False)):
        mods.append(nn.Linear(8, 4, bias=bias).to(dtype))
    odd = nn.Linear(8, 4)
    odd.bias = nn.Parameter(odd.bias.detach().half())  # a bias of another dtype: torch refuses
    return [*mods, odd, nn.Linear(7, 3)]


def _has_rule(cls: type[Layer]) -> bool:
    return cls.keeps_shape or any("output_shape" in vars(k) for k in cls.__mro__[: cls.__mro__.index(Layer)])


RULED = [cls for cls in LAYER_CLASSES.values() if _has_rule(cls)]
MODULES = [
    *_linears(),
    *(m() for cls in RULED if cls.keeps_shape for m in cls.modules),
    *(parse_layer({"type": name, **args}).build() for name, (args, _) in EXAMPLES.items()),
]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: repr(m)[:40])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("probe", PROBES, ids=str)
def test_rule_agrees_with_fake_tensors(module: nn.Module, dtype: torch.dtype, probe: Any) -> None:
    ins = _input(probe, dtype)
    ruled, faked = _by_rule(module, [ins]), _faked(module, ins)
    if ruled is not None:
        assert ruled == faked  # a rule never answers what torch would refuse, and answers what torch computes
    # where the rule steps aside, the fake-tensor run decides (and names the error)


def test_every_rule_is_exercised() -> None:
    """Each layer with a shape rule answers for some module and input above (so its check is not vacuous), and the
    layers edits insert most have one."""
    answered = {
        type(m)
        for m, dtype, probe in itertools.product(MODULES, DTYPES, PROBES)
        if _by_rule(m, [_input(probe, dtype)]) is not None
    }
    for cls in RULED:
        assert answered & set(cls.modules), cls.__name__
    assert {"Linear", "ReLU", "GELU", "Dropout", "Identity"} <= {cls.__name__ for cls in RULED}


def test_rules_answer_the_common_cases() -> None:
    """The fast path is taken for the inserts that matter (otherwise the tests above pass vacuously)."""
    x = _input(((2, 8), (3, 8)), torch.float32)
    assert _by_rule(nn.Linear(8, 4), [x]) == (((2, 4), torch.float32), ((3, 4), torch.float32))
    assert _by_rule(nn.ReLU(), [x]) == (((2, 8), torch.float32), ((3, 8), torch.float32))
    assert _by_rule(nn.Linear(7, 4), [x]) is None  # does not fit: the fake-tensor run reports it
    assert _by_rule(nn.Linear(8, 4).half(), [x]) is None  # dtypes differ: torch refuses


def test_no_rule_for_subclasses_or_other_layers() -> None:
    class Doubling(nn.ReLU):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([x, x], dim=-1)

    x = _input(((2, 8), (3, 8)), torch.float32)
    assert _by_rule(Doubling(), [x]) is None
    assert _by_rule(nn.LayerNorm(8), [x]) is None
    assert _by_rule(None, [x]) is None
    assert _by_rule(nn.ReLU(), [x, x]) is None

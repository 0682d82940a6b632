"""Model specs: validation and lint, fx graph building, shape propagation, and the zoo (digits really classifies)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from sklearn.datasets import load_digits

from morphserve.graph import SpecError, from_spec, load_zoo, parse_spec
from morphserve.graph.shapes import propagate
from morphserve.graph.spec import build_graph_module
from morphserve.graph.zoo import zoo_spec

from .helpers import MODELS, base, example, run

SIMPLE: dict[str, Any] = {
    "name": "simple",
    "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 8]}],
    "outputs": [{"name": "output", "node": "out"}],
    "nodes": [
        {"id": "a", "layer": {"type": "Linear", "in_features": 8, "out_features": 8}, "inputs": ["input"]},
        {"id": "b", "function": "add", "inputs": ["a", "input"]},
        {"id": "c", "function": "cat", "args": {"dim": 1}, "inputs": ["b", "a"]},
        {"id": "out", "layer": {"type": "Linear", "in_features": 16, "out_features": 2}, "inputs": ["c"]},
    ],
}


def _spec(**changes: Any) -> dict[str, Any]:
    s = copy.deepcopy(SIMPLE)
    s.update(changes)
    return s


def test_simple_spec_builds_and_runs() -> None:
    v = from_spec(SIMPLE)
    assert v.shapes["c"].shape == (-1, 16) and v.outputs[0].shape == (-1, 2) and v.outputs[0].datatype == "FP32"
    x = torch.randn(4, 8)
    with torch.no_grad():
        a = v.modules["a"](x)
        expected = v.modules["out"](torch.cat([a + x, a], dim=1))
    assert torch.equal(v.run(x)[0], expected)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (
            _spec(nodes=[*SIMPLE["nodes"], {"id": "a", "function": "relu", "inputs": ["out"]}]),
            "node id 'a' is used twice",
        ),
        (_spec(nodes=[SIMPLE["nodes"][1], *SIMPLE["nodes"]]), "node 'b' reads 'a', which is not defined before it"),
        (_spec(outputs=[{"name": "output", "node": "zzz"}]), "comes from 'zzz', which does not exist"),
        (_spec(outputs=[{"name": "a", "node": "out"}]), "output name 'a' is also a node or input id"),
        (_spec(outputs=[{"name": "o", "node": "out"}, {"name": "o", "node": "a"}]), "output name 'o' is used twice"),
        (_spec(inputs=[{"name": "input", "shape": [4, 8]}]), "dimension 0 is the batch dimension"),
        (_spec(inputs=[{"name": "input", "shape": [-1, 0]}]), "dimensions must be positive"),
        (_spec(inputs=[{"name": "input", "datatype": "FP128", "shape": [-1, 8]}]), "spec.inputs.0.datatype"),
        (_spec(nodes=[{"id": "a", "function": "exec", "inputs": ["input"]}]), "unknown function 'exec'"),
        (_spec(nodes=[{"id": "a", "function": "add", "inputs": ["input"]}]), "with one input 'other' is required"),
        (
            _spec(nodes=[{"id": "a", "function": "cat", "args": {"axis": 1}, "inputs": ["input"]}]),
            "axis: Extra inputs are not permitted",
        ),
        (
            _spec(nodes=[{"id": "a", "function": "cat", "args": {"dim": "1"}, "inputs": ["input"]}]),
            "dim: Input should be a valid integer",
        ),
        (
            _spec(nodes=[{"id": "a", "layer": {"type": "ReLU"}, "function": "relu", "inputs": ["input"]}]),
            "exactly one of 'layer', 'function' or 'parameter'",
        ),
        (
            _spec(nodes=[{"id": "a", "layer": {"type": "ReLU"}, "inputs": ["input", "input"]}]),
            "a ReLU layer reads 1 input(s), got 2",
        ),
        (_spec(nodes=[{"id": "forward", "layer": {"type": "ReLU"}, "inputs": ["input"]}]), "reserved name"),
        (_spec(nodes=[{"id": "_modules", "layer": {"type": "ReLU"}, "inputs": ["input"]}]), "reserved name"),
        (_spec(nodes=[{"id": "_parameters", "layer": {"type": "ReLU"}, "inputs": ["input"]}]), "reserved name"),
        (_spec(nodes=[{"id": "meta", "layer": {"type": "ReLU"}, "inputs": ["input"]}]), "reserved name"),
        (_spec(nodes=[{"id": "a.b", "layer": {"type": "ReLU"}, "inputs": ["input"]}]), "must be a Python identifier"),
        (_spec(nodes=[{"id": "a", "layer": {"type": "Rm"}, "inputs": ["input"]}]), "spec.nodes.0.layer"),
        (_spec(extra=1), "spec.extra"),
    ],
)
def test_bad_specs_are_spec_errors(data: dict[str, Any], needle: str) -> None:
    with pytest.raises(SpecError) as ei:
        from_spec(data)
    assert needle in ei.value.message, ei.value.message


def test_shape_errors_name_node_and_shapes() -> None:
    bad = _spec(
        nodes=[{"id": "a", "layer": {"type": "Linear", "in_features": 5, "out_features": 8}, "inputs": ["input"]}],
        outputs=[{"name": "output", "node": "a"}],
    )
    with pytest.raises(SpecError) as ei:
        from_spec(bad)
    expected = "'a' (Linear(in_features=5, out_features=8, bias=True)) does not fit its input: 'input' produces [-1, 8]"
    assert expected in ei.value.message
    assert ei.value.fields["node"] == "a"


def test_reserved_instance_attribute_ids_would_break_the_graph_module() -> None:
    # Regression: ids like '_modules' or 'meta' passed validation and produced versions whose fx GraphModule
    # could not be built. Every id that validates must build and run.
    for nid in ("training_", "mod", "data", "weight", "torch", "getattr", "inf"):
        spec = _spec(
            nodes=[{"id": nid, "layer": {"type": "ReLU"}, "inputs": ["input"]}],
            outputs=[{"name": "output", "node": nid}],
        )
        v = from_spec(spec)
        x = torch.randn(2, 8)
        assert torch.equal(v.run(x)[0], torch.relu(x))


def test_shapes_mark_variable_dims() -> None:
    spec = parse_spec(
        {
            "name": "seq",
            "inputs": [{"name": "tokens", "datatype": "INT64", "shape": [-1, -1]}],
            "outputs": [{"name": "output", "node": "emb"}],
            "nodes": [
                {
                    "id": "emb",
                    "layer": {"type": "Embedding", "num_embeddings": 50, "embedding_dim": 6},
                    "inputs": ["tokens"],
                }
            ],
        }
    )
    v = from_spec(spec)
    assert v.shapes["emb"].shape == (-1, -1, 6) and v.shapes["emb"].datatype == "FP32"
    assert v.run(torch.randint(0, 50, (3, 7)))[0].shape == (3, 7, 6)


def test_propagate_reuses_previous_shapes() -> None:
    v = base("convnet")
    again = propagate(v.spec, v.modules, v.shapes)
    assert all(again[n.id] is v.shapes[n.id] for n in v.spec.nodes)  # no node re-evaluated
    fresh = propagate(v.spec, v.modules)
    assert {k: s.shape for k, s in fresh.items()} == {k: s.shape for k, s in v.shapes.items()}


def test_build_graph_module_shares_modules_and_returns_tuples() -> None:
    v = base("resnet")
    gm = build_graph_module(v.spec, v.modules)
    assert gm.get_submodule("stem") is v.modules["stem"]
    out = gm(torch.randn(2, 3, 32, 32))
    assert isinstance(out, tuple) and len(out) == 1 and out[0].shape == (2, 10)


# ------------------------------------------------------------------------------------------------------------ zoo


@pytest.mark.parametrize("model", MODELS)
def test_zoo_models_run_with_declared_signature(model: str) -> None:
    v = base(model)
    assert v.model == model and v.version == 1 and v.parent is None
    (out,) = run(v, example(v, batch=2))
    assert out.shape == (2, 10) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert v.outputs[0].name == "output" and v.outputs[0].shape == (-1, 10)
    # all modules are in eval mode without gradients
    assert all(not m.training for m in v.modules.values())
    assert all(not p.requires_grad for m in v.modules.values() for p in m.parameters())


def test_zoo_signatures() -> None:
    assert [(t.name, t.datatype, t.shape) for t in base("digits").inputs] == [("input", "FP32", (-1, 64))]
    assert base("mlp").inputs[0].shape == (-1, 784)
    assert base("convnet").inputs[0].shape == (-1, 3, 32, 32)
    assert base("resnet").inputs[0].shape == (-1, 3, 32, 32)
    assert base("mlp").total_params() == 784 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10
    convs = [n for n in base("convnet").spec.nodes if n.layer is not None and n.layer.type == "Conv2d"]
    assert len(convs) == 10 and all(n.layer.kernel_size == 3 and n.layer.padding == 1 for n in convs)
    assert [n.layer.out_channels for n in convs] == [16, 16, 32, 32, 64, 64, 64, 128, 128, 128]
    adds = [n for n in base("resnet").spec.nodes if n.function == "add"]
    assert len(adds) == 4


def test_zoo_is_deterministic_and_configurable() -> None:
    a, b = load_zoo("mlp"), load_zoo("mlp")
    x = example(a)
    assert torch.equal(run(a, x)[0], run(b, x)[0])
    chain = load_zoo("chain", depth=10, width=16)
    assert len([n for n in chain.spec.nodes if n.layer.type == "Linear"]) == 10
    assert zoo_spec("convnet", width=0.5).nodes[0].layer.out_channels == 32
    with pytest.raises(Exception, match="no zoo model"):
        load_zoo("nope")


def test_digits_classifies() -> None:
    x, y = load_digits(return_X_y=True)
    v = load_zoo("digits")
    (logits,) = v.run(torch.tensor(x / 16.0, dtype=torch.float32))
    acc = (logits.argmax(1) == torch.tensor(y)).float().mean().item()
    assert acc > 0.9, acc

"""Parameter nodes (tensors the model reads directly) and layers/functions whose result is a tuple."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load as st_load

from morphserve.graph import EditError, LiveModel, SpecError, describe, from_spec, spec_json, weights_bytes
from morphserve.graph.version import make_version

SCALED = {
    "name": "scaled",
    "inputs": [{"name": "x", "shape": [-1, 3]}],
    "outputs": [{"name": "out", "node": "mul"}],
    "nodes": [{"id": "gamma", "parameter": {"shape": [3]}}, {"id": "mul", "function": "mul", "inputs": ["x", "gamma"]}],
}


def test_parameter_node_value_is_keyed_node_dot_value_and_set_weights_replaces_it() -> None:
    v = from_spec(SCALED, {"gamma.value": torch.tensor([1.0, 2.0, 3.0])})
    x = torch.ones(2, 3)
    assert torch.equal(v.run(x)[0], torch.tensor([[1.0, 2.0, 3.0]] * 2))
    assert set(v.state_dict()) == {"gamma.value"}
    d = {n.id: n for n in describe(v).nodes}
    assert d["gamma"].kind == "parameter" and d["gamma"].parameter == {"shape": [3], "datatype": "FP32"}
    assert d["gamma"].shape == [3] and d["gamma"].params == 3
    lm = LiveModel(v)
    v2 = lm.propose([{"op": "set_weights", "node": "gamma", "tensors": {"value": {"shape": [3], "data": [0, 0, 1]}}}])
    assert torch.equal(v2.run(x)[0], torch.tensor([[0.0, 0.0, 1.0]] * 2))
    assert v.modules["gamma"] is not v2.modules["gamma"]  # the old version keeps its tensor
    back = from_spec(json.loads(json.dumps(spec_json(v2))), st_load(weights_bytes(v2)))
    assert torch.equal(back.run(x)[0], v2.run(x)[0])


def test_parameter_node_refusals() -> None:
    lm = LiveModel(from_spec(SCALED))
    with pytest.raises(EditError, match="is a parameter"):
        lm.propose([{"op": "replace", "node": "gamma", "layer": {"type": "ReLU"}}])
    with pytest.raises(EditError, match="has shape \\[3\\], got \\[4\\]"):
        lm.propose([{"op": "set_weights", "node": "gamma", "tensors": {"value": {"shape": [4], "data": [1] * 4}}}])
    bad = json.loads(json.dumps(SCALED))
    bad["nodes"][0]["inputs"] = ["x"]
    with pytest.raises(SpecError, match="'gamma': a parameter node has no inputs") as ei:
        from_spec(bad)
    assert ei.value.fields["node"] == "gamma"
    bad["nodes"][0] = {"id": "gamma", "parameter": {"shape": [1 << 20, 1 << 20]}}
    with pytest.raises(SpecError, match="at most"):
        from_spec(bad)
    with pytest.raises(SpecError, match="weights do not match the spec"):
        from_spec(SCALED, {"gamma.weight": torch.ones(3)})


LSTM = {
    "name": "tagger",
    "inputs": [{"name": "x", "shape": [-1, -1, 4]}],
    "outputs": [{"name": "seq", "node": "seq"}, {"name": "last", "node": "last"}],
    "nodes": [
        {
            "id": "rnn",
            "layer": {"type": "LSTM", "input_size": 4, "hidden_size": 6, "batch_first": True},
            "inputs": ["x"],
        },
        {"id": "seq", "function": "getitem", "inputs": ["rnn"], "args": {"index": 0}},
        {"id": "h", "function": "getitem", "inputs": ["rnn"], "args": {"index": 1}},
        {"id": "last", "function": "select", "inputs": ["h"], "args": {"dim": 0, "index": -1}},
    ],
}


def test_tuple_valued_layer_has_element_shapes_and_round_trips_through_recorded_shapes() -> None:
    v = from_spec(LSTM)
    s = v.shapes["rnn"]
    assert [(e.shape, e.datatype) for e in s.elements] == [
        ((-1, -1, 6), "FP32"),
        ((1, -1, 6), "FP32"),
        ((1, -1, 6), "FP32"),
    ]
    d = {n.id: n for n in describe(v).nodes}
    assert d["rnn"].shape == [-1, -1, 6] and [e.shape for e in d["rnn"].elements] == [
        [-1, -1, 6],
        [1, -1, 6],
        [1, -1, 6],
    ]
    assert d["seq"].elements is None
    recorded = json.loads(json.dumps(v.recorded_shapes()))  # the journal stores JSON
    assert "elements" in recorded["rnn"]
    again = make_version("tagger", 1, None, v.spec, v.modules, recorded_shapes=recorded)
    assert {k: (x.shape, x.elements) for k, x in again.shapes.items()} == {
        k: (x.shape, x.elements) for k, x in v.shapes.items()
    }
    x = torch.randn(2, 7, 4)
    seq, last = v.run(x)
    assert seq.shape == (2, 7, 6) and last.shape == (2, 6)


def test_edits_around_tuple_nodes_fail_cleanly() -> None:
    lm = LiveModel(from_spec(LSTM))
    with pytest.raises(EditError, match="'rnn' is a tuple of 3 tensors; read it through getitem"):
        lm.propose([{"op": "insert", "after": "rnn", "layer": {"type": "ReLU"}}])
    with pytest.raises(EditError, match="output 'seq' comes from 'rnn', a tuple of 3 tensors"):
        lm.propose([{"op": "remove", "node": "seq"}])
    v2 = lm.propose(
        [
            {
                "op": "replace",
                "node": "rnn",
                "layer": {
                    "type": "LSTM",
                    "input_size": 4,
                    "hidden_size": 6,
                    "batch_first": True,
                    "bidirectional": True,
                },
            }
        ],
        allow_output_change=True,
    )
    assert v2.shapes["seq"].shape == (-1, -1, 12)
    with pytest.raises(EditError, match="getitem reads 'rnn', which is not a tuple"):
        lm.propose([{"op": "replace", "node": "rnn", "layer": {"type": "Linear", "in_features": 4, "out_features": 6}}])
    assert lm.current.version == 1

"""describe() JSON, stable node ids, DOT text and diff()."""

from __future__ import annotations

import json

import pytest

from morphserve.graph import GraphDescription, apply_edit, describe, diff, to_dot

from .helpers import MODELS, base


def test_describe_digits_shape() -> None:
    v = base("digits")
    d = describe(v)
    assert isinstance(d, GraphDescription)
    j = json.loads(d.model_dump_json())
    assert (j["model"], j["version"], j["parent"]) == ("digits", 1, None)
    assert j["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
    assert j["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 10]}]
    by_id = {n["id"]: n for n in j["nodes"]}
    assert [n["id"] for n in j["nodes"]] == ["input", "fc1", "relu1", "fc2", "relu2", "fc3", "output"]
    assert by_id["input"]["kind"] == "input" and by_id["output"]["kind"] == "output"
    fc1 = by_id["fc1"]
    assert fc1["kind"] == "layer"
    assert fc1["layer"] == {"type": "Linear", "in_features": 64, "out_features": 128, "bias": True}
    assert fc1["inputs"] == ["input"] and fc1["shape"] == [-1, 128] and fc1["datatype"] == "FP32"
    assert fc1["params"] == 64 * 128 + 128
    assert by_id["relu1"]["params"] == 0 and by_id["relu1"]["layer"] == {"type": "ReLU"}
    assert by_id["output"]["inputs"] == ["fc3"] and by_id["output"]["shape"] == [-1, 10]
    assert j["totals"] == {"nodes": 7, "params": 8320 + 8256 + 650}
    edges = [(e["source"], e["target"]) for e in j["edges"]]
    assert edges == [
        ("input", "fc1"),
        ("fc1", "relu1"),
        ("relu1", "fc2"),
        ("fc2", "relu2"),
        ("relu2", "fc3"),
        ("fc3", "output"),
    ]


def test_describe_function_nodes_and_dag_edges() -> None:
    v = base("resnet")
    d = describe(v)
    add = next(n for n in d.nodes if n.id == "s1b1_add")
    assert add.kind == "function" and add.function == "add" and add.layer is None
    assert add.inputs == ["s1b1_bn2", "stem_relu"] and add.shape == [-1, 16, 32, 32]
    assert {(e.source, e.target) for e in d.edges} >= {("s1b1_bn2", "s1b1_add"), ("stem_relu", "s1b1_add")}
    assert len(d.edges) == sum(len(n.inputs) for n in d.nodes)
    assert d.totals.params == v.total_params() == sum(n.params for n in d.nodes)


@pytest.mark.parametrize("model", MODELS)
def test_describe_every_model(model: str) -> None:
    v = base(model)
    d = describe(v)
    assert d.totals.nodes == len(d.nodes) == len(v.spec.nodes) + len(v.inputs) + len(v.outputs)
    for n in d.nodes:
        assert n.shape[0] == -1 and all(s == -1 or s > 0 for s in n.shape)
    assert all(s > 0 for n in d.nodes for s in n.shape[1:])  # only the batch dim is variable in the zoo
    assert "nodes" in GraphDescription.model_json_schema()["properties"]


@pytest.mark.parametrize("model", MODELS)
def test_node_ids_are_stable_across_edits(model: str) -> None:
    v1 = base(model)
    layer_nodes = [n.id for n in v1.spec.nodes if n.layer is not None and n.layer.type == "ReLU"]
    v2 = apply_edit(
        v1,
        [
            {"op": "insert", "after": layer_nodes[0], "layer": {"type": "Identity"}},
            {"op": "remove", "node": layer_nodes[-1]},
        ],
        version=2,
    )
    ids1 = [n.id for n in describe(v1).nodes]
    ids2 = [n.id for n in describe(v2).nodes]
    assert [i for i in ids2 if i in ids1] == [i for i in ids1 if i != layer_nodes[-1]]
    assert set(ids2) - set(ids1) == {"identity_1"}
    d2 = {n.id: n for n in describe(v2).nodes}
    for n in describe(v1).nodes:
        if n.id in d2 and n.kind == "layer":
            assert d2[n.id].layer == n.layer and d2[n.id].params == n.params


def test_describe_records_parent_and_ops() -> None:
    v1 = base("digits")
    v2 = apply_edit(v1, [{"op": "remove", "node": "relu1"}], version=2)
    d = describe(v2)
    assert (d.version, d.parent, d.ops) == (2, 1, [{"op": "remove", "node": "relu1"}])
    assert d.totals.nodes == 6


def test_dot_contains_ids_layer_labels_and_shapes() -> None:
    v = base("digits")
    dot = to_dot(v)
    assert dot.lstrip().startswith("digraph")
    for nid in ("input", "fc1", "relu1", "fc2", "relu2", "fc3", "output"):
        assert nid in dot
    assert "Linear(in_features=64, out_features=128, bias=True)" in dot
    assert "ReLU()" in dot
    assert "[-1, 128]" in dot and "[-1, 10]" in dot and "[-1, 64]" in dot
    assert "8,320 params" in dot
    assert "fc1 -> relu1" in dot and "fc3 -> output" in dot


def test_dot_resnet_functions_and_highlight() -> None:
    v = base("resnet")
    dot = to_dot(v, highlight={"s1b1_add"})
    assert "add()" in dot and "[-1, 16, 32, 32]" in dot
    assert "stem_relu -> s1b1_add" in dot
    assert "#d62728" in dot  # the highlighted node


# ----------------------------------------------------------------------------------------------------------- diff


def test_diff_added_removed_changed() -> None:
    v1 = base("digits")
    v2 = apply_edit(
        v1,
        [
            {
                "op": "insert",
                "after": "relu1",
                "name": "extra",
                "layer": {"type": "Linear", "in_features": 128, "out_features": 128},
            },
            {"op": "remove", "node": "relu2"},
            {
                "op": "replace",
                "node": "fc1",
                "layer": {"type": "Linear", "in_features": 64, "out_features": 128, "bias": False},
            },
            {"op": "set_weights", "node": "fc3", "tensors": {"bias": {"shape": [10], "data": [0.0] * 10}}},
        ],
        version=2,
    )
    d = diff(v1, v2)
    assert (d.model, d.from_version, d.to_version) == ("digits", 1, 2)
    assert d.added == ["extra"]
    assert d.removed == ["relu2"]
    changes = {c.id: c.changes for c in d.changed}
    assert changes == {"fc1": ["layer"], "fc2": ["inputs"], "fc3": ["inputs", "weights"]}
    fc2 = next(c for c in d.changed if c.id == "fc2")
    assert fc2.before["inputs"] == ["relu1"] and fc2.after["inputs"] == ["extra"]
    assert [c.id for c in d.changed] == ["fc1", "fc2", "fc3"]  # in graph order
    assert d.outputs_changed is False
    # the reverse diff swaps added and removed
    r = diff(v2, v1)
    assert r.added == ["relu2"] and r.removed == ["extra"]


def test_diff_shape_change_and_outputs_changed() -> None:
    v1 = base("digits")
    v2 = apply_edit(
        v1,
        [
            {"op": "replace", "node": "fc2", "layer": {"type": "Linear", "in_features": 128, "out_features": 32}},
            {"op": "replace", "node": "fc3", "layer": {"type": "Linear", "in_features": 32, "out_features": 5}},
        ],
        version=2,
        allow_output_change=True,
    )
    d = diff(v1, v2)
    changes = {c.id: c.changes for c in d.changed}
    assert changes == {"fc2": ["layer", "shape"], "relu2": ["shape"], "fc3": ["layer", "shape"]}
    relu2 = next(c for c in d.changed if c.id == "relu2")
    assert relu2.before["shape"] == [-1, 64] and relu2.after["shape"] == [-1, 32]
    assert d.outputs_changed is True and d.added == [] and d.removed == []


def test_diff_of_identical_versions_is_empty() -> None:
    v = base("convnet")
    d = diff(v, v)
    assert (d.added, d.removed, d.changed, d.outputs_changed) == ([], [], [], False)

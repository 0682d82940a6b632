"""Every op on every zoo model, multi-op atomicity, and every rejection path (the previous version untouched)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from morphserve.graph import EditError, InsertOp, LiveModel, SetWeightsOp, apply_edit, parse_ops
from morphserve.graph.live import ConflictError

from .helpers import ANCHORS, MODELS, Snapshot, base, example, live, max_diff, run, shape, square_layer, users


def _assert_shares_unchanged(old, new, changed: set[str]) -> None:
    for k, m in old.modules.items():
        if k in changed:
            continue
        assert new.modules[k] is m, f"unchanged module {k} was copied"


# ---------------------------------------------------------------------------------------------------------- insert


def test_insert_after_every_model(model_name: str) -> None:
    lm = live(model_name)
    v1 = lm.current
    a = ANCHORS[model_name]["after"]
    old_users = users(v1, a)
    assert old_users, "anchor must feed something"
    s = shape(v1, a)
    v2 = lm.propose([{"op": "insert", "after": a, "name": "new", "layer": square_layer(s)}])
    assert (v2.version, v2.parent, v2.model) == (2, 1, model_name)
    ids = [n.id for n in v2.spec.nodes]
    assert ids.index("new") == ids.index(a) + 1
    assert v2.spec.node("new").inputs == (a,)
    assert users(v2, a) == ["new"]
    for u in old_users:
        assert "new" in v2.spec.node(u).inputs and a not in v2.spec.node(u).inputs
    assert shape(v2, "new") == s
    assert v2.outputs == v1.outputs
    _assert_shares_unchanged(v1, v2, set())
    assert "new" in v2.modules and "new" not in v1.modules
    x = example(v1)
    out1, out2 = run(v1, x), run(v2, x)
    assert out2[0].shape == out1[0].shape
    assert max_diff(out1, out2) > 1e-6  # a default-initialised layer really changes the function
    assert v2.ops[0] == {
        "op": "insert",
        "after": a,
        "name": "new",
        "layer": {**v2.spec.node("new").layer.to_json()},
        "init": "default",
        "seed": 0,
    }
    # proposing is pure: nothing is committed until commit()
    assert lm.current is v1
    lm.commit(v2)
    assert lm.current is v2 and lm.get(1) is v1


def test_insert_before_every_model(model_name: str) -> None:
    lm = live(model_name)
    v1 = lm.current
    b = ANCHORS[model_name]["before"]
    (src,) = v1.spec.node(b).inputs
    other_users = [u for u in users(v1, src) if u != b]
    layer = square_layer(shape(v1, src))
    v2 = lm.propose([{"op": "insert", "before": b, "name": "pre", "layer": layer}])
    ids = [n.id for n in v2.spec.nodes]
    assert ids.index("pre") == ids.index(b) - 1
    assert v2.spec.node("pre").inputs == (src,)
    assert v2.spec.node(b).inputs == ("pre",)
    for u in other_users:
        assert v2.spec.node(u).inputs == v1.spec.node(u).inputs
    _assert_shares_unchanged(v1, v2, set())
    x = example(v1)
    assert max_diff(run(v1, x), run(v2, x)) > 1e-6


def test_insert_before_keeps_other_readers_of_the_source() -> None:
    # resnet: stem_relu feeds both s1b1_conv1 and the skip input of s1b1_add
    v1 = base("resnet")
    assert set(users(v1, "stem_relu")) == {"s1b1_conv1", "s1b1_add"}
    v2 = apply_edit(
        v1, [{"op": "insert", "before": "s1b1_conv1", "name": "pre", "layer": {"type": "Identity"}}], version=2
    )
    assert set(users(v2, "stem_relu")) == {"pre", "s1b1_add"}
    assert v2.spec.node("s1b1_conv1").inputs == ("pre",)
    x = example(v1)
    assert max_diff(run(v1, x), run(v2, x)) == 0.0


def test_insert_after_a_multi_reader_node_feeds_all_readers() -> None:
    v1 = base("resnet")
    v2 = apply_edit(
        v1, [{"op": "insert", "after": "stem_relu", "name": "mid", "layer": {"type": "Identity"}}], version=2
    )
    assert users(v2, "stem_relu") == ["mid"]
    assert set(users(v2, "mid")) == {"s1b1_conv1", "s1b1_add"}


def test_insert_after_input_and_after_output_node(model_name: str) -> None:
    v1 = base(model_name)
    first = v1.spec.nodes[0].id
    v2 = apply_edit(v1, [{"op": "insert", "after": "input", "name": "pre", "layer": {"type": "Identity"}}], version=2)
    assert v2.spec.nodes[0].id == "pre" and v2.spec.node(first).inputs == ("pre",)
    out_node = v1.outputs[0].node
    v3 = apply_edit(v2, [{"op": "insert", "after": out_node, "name": "post", "layer": {"type": "Identity"}}], version=3)
    assert v3.outputs[0].node == "post" and v3.spec.nodes[-1].id == "post"
    x = example(v1)
    assert max_diff(run(v1, x), run(v3, x)) == 0.0


def test_insert_generates_fresh_names_and_is_seeded() -> None:
    v1 = base("digits")
    layer = {"type": "Linear", "in_features": 128, "out_features": 128}
    v2 = apply_edit(
        v1,
        [
            {"op": "insert", "after": "relu1", "layer": layer},
            {"op": "insert", "after": "relu1", "layer": layer, "seed": 7},
        ],
        version=2,
    )
    assert {"linear_1", "linear_2"} <= {n.id for n in v2.spec.nodes}
    again = apply_edit(v1, [{"op": "insert", "after": "relu1", "layer": layer}], version=2)
    assert torch.equal(again.modules["linear_1"].weight, v2.modules["linear_1"].weight)
    assert not torch.equal(v2.modules["linear_1"].weight, v2.modules["linear_2"].weight)


def test_insert_accepts_parsed_ops() -> None:
    v1 = base("digits")
    op = InsertOp(after="relu2", name="extra", layer={"type": "Dropout", "p": 0.3})
    v2 = apply_edit(v1, [op], version=2)
    assert v2.spec.node("extra").layer.to_json() == {"type": "Dropout", "p": 0.3}


# ---------------------------------------------------------------------------------------------------------- remove


def test_remove_every_model(model_name: str) -> None:
    lm = live(model_name)
    v1 = lm.current
    r = ANCHORS[model_name]["remove"]
    (src,) = v1.spec.node(r).inputs
    readers = users(v1, r)
    v2 = lm.propose([{"op": "remove", "node": r}])
    assert v2.spec.node(r) is None and r not in v2.modules
    for u in readers:
        assert src in v2.spec.node(u).inputs and r not in v2.spec.node(u).inputs
    assert len(v2.spec.nodes) == len(v1.spec.nodes) - 1
    _assert_shares_unchanged(v1, v2, {r})
    x = example(v1)
    out1, out2 = run(v1, x), run(v2, x)
    assert out2[0].shape == out1[0].shape
    assert max_diff(out1, out2) > 1e-6  # dropping a ReLU changes the function
    lm.commit(v2)
    assert lm.current.version == 2


def test_remove_identity_layer_restores_outputs() -> None:
    v1 = base("convnet")
    v2 = apply_edit(v1, [{"op": "insert", "after": "pool1", "name": "extra", "layer": {"type": "Dropout"}}], version=2)
    v3 = apply_edit(v2, [{"op": "remove", "node": "extra"}], version=3)
    assert [n.id for n in v3.spec.nodes] == [n.id for n in v1.spec.nodes]
    x = example(v1)
    assert torch.equal(run(v1, x)[0], run(v3, x)[0])


def test_remove_output_node_needs_allow_output_change() -> None:
    lm = live("digits")
    snap = Snapshot.take(lm)
    with pytest.raises(EditError) as ei:
        lm.propose([{"op": "remove", "node": "fc3"}])
    assert "changes output 'output' from FP32 [-1, 10] to FP32 [-1, 64]" in ei.value.message
    assert "allow_output_change" in ei.value.message
    snap.check()
    v2 = lm.propose([{"op": "remove", "node": "fc3"}], allow_output_change=True)
    assert v2.outputs[0].node == "relu2" and v2.outputs[0].shape == (-1, 64)
    assert run(v2, snap.x)[0].shape == (3, 64)


# --------------------------------------------------------------------------------------------------------- replace


def test_replace_keep_weights_every_model(model_name: str) -> None:
    lm = live(model_name)
    v1 = lm.current
    node, layer = ANCHORS[model_name]["replace"], ANCHORS[model_name]["replacement"]
    v2 = lm.propose([{"op": "replace", "node": node, "layer": layer, "keep_weights": True}])
    new, old = v2.modules[node], v1.modules[node]
    assert new is not old
    assert v2.spec.node(node).layer.to_json() == {**v2.spec.node(node).layer.to_json(), **layer}
    for k, t in old.state_dict().items():
        assert torch.equal(new.state_dict()[k], t)
        assert new.state_dict()[k].data_ptr() != t.data_ptr()  # copied, so later edits cannot alias
    _assert_shares_unchanged(v1, v2, {node})
    x = example(v1)
    assert max_diff(run(v1, x), run(v2, x)) <= 1e-6


def test_replace_fresh_weights_every_model(model_name: str) -> None:
    lm = live(model_name)
    v1 = lm.current
    node, layer = ANCHORS[model_name]["replace"], ANCHORS[model_name]["replacement"]
    v2 = lm.propose([{"op": "replace", "node": node, "layer": layer, "seed": 3}])
    assert not torch.equal(v2.modules[node].weight, v1.modules[node].weight)
    x = example(v1)
    assert max_diff(run(v1, x), run(v2, x)) > 1e-6
    # and an activation by another activation
    r = ANCHORS[model_name]["remove"]
    v3 = lm.propose([{"op": "replace", "node": r, "layer": {"type": "GELU"}}])
    assert type(v3.modules[r]).__name__ == "GELU"
    assert v3.spec.node(r).layer.type == "GELU"
    assert max_diff(run(v1, x), run(v3, x)) > 1e-6


def test_replace_with_shape_change_and_allow_output_change() -> None:
    lm = live("digits")
    layer = {"type": "Linear", "in_features": 64, "out_features": 5}
    v2 = lm.propose([{"op": "replace", "node": "fc3", "layer": layer}], allow_output_change=True)
    assert v2.outputs[0].shape == (-1, 5)
    assert run(v2, example(v2))[0].shape == (3, 5)


# ----------------------------------------------------------------------------------------------------- set_weights


def test_set_weights_every_model(model_name: str) -> None:
    lm = live(model_name)
    v1 = lm.current
    node = ANCHORS[model_name]["weights"]
    old_bias = v1.modules[node].bias.detach().clone()
    new_bias = [float(i) / 4 for i in range(old_bias.numel())]
    v2 = lm.propose(
        [{"op": "set_weights", "node": node, "tensors": {"bias": {"shape": list(old_bias.shape), "data": new_bias}}}]
    )
    assert v2.modules[node] is not v1.modules[node]
    assert torch.equal(v1.modules[node].bias, old_bias)  # the old version keeps its weights
    assert torch.equal(v2.modules[node].bias, torch.tensor(new_bias))
    assert torch.equal(v2.modules[node].weight, v1.modules[node].weight)
    _assert_shares_unchanged(v1, v2, {node})
    x = example(v1)
    out1, out2 = run(v1, x)[0], run(v2, x)[0]
    torch.testing.assert_close(out2 - out1, (torch.tensor(new_bias) - old_bias).expand_as(out1), atol=1e-5, rtol=0)
    assert v2.ops == (
        {"op": "set_weights", "node": node, "tensors": {"bias": {"shape": list(old_bias.shape), "datatype": None}}},
    )


def test_set_weights_nested_data_and_buffers() -> None:
    v1 = base("digits")
    w = torch.arange(640, dtype=torch.float32).reshape(10, 64) / 640
    v2 = apply_edit(
        v1,
        [
            {
                "op": "set_weights",
                "node": "fc3",
                "tensors": {"weight": {"shape": [10, 64], "data": w.tolist(), "datatype": "FP32"}},
            }
        ],
        version=2,
    )
    assert torch.equal(v2.modules["fc3"].weight, w)
    r = base("resnet")
    mean = torch.full((16,), 0.5)
    r2 = apply_edit(
        r,
        [{"op": "set_weights", "node": "stem_bn", "tensors": {"running_mean": {"shape": [16], "data": mean.tolist()}}}],
        version=2,
    )
    assert torch.equal(r2.modules["stem_bn"].running_mean, mean)
    assert not torch.equal(r.modules["stem_bn"].running_mean, mean)


def test_set_weights_from_decoded_tensors() -> None:
    v1 = base("mlp")
    bias = torch.linspace(-1, 1, 10)
    v2 = apply_edit(v1, [SetWeightsOp.from_tensors("fc3", {"bias": bias})], version=2)
    assert torch.equal(v2.modules["fc3"].bias, bias)
    assert v2.ops[0]["tensors"] == {"bias": {"shape": [10], "datatype": "FP32"}}


# -------------------------------------------------------------------------------------------------------- multi-op


def test_multi_op_edit_is_one_version(model_name: str) -> None:
    lm = live(model_name)
    v1 = lm.current
    a = ANCHORS[model_name]
    ops: list[dict[str, Any]] = [
        {
            "op": "insert",
            "after": a["after"],
            "name": "extra",
            "layer": square_layer(shape(v1, a["after"])),
            "init": "identity",
        },
        {
            "op": "set_weights",
            "node": "extra",
            "tensors": {"bias": {"shape": [shape(v1, a["after"])[1]], "data": [0.0] * shape(v1, a["after"])[1]}},
        },
        {"op": "replace", "node": a["replace"], "layer": a["replacement"], "keep_weights": True},
        {"op": "remove", "node": "extra"},
        {"op": "insert", "after": a["after"], "name": "extra2", "layer": {"type": "Identity"}},
    ]
    v2 = lm.propose(ops)
    assert v2.version == 2 and len(v2.ops) == 5
    assert v2.spec.node("extra") is None and v2.spec.node("extra2") is not None
    lm.commit(v2)
    assert [v.version for v in lm.versions()] == [1, 2]
    x = example(v1)
    assert max_diff(run(v1, x), run(v2, x)) <= 1e-6


# ------------------------------------------------------------------------------------------------------ rejections


def _reject(lm: LiveModel, ops: Any, *, allow_output_change: bool = False) -> EditError:
    snap = Snapshot.take(lm)
    with pytest.raises(EditError) as ei:
        lm.propose(ops, allow_output_change=allow_output_change)
    snap.check()
    # nothing was consumed either: the next good edit is still version latest+1
    nxt = lm.propose([{"op": "insert", "after": lm.current.spec.nodes[0].id, "layer": {"type": "Identity"}}])
    assert nxt.version == lm.current.version + 1
    return ei.value


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize(
    "op",
    [
        {"op": "insert", "after": "nope", "layer": {"type": "Identity"}},
        {"op": "insert", "before": "nope", "layer": {"type": "Identity"}},
        {"op": "remove", "node": "nope"},
        {"op": "replace", "node": "nope", "layer": {"type": "Identity"}},
        {"op": "set_weights", "node": "nope", "tensors": {"bias": {"shape": [1], "data": [0.0]}}},
    ],
    ids=["insert_after", "insert_before", "remove", "replace", "set_weights"],
)
def test_reject_unknown_node(model: str, op: dict[str, Any]) -> None:
    e = _reject(live(model), [op])
    assert e.message.startswith("op 0: ")
    assert "node 'nope' does not exist" in e.message
    assert e.fields["op"] == 0 and e.fields["node"] == "nope"


def test_reject_unknown_node_in_later_op_is_atomic() -> None:
    lm = live("digits")
    e = _reject(
        lm,
        [
            {"op": "insert", "after": "relu1", "name": "ok", "layer": {"type": "Identity"}},
            {"op": "remove", "node": "relu9"},
        ],
    )
    assert e.message.startswith("op 1: remove 'relu9'") and e.fields["op"] == 1
    assert lm.current.spec.node("ok") is None


def test_reject_shape_mismatch_names_op_node_and_shapes() -> None:
    e = _reject(
        live("digits"),
        [{"op": "insert", "after": "fc1", "layer": {"type": "Linear", "in_features": 64, "out_features": 64}}],
    )
    assert e.message.startswith(
        "op 0: insert Linear(in_features=64, out_features=64, bias=True) after 'fc1': "
        "'linear_1' (Linear(in_features=64, out_features=64, bias=True)) does not fit its input: "
        "'fc1' produces [-1, 128]"
    ), e.message
    assert e.fields["op"] == 0 and e.fields["node"] == "linear_1" and e.fields["got"] == [[-1, 128]]


@pytest.mark.parametrize("model", MODELS)
def test_reject_shape_mismatch_downstream(model: str) -> None:
    a = ANCHORS[model]
    lm = live(model)
    e = _reject(lm, [{"op": "replace", "node": a["replace"], "layer": a["wider"]}])
    assert e.message.startswith(f"op 0: replace {a['replace']!r} with ")
    bad = e.fields["node"]
    assert bad in {n.id for n in lm.current.spec.nodes} and bad != a["replace"]
    assert f"{bad!r} (" in e.message and "does not fit its input" in e.message
    assert "produces [-1, " in e.message and e.fields["got"]


def test_reject_shape_mismatch_in_second_op_names_it() -> None:
    lin = {"type": "Linear", "in_features": 64, "out_features": 64}
    e = _reject(
        live("digits"),
        [
            {"op": "insert", "after": "relu1", "layer": {"type": "Identity"}},
            {"op": "insert", "after": "fc1", "name": "bad", "layer": lin},
        ],
    )
    assert e.message.startswith("op 1: insert Linear(in_features=64, out_features=64, bias=True) after 'fc1'")
    assert e.fields["op"] == 1


def test_reject_shape_mismatch_of_auto_named_insert_names_its_op() -> None:
    # The failing node has a generated name ('linear_1'); the error must still point at the op that made it.
    lin = {"type": "Linear", "in_features": 64, "out_features": 64}
    e = _reject(
        live("digits"),
        [{"op": "insert", "after": "fc1", "layer": lin}, {"op": "insert", "after": "relu2", "layer": {"type": "ReLU"}}],
    )
    assert e.fields["node"] == "linear_1"
    assert e.fields["op"] == 0 and e.message.startswith("op 0: insert Linear"), e.message


@pytest.mark.parametrize(
    ("layer", "field"),
    [
        ({"type": "Linear", "in_features": 0, "out_features": 128}, "ops.0.layer.in_features"),
        ({"type": "Linear", "in_features": "big", "out_features": 128}, "ops.0.layer.in_features"),
        ({"type": "Linear", "in_features": 128, "out_features": 128, "units": 3}, "ops.0.layer.units"),
        ({"type": "Linear", "in_features": 128}, "ops.0.layer.out_features"),
        ({"type": "Conv2d", "in_channels": 3, "out_channels": 3}, "ops.0.layer.kernel_size"),
        ({"type": "Dropout", "p": 1.5}, "ops.0.layer.p"),
        (
            {"type": "Residual", "body": [{"type": "Linear", "in_features": -1, "out_features": 3}]},
            "ops.0.layer.body.0.in_features",
        ),
        ({"type": "Sequential", "layers": []}, "ops.0.layer.layers"),
        ({"type": "Linear", "in_features": 1 << 20, "out_features": 1 << 20}, "ops.0.layer"),
    ],
)
def test_reject_bad_layer_args_names_field(layer: dict[str, Any], field: str) -> None:
    e = _reject(live("digits"), [{"op": "insert", "after": "relu1", "layer": layer}])
    assert e.message.startswith(field), e.message
    assert e.fields["op"] == 0


def test_reject_bad_layer_args_in_second_op() -> None:
    e = _reject(
        live("digits"),
        [
            {"op": "insert", "after": "relu1", "layer": {"type": "ReLU"}},
            {"op": "replace", "node": "fc2", "layer": {"type": "Linear", "in_features": 0, "out_features": 64}},
        ],
    )
    assert e.message.startswith("ops.1.layer.in_features") and e.fields["op"] == 1


@pytest.mark.parametrize("type_", ["Foo", "torch.nn.Linear", "__import__", "Module"])
def test_reject_unknown_layer_type(type_: str) -> None:
    e = _reject(live("mlp"), [{"op": "insert", "after": "relu1", "layer": {"type": type_}}])
    assert f"ops.0.layer.type: unknown layer type {type_!r}" in e.message
    assert "Linear" in e.message  # lists what is allowed
    e = _reject(live("mlp"), [{"op": "replace", "node": "fc2", "layer": {"type": type_}}])
    assert f"unknown layer type {type_!r}" in e.message


def test_reject_unknown_nested_layer_type() -> None:
    e = _reject(
        live("mlp"), [{"op": "insert", "after": "relu1", "layer": {"type": "Residual", "body": [{"type": "Evil"}]}}]
    )
    assert "ops.0.layer.body.0" in e.message and "'Evil'" in e.message


@pytest.mark.parametrize(
    ("model", "anchor", "layer", "reason"),
    [
        ("digits", "fc1", {"type": "ReLU"}, "ReLU is an identity only on inputs within [0.0, inf], not after Linear"),
        ("digits", "fc1", {"type": "Tanh"}, "Tanh is not an identity function"),
        ("digits", "fc1", {"type": "LayerNorm", "normalized_shape": 128}, "LayerNorm re-normalises its input"),
        (
            "digits",
            "fc1",
            {"type": "BatchNorm1d", "num_features": 128, "track_running_stats": False},
            "BatchNorm1d without running statistics",
        ),
        (
            "digits",
            "fc1",
            {
                "type": "Residual",
                "body": [{"type": "Linear", "in_features": 128, "out_features": 128}, {"type": "ReLU"}],
            },
            "ReLU has no weights to zero",
        ),
        (
            "digits",
            "fc1",
            {
                "type": "Residual",
                "body": [
                    {
                        "type": "Sequential",
                        "layers": [{"type": "Linear", "in_features": 128, "out_features": 128}, {"type": "Sigmoid"}],
                    }
                ],
            },
            "Sigmoid has no weights to zero",
        ),
        (
            "digits",
            "fc1",
            {
                "type": "Residual",
                "body": [{"type": "Residual", "body": [{"type": "Linear", "in_features": 128, "out_features": 128}]}],
            },
            "its last layer is a Residual",
        ),
        (
            "digits",
            "relu1",
            {
                "type": "Sequential",
                "layers": [{"type": "Linear", "in_features": 128, "out_features": 128}, {"type": "GELU"}],
            },
            "GELU is not an identity",
        ),
        (
            "convnet",
            "relu1_1",
            {"type": "Conv2d", "in_channels": 16, "out_channels": 16, "kernel_size": 2, "padding": "same"},
            "even kernel",
        ),
        (
            "convnet",
            "relu1_1",
            {"type": "Conv2d", "in_channels": 16, "out_channels": 16, "kernel_size": 3, "padding": 1, "stride": 2},
            "stride [2, 2] downsamples",
        ),
        (
            "convnet",
            "relu1_1",
            {"type": "Conv2d", "in_channels": 16, "out_channels": 16, "kernel_size": 3},
            "changes the size",
        ),
        (
            "convnet",
            "relu1_1",
            {"type": "Conv2d", "in_channels": 16, "out_channels": 16, "kernel_size": 3, "padding": 2, "dilation": 2},
            "dilation 1",
        ),
        (
            "resnet",
            "stem_relu",
            {"type": "MaxPool2d", "kernel_size": 3, "stride": 1, "padding": 1},
            "MaxPool2d pools windows of 3; only kernel 1",
        ),
    ],
)
def test_reject_impossible_identity_says_why(model: str, anchor: str, layer: dict[str, Any], reason: str) -> None:
    e = _reject(live(model), [{"op": "insert", "after": anchor, "layer": layer, "init": "identity"}])
    assert e.message.startswith("op 0: insert ")
    assert "init 'identity' is impossible here: " in e.message
    assert reason in e.message, e.message


def test_reject_nonsquare_linear_identity_even_when_shapes_fit() -> None:
    # a Linear 128->64 replacing fc2's role would fit downstream in no case, but the identity check comes first
    e = _reject(
        live("digits"),
        [
            {
                "op": "insert",
                "before": "fc2",
                "init": "identity",
                "layer": {"type": "Linear", "in_features": 128, "out_features": 64},
            }
        ],
    )
    assert "only a square Linear can be an identity" in e.message


@pytest.mark.parametrize("model", MODELS)
def test_reject_output_change_without_allow(model: str) -> None:
    lm = live(model)
    out = lm.current.outputs[0]
    layer = {"type": "Linear", "in_features": 10, "out_features": 3}
    e = _reject(lm, [{"op": "insert", "after": out.node, "layer": layer}])
    assert e.message == (
        "the edit changes output 'output' from FP32 [-1, 10] to FP32 [-1, 3]; set allow_output_change to accept that"
    )
    assert e.fields["expected"] == [-1, 10] and e.fields["got"] == [-1, 3]
    v2 = lm.propose([{"op": "insert", "after": out.node, "layer": layer}], allow_output_change=True)
    assert v2.outputs[0].shape == (-1, 3)


def test_reject_output_batch_dimension_lost_even_when_allowed() -> None:
    e = _reject(
        live("digits"),
        [{"op": "insert", "after": "fc3", "layer": {"type": "Flatten", "start_dim": 0}}],
        allow_output_change=True,
    )
    assert "dimension 0 must stay the batch" in e.message and e.fields["op"] == 0


@pytest.mark.parametrize(
    ("layer", "diff"),
    [
        ({"type": "Linear", "in_features": 128, "out_features": 64, "bias": False}, "bias: [64] vs missing"),
        (
            {"type": "Linear", "in_features": 128, "out_features": 32},
            "weight: [64, 128] vs [32, 128]; bias: [64] vs [32]",
        ),
        ({"type": "BatchNorm1d", "num_features": 128}, "weight: [64, 128] vs [128]"),
    ],
)
def test_reject_keep_weights_shape_mismatch(layer: dict[str, Any], diff: str) -> None:
    e = _reject(live("digits"), [{"op": "replace", "node": "fc2", "layer": layer, "keep_weights": True}])
    assert e.message.startswith("op 0: replace 'fc2' with ")
    assert "keep_weights needs tensors of the same shapes; old vs new: " in e.message
    assert diff in e.message, e.message
    assert e.fields["node"] == "fc2"


def test_reject_keep_weights_conv_kernel_mismatch() -> None:
    layer = {"type": "Conv2d", "in_channels": 32, "out_channels": 32, "kernel_size": 5, "padding": 2}
    e = _reject(live("convnet"), [{"op": "replace", "node": "conv2_2", "layer": layer, "keep_weights": True}])
    assert "weight: [32, 32, 3, 3] vs [32, 32, 5, 5]" in e.message


def _bias(data: list[Any], shape: list[int] | None = None, datatype: str | None = None) -> dict[str, Any]:
    t: dict[str, Any] = {"shape": shape if shape is not None else [len(data)], "data": data}
    if datatype is not None:
        t["datatype"] = datatype
    return t


@pytest.mark.parametrize(
    ("tensors", "needle", "fields"),
    [
        (
            {"bia": _bias([0.0] * 10)},
            "'fc3' has no tensor 'bia'; it has ['bias', 'weight']",
            {"node": "fc3", "got": "bia"},
        ),
        ({"bias": _bias([0.0] * 5)}, "tensor 'bias' of 'fc3' has shape [10], got [5]", {"expected": [10], "got": [5]}),
        (
            {"weight": _bias([0.0] * 640, [64, 10])},
            "tensor 'weight' of 'fc3' has shape [10, 64], got [64, 10]",
            {"expected": [10, 64], "got": [64, 10]},
        ),
        ({"bias": _bias([0.0] * 9, [10])}, "tensor 'bias': shape [10] needs 10 elements, got 9", {}),
        (
            {"bias": _bias([0.0] * 10, datatype="FP64")},
            "tensor 'bias' of 'fc3' is FP32, got FP64",
            {"expected": "FP32", "got": "FP64"},
        ),
        ({"bias": _bias([0] * 10, datatype="INT64")}, "tensor 'bias' of 'fc3' is FP32, got INT64", {}),
        ({"bias": _bias([0.0] * 10, datatype="FP8")}, "unknown datatype 'FP8'", {}),
        (
            {"bias": _bias([float("nan")] + [0.0] * 9)},
            "tensor 'bias': value out of range for FP32 (values must be finite numbers",
            {},
        ),
        ({"bias": _bias([float("inf")] + [0.0] * 9)}, "no infinity", {}),
        ({"bias": _bias(["a"] * 10)}, "FP32 data needs numbers, got strings", {}),
        ({"bias": _bias([True] * 10)}, "FP32 data needs numbers, got booleans", {}),
        ({}, "set_weights needs at least one tensor", {"node": "fc3"}),
    ],
)
def test_reject_set_weights(tensors: dict[str, Any], needle: str, fields: dict[str, Any]) -> None:
    e = _reject(live("digits"), [{"op": "set_weights", "node": "fc3", "tensors": tensors}])
    assert e.message.startswith("op 0: set_weights on 'fc3': ")
    assert needle in e.message, e.message
    assert e.fields["op"] == 0
    for k, v in fields.items():
        assert e.fields[k] == v


def test_reject_set_weights_decoded_wrong_dtype_and_nan() -> None:
    lm = live("digits")
    e = _reject(lm, [SetWeightsOp.from_tensors("fc3", {"bias": torch.zeros(10, dtype=torch.float64)})])
    assert "tensor 'bias' of 'fc3' is FP32, got FP64" in e.message
    e = _reject(lm, [SetWeightsOp.from_tensors("fc3", {"bias": torch.full((10,), float("nan"))})])
    assert "NaN or infinity" in e.message
    e = _reject(lm, [SetWeightsOp.from_tensors("fc3", {"bias": torch.zeros(11)})])
    assert "has shape [10], got [11]" in e.message


def test_reject_set_weights_on_function_node() -> None:
    e = _reject(live("resnet"), [{"op": "set_weights", "node": "s1b1_add", "tensors": {"x": _bias([0.0])}}])
    assert "'s1b1_add' is a function and has no weights" in e.message


@pytest.mark.parametrize("ops", [[], [{"op": "insert", "after": "fc1", "layer": {"type": "Identity"}}] * 257])
def test_reject_empty_or_too_many_ops(ops: list[Any]) -> None:
    e = _reject(live("digits"), ops)
    assert ("at least one op" in e.message) if not ops else ("at most 256 ops, got 257" in e.message)


def test_reject_remove_of_multi_input_node() -> None:
    e = _reject(live("resnet"), [{"op": "remove", "node": "s1b1_add"}])
    assert e.message == "op 0: remove 's1b1_add': only a node with one input can be removed; 's1b1_add' has 2"
    assert e.fields == {"node": "s1b1_add", "op": 0}


def test_reject_replace_of_function_node() -> None:
    e = _reject(live("resnet"), [{"op": "replace", "node": "s2b1_add", "layer": {"type": "Identity"}}])
    assert "'s2b1_add' is a add function, not a layer" in e.message


def test_reject_insert_before_multi_input_node() -> None:
    e = _reject(live("resnet"), [{"op": "insert", "before": "s1b2_add", "layer": {"type": "Identity"}}])
    assert "'before' needs a node with one input; 's1b2_add' has 2" in e.message


@pytest.mark.parametrize("name", ["fc1", "input", "output", "relu2"])
def test_reject_duplicate_name(name: str) -> None:
    e = _reject(live("digits"), [{"op": "insert", "after": "fc1", "name": name, "layer": {"type": "Identity"}}])
    assert f"a node named {name!r} already exists" in e.message


@pytest.mark.parametrize("name", ["1abc", "a-b", "forward", "class", "_modules", "meta", "graph", "x" * 65])
def test_reject_bad_or_reserved_name(name: str) -> None:
    e = _reject(live("digits"), [{"op": "insert", "after": "fc1", "name": name, "layer": {"type": "Identity"}}])
    assert "must be a Python identifier" in e.message and "not a reserved name" in e.message
    assert e.fields["op"] == 0


@pytest.mark.parametrize(
    "op",
    [
        {"op": "insert", "after": "fc1", "before": "fc2", "layer": {"type": "Identity"}},
        {"op": "insert", "layer": {"type": "Identity"}},
    ],
)
def test_reject_insert_needs_exactly_one_anchor(op: dict[str, Any]) -> None:
    e = _reject(live("digits"), [op])
    assert "give exactly one of 'after' or 'before'" in e.message


def test_reject_unknown_op_and_extra_fields() -> None:
    lm = live("digits")
    e = _reject(lm, [{"op": "rename", "node": "fc1"}])
    assert "'rename'" in e.message and e.fields["op"] == 0
    e = _reject(lm, [{"op": "remove", "node": "relu1"}, {"op": "remove", "node": "relu2", "force": True}])
    assert "force" in e.message and e.fields["op"] == 1


def test_reject_commit_and_propose_conflicts() -> None:
    lm = live("digits")
    v2 = lm.propose([{"op": "insert", "after": "relu1", "layer": {"type": "Identity"}}], if_version=1)
    v2b = lm.propose([{"op": "remove", "node": "relu2"}])
    lm.commit(v2)
    snap = Snapshot.take(lm)
    with pytest.raises(ConflictError):
        lm.commit(v2b)  # built on version 1, which is no longer the latest
    with pytest.raises(ConflictError) as ei:
        lm.propose([{"op": "remove", "node": "relu2"}], if_version=1)
    assert ei.value.fields == {"expected": 1, "got": 2}
    snap.check()


def test_parse_ops_round_trip() -> None:
    ops = parse_ops([{"op": "insert", "after": "fc1", "layer": {"type": "ReLU"}}, {"op": "remove", "node": "fc2"}])
    assert [type(o).__name__ for o in ops] == ["InsertOp", "RemoveOp"]
    assert parse_ops(ops) == ops

"""The Core ATen vocabulary: function nodes name an operator and overload, their arguments are checked against the
operator's schema (types, list lengths, which inputs they name), refused operators are refused by name with the
reason, size nodes carry run-time sizes, and guarded operators check their run-time arguments (issue 23)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from morphserve.graph import SpecError, from_spec
from morphserve.graph.functions import OPSET, REFUSED, SYMBOLIC, guards, lookup
from morphserve.graph.functions.guards import MAX_ELEMENTS

BASE: dict[str, Any] = {
    "name": "t",
    "inputs": [{"name": "x", "shape": [-1, -1, 8]}],
    "outputs": [{"name": "out", "node": "y"}],
}


def _node(function: str, args: dict[str, Any], inputs: list[str] | None = None) -> dict[str, Any]:
    return {**BASE, "nodes": [{"id": "y", "function": function, "inputs": inputs or ["x"], "args": args}]}


def test_the_vocabulary_is_the_core_opset_less_what_is_refused() -> None:
    core = set()
    for schema in torch._C._jit_get_all_schemas():
        packet = getattr(torch.ops.aten, schema.name.removeprefix("aten::"), None)
        op = getattr(packet, schema.overload_name or "default", None) if schema.name.startswith("aten::") else None
        if isinstance(op, torch._ops.OpOverload) and torch.Tag.core in op.tags:
            core.add(f"aten.{schema.name.removeprefix('aten::')}.{schema.overload_name or 'default'}")
    assert len(core) >= 180
    assert core == (set(OPSET) | set(REFUSED)) - {"aten.scaled_dot_product_attention.default"}
    assert "aten.scaled_dot_product_attention.default" in OPSET  # kept whole (opset.KEPT)
    for name in ("aten.randn.default", "aten.nonzero.default", "aten.native_dropout.default", "aten.atan2.out"):
        assert name in REFUSED and name not in OPSET
    assert {"sym.add", "sym.mul", "sym.floordiv"} <= set(SYMBOLIC)


def test_an_operator_node_runs_what_the_operator_computes() -> None:
    spec = _node("aten.add.Tensor", {"self": {"input": 0}, "other": {"input": 0}, "alpha": 0.5})
    v = from_spec(spec)
    x = torch.randn(2, 3, 8)
    assert torch.equal(v.run(x)[0], torch.add(x, x, alpha=0.5))
    assert v.outputs[0].shape == (-1, -1, 8)


def test_size_nodes_carry_run_time_sizes() -> None:
    spec = {
        **BASE,
        "nodes": [
            {"id": "s", "function": "aten.sym_size.int", "inputs": ["x"], "args": {"self": {"input": 0}, "dim": 1}},
            {"id": "s2", "function": "sym.mul", "inputs": ["s"], "args": {"a": {"input": 0}, "b": 8}},
            {
                "id": "y",
                "function": "aten.view.default",
                "inputs": ["x", "s2"],
                "args": {"self": {"input": 0}, "size": [-1, {"input": 1}]},
            },
        ],
    }
    v = from_spec(spec)
    assert v.shapes["s"].is_scalar and v.shapes["s"].values == (32, 40)
    for length in (3, 17):
        x = torch.randn(2, length, 8)
        assert torch.equal(v.run(x)[0], x.reshape(2, length * 8))
    recorded = v.recorded_shapes()
    assert recorded["s2"] == {"scalar": [256, 320], "datatype": "INT64"}


@pytest.mark.parametrize(
    ("function", "args", "inputs", "needle"),
    [
        ("aten.add.Tensor", {"self": {"input": 0}}, None, "argument 'other' is required"),
        ("aten.add.Tensor", {"self": {"input": 0}, "other": {"input": 0}, "callback": "os.system"}, None, "callback"),
        ("aten.add.Tensor", {"self": {"input": 3}, "other": {"input": 0}}, None, "names input 3"),
        ("aten.add.Tensor", {"self": "x", "other": {"input": 0}}, None, 'expected {"input": i}'),
        ("aten.add.Tensor", {"self": {"input": 0}, "other": {"input": 0}}, ["x", "x"], "input(s) [1] are not used"),
        ("aten.mul.Scalar", {"self": {"input": 0}, "other": float("nan")}, None, "written"),
        ("aten.mul.Scalar", {"self": {"input": 0}, "other": 1 << 70}, None, "64-bit"),
        ("aten.view.default", {"self": {"input": 0}, "size": list(range(2000))}, None, "at most 1024"),
        ("aten.permute.default", {"self": {"input": 0}, "dims": [0, "1"]}, None, "expected an integer"),
        ("aten.gelu.default", {"self": {"input": 0}, "approximate": "exact"}, None, "expected one of ['none', 'tanh']"),
        ("aten._to_copy.default", {"self": {"input": 0}, "dtype": "FP128"}, None, "expected a datatype"),
        ("aten._to_copy.default", {"self": {"input": 0}, "device": "cuda:7"}, None, "leave 'device' out"),
        ("aten.randn.default", {"size": [2]}, [], "aten.randn.default is refused: a random operator"),
        ("aten.fft_fft.default", {}, None, "aten.fft_fft.default is not a Core ATen operator"),
        ("sym.mul", {"a": {"input": 0}}, None, "takes the arguments ['a', 'b']"),
        (
            "aten.scaled_dot_product_attention.default",
            {"query": {"input": 0}, "key": {"input": 0}, "value": {"input": 0}, "dropout_p": 0.1},
            None,
            "dropout_p must be 0",
        ),
    ],
)
def test_arguments_are_checked_against_the_schema(
    function: str, args: dict[str, Any], inputs: list[str] | None, needle: str
) -> None:
    with pytest.raises(SpecError) as e:
        from_spec(_node(function, args, inputs if inputs is not None else None))
    assert needle in e.value.message, e.value.message
    assert e.value.fields.get("node") == "y"


def test_a_size_where_a_tensor_goes_is_a_shape_error() -> None:
    spec = {
        **BASE,
        "nodes": [
            {"id": "s", "function": "aten.sym_size.int", "inputs": ["x"], "args": {"self": {"input": 0}, "dim": 1}},
            {"id": "y", "function": "aten.relu.default", "inputs": ["s"], "args": {"self": {"input": 0}}},
        ],
    }
    with pytest.raises(SpecError, match="'s' is a size"):
        from_spec(spec)


def test_creation_goes_to_the_inputs_device_and_is_bounded() -> None:
    entry = lookup("aten.full.default")
    assert entry is not None
    spec = _node("aten.full.default", {"size": [1 << 20, 1 << 20], "fill_value": 1.0}, [])
    spec["nodes"][0]["inputs"] = []
    with pytest.raises(SpecError, match=f"more than the {MAX_ELEMENTS}"):
        from_spec(spec)


def test_index_guards_refuse_out_of_range_indices_before_the_kernel() -> None:
    spec = {
        "name": "t",
        "inputs": [{"name": "w", "shape": [-1, 4]}, {"name": "ids", "datatype": "INT64", "shape": [-1, 3]}],
        "outputs": [{"name": "out", "node": "y"}],
        "nodes": [
            {
                "id": "y",
                "function": "aten.embedding.default",
                "inputs": ["w", "ids"],
                "args": {"weight": {"input": 0}, "indices": {"input": 1}},
            }
        ],
    }
    v = from_spec(spec)
    w = torch.randn(5, 4)
    assert torch.equal(v.run(w, torch.tensor([[0, 4, 2]]))[0], w[[0, 4, 2]].unsqueeze(0))
    with pytest.raises(IndexError, match="embedding: index 5 is out of range for a dimension of size 5"):
        v.run(w, torch.tensor([[0, 5, 2]]))
    with pytest.raises(IndexError, match="index -1 is out of range"):
        v.run(w, torch.tensor([[0, -1, 2]]))


def test_as_strided_reaches_only_its_inputs_elements() -> None:
    x = torch.arange(2 * 4 * 8, dtype=torch.float32).reshape(2, 4, 8)
    assert torch.equal(guards.as_strided(x, [2, 2], [1, 1], 3), torch.as_strided(x, (2, 2), (1, 1), 3))
    with pytest.raises(IndexError, match="outside its input's elements"):
        guards.as_strided(x, [2, 2], [64, 1], 0)
    inner = torch.arange(100.0)[10:20]  # a view: its neighbours in the storage are not its elements
    with pytest.raises(IndexError, match="outside its input's elements"):
        guards.as_strided(inner, [3], [1], 0)
    assert torch.equal(guards.as_strided(inner, [3], [1], 12), inner[2:5])


def test_legacy_functions_still_load() -> None:
    spec = {**BASE, "nodes": [{"id": "y", "function": "softmax", "inputs": ["x"], "args": {"dim": -1}}]}
    v = from_spec(spec)
    x = torch.randn(2, 3, 8)
    assert torch.equal(v.run(x)[0], torch.softmax(x, -1))


def test_a_materialised_causal_mask_runs_as_is_causal_and_any_other_mask_as_given() -> None:
    q = torch.randn(2, 3, 5, 8)
    causal = torch.ones(5, 5, dtype=torch.bool).tril().expand(2, 1, 5, 5)
    assert guards._is_causal_mask(causal, q, q)
    want = torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
    assert torch.allclose(guards.scaled_dot_product_attention(q, q, q, causal), want, atol=1e-6)
    padded = causal.clone()
    padded[0, 0, :, 0] = False  # a padding column in one row: not the plain causal mask
    assert not guards._is_causal_mask(padded, q, q)
    want = torch.nn.functional.scaled_dot_product_attention(q, q, q, attn_mask=padded)
    assert torch.equal(guards.scaled_dot_product_attention(q, q, q, padded), want)

"""The function allowlist: every function builds, propagates the shape it really produces, computes what its
torch counterpart computes, and refuses bad arguments with a SpecError naming the node."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from morphserve.graph import SpecError, from_spec
from morphserve.graph.functions import FUNCTIONS

X = ("x", "FP32", [-1, 4, 6])
Y = ("y", "FP32", [-1, 4, 6])
IMG = ("x", "FP32", [-1, 4, 8, 8])
IDS = ("ids", "INT64", [-1, 5])
W = ("w", "FP32", [-1, 6])  # read as a weight: sliced to its first row by the reference

Case = tuple[list[tuple[str, str, list[int]]], dict[str, Any], Callable[..., torch.Tensor]]
# name -> (inputs, args, reference on the real tensors)
CASES: dict[str, Case] = {
    "add": ([X, Y], {}, lambda x, y: x + y),
    "sub": ([X], {"other": 2, "alpha": 3}, lambda x: x - 6),
    "mul": ([X], {"other": 0.5}, lambda x: x * 0.5),
    "div": ([X, Y], {"rounding_mode": "floor"}, lambda x, y: torch.div(x, y, rounding_mode="floor")),
    "pow": ([X], {"other": 2}, lambda x: x**2),
    "remainder": ([X], {"other": 1.5}, lambda x: x % 1.5),
    "eq": ([X, Y], {}, torch.eq),
    "ne": ([X], {"other": 0}, lambda x: x != 0),
    "lt": ([X, Y], {}, torch.lt),
    "le": ([X], {"other": 0.1}, lambda x: x <= 0.1),
    "gt": ([X], {"other": "-inf"}, lambda x: x > -torch.inf),
    "ge": ([X, Y], {}, torch.ge),
    "maximum": ([X, Y], {}, torch.maximum),
    "minimum": ([X, Y], {}, torch.minimum),
    "logical_and": ([X, Y], {}, torch.logical_and),
    "logical_or": ([X, Y], {}, torch.logical_or),
    "sum": ([X], {"dim": [1], "keepdim": True}, lambda x: x.sum(1, keepdim=True)),
    "cat": ([X, Y], {"dim": 2}, lambda x, y: torch.cat([x, y], 2)),
    "stack": ([X, Y], {"dim": 1}, lambda x, y: torch.stack([x, y], 1)),
    "flatten": ([X], {"start_dim": 1}, lambda x: x.flatten(1)),
    "rsub": ([X], {"other": 1.0}, lambda x: 1.0 - x),
    "relu": ([X], {}, torch.relu),
    "gelu": ([X], {"approximate": "tanh"}, lambda x: F.gelu(x, approximate="tanh")),
    "silu": ([X], {}, F.silu),
    "mish": ([X], {}, F.mish),
    "hardswish": ([X], {}, F.hardswish),
    "hardsigmoid": ([X], {}, F.hardsigmoid),
    "sigmoid": ([X], {}, torch.sigmoid),
    "tanh": ([X], {}, torch.tanh),
    "leaky_relu": ([X], {"negative_slope": 0.2}, lambda x: F.leaky_relu(x, 0.2)),
    "elu": ([X], {"alpha": 0.5}, lambda x: F.elu(x, 0.5)),
    "hardtanh": ([X], {"min_val": 0.0, "max_val": 6.0}, F.relu6),
    "softplus": ([X], {"beta": 2.0}, lambda x: F.softplus(x, 2.0)),
    "exp": ([X], {}, torch.exp),
    "log": ([X], {}, torch.log),
    "sqrt": ([X], {}, torch.sqrt),
    "rsqrt": ([X], {}, torch.rsqrt),
    "neg": ([X], {}, torch.neg),
    "abs": ([X], {}, torch.abs),
    "erf": ([X], {}, torch.erf),
    "reciprocal": ([X], {}, torch.reciprocal),
    "sin": ([X], {}, torch.sin),
    "cos": ([X], {}, torch.cos),
    "logical_not": ([X], {}, torch.logical_not),
    "sign": ([X], {}, torch.sign),
    "clamp": ([X], {"min": -0.5, "max": 0.5}, lambda x: x.clamp(-0.5, 0.5)),
    "softmax": ([X], {"dim": -1}, lambda x: x.softmax(-1)),
    "log_softmax": ([X], {"dim": 1}, lambda x: x.log_softmax(1)),
    "cumsum": ([X], {"dim": 2}, lambda x: x.cumsum(2)),
    "mean": ([X], {"dim": [1, 2]}, lambda x: x.mean([1, 2])),
    "amax": ([X], {"dim": [2]}, lambda x: x.amax(2)),
    "amin": ([X], {"dim": [1]}, lambda x: x.amin(1)),
    "var": ([X], {"dim": [2], "correction": 0}, lambda x: x.var(2, correction=0)),
    "std": ([X], {"dim": [2]}, lambda x: x.std(2)),
    "norm": ([X], {"dim": [2], "ord": 1.0}, lambda x: torch.linalg.vector_norm(x, 1, dim=2)),
    "argmax": ([X], {"dim": 2}, lambda x: x.argmax(2)),
    "reshape": ([X], {"shape": [{"input": 0, "dim": 0}, -1]}, lambda x: x.reshape(x.shape[0], -1)),
    "permute": ([X], {"dims": [0, 2, 1]}, lambda x: x.permute(0, 2, 1)),
    "transpose": ([X], {"dim0": 1, "dim1": 2}, lambda x: x.transpose(1, 2)),
    "unflatten": ([X], {"dim": 2, "sizes": [2, 3]}, lambda x: x.unflatten(2, (2, 3))),
    "unsqueeze": ([X], {"dim": 1}, lambda x: x.unsqueeze(1)),
    "squeeze": ([("x", "FP32", [-1, 1, 6])], {"dim": [1]}, lambda x: x.squeeze(1)),
    "expand": ([("x", "FP32", [-1, 1, 6])], {"size": [-1, 3, 6]}, lambda x: x.expand(-1, 3, 6)),
    "repeat": ([X], {"repeats": [1, 2, 1]}, lambda x: x.repeat(1, 2, 1)),
    "select": ([X], {"dim": 1, "index": -1}, lambda x: x[:, -1]),
    "slice": ([X], {"dim": 2, "start": 1, "end": {"input": 0, "dim": 1}, "step": 2}, lambda x: x[:, :, 1:4:2]),
    "split": ([X], {"split_size": [2, 4], "dim": 2}, lambda x: x.split([2, 4], 2)[1]),
    "chunk": ([X], {"chunks": 2, "dim": 1}, lambda x: x.chunk(2, 1)[1]),
    "unbind": ([X], {"dim": 1}, lambda x: x.unbind(1)[1]),
    "getitem": ([X], {"index": 1}, lambda x: x.split(3, 2)[1]),  # on a split node, see _spec
    "to": ([X], {"datatype": "FP64"}, lambda x: x.double()),
    "flip": ([X], {"dims": [2]}, lambda x: x.flip(2)),
    "roll": ([X], {"shifts": [1], "dims": [2]}, lambda x: x.roll(1, 2)),
    "gather": ([X, ("i", "INT64", [-1, 4, 2])], {"dim": 2}, lambda x, i: x.gather(2, i.clamp(0, 5))),
    "index": ([X, ("i", "INT64", [-1, 3])], {"dims": [1]}, lambda x, i: x[:, i.clamp(0, 3)]),
    "masked_fill": ([X, Y], {"value": "-inf"}, lambda x, y: x.masked_fill(y > 0, -torch.inf)),
    "where": ([("c", "FP32", [-1, 4, 6]), X, Y], {}, lambda c, x, y: torch.where(c > 0, x, y)),
    "matmul": ([X, ("y", "FP32", [-1, 6, 3])], {}, torch.matmul),
    "bmm": ([X, ("y", "FP32", [-1, 6, 3])], {}, torch.bmm),
    "linear": ([X, W], {}, lambda x, w: F.linear(x, w[:1].expand(6, 6))),
    "einsum": ([X, Y], {"equation": "bij,bkj->bik"}, lambda x, y: torch.einsum("bij,bkj->bik", x, y)),
    "conv1d": (
        [X, W],
        {"padding": [1], "groups": 1},
        lambda x, w: F.conv1d(x, w[:1].reshape(1, 1, 6).expand(4, 4, 6).contiguous()[:, :, :3], padding=1),
    ),
    "conv2d": (
        [IMG, W],
        {"padding": "same"},
        lambda x, w: F.conv2d(
            x, w[:1].reshape(1, 1, 6)[:, :, :1].reshape(1, 1, 1, 1).expand(4, 4, 1, 1), padding="same"
        ),
    ),
    "embedding": ([IDS, W], {}, lambda i, w: F.embedding(i.clamp(0, 0), w[:1])),
    "layer_norm": ([X], {"normalized_shape": [6], "eps": 1e-6}, lambda x: F.layer_norm(x, (6,), eps=1e-6)),
    "group_norm": ([X], {"num_groups": 2}, lambda x: F.group_norm(x, 2)),
    "rms_norm": ([X], {"normalized_shape": [6]}, lambda x: F.rms_norm(x, (6,))),
    "normalize": ([X], {"dim": 2}, lambda x: F.normalize(x, dim=2)),
    "scaled_dot_product_attention": (
        [X, Y, ("z", "FP32", [-1, 4, 6])],
        {"is_causal": True},
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
    ),
    "prelu": ([X, W], {}, lambda x, w: F.prelu(x, w[:1, :1].reshape(1))),
    "max_pool1d": ([X], {"kernel_size": 2}, lambda x: F.max_pool1d(x, 2)),
    "max_pool2d": ([IMG], {"kernel_size": 3, "stride": 2, "padding": 1}, lambda x: F.max_pool2d(x, 3, 2, 1)),
    "avg_pool1d": ([X], {"kernel_size": 3, "stride": 1}, lambda x: F.avg_pool1d(x, 3, 1)),
    "avg_pool2d": ([IMG], {"kernel_size": 2}, lambda x: F.avg_pool2d(x, 2)),
    "adaptive_avg_pool1d": ([X], {"output_size": 2}, lambda x: F.adaptive_avg_pool1d(x, 2)),
    "adaptive_avg_pool2d": ([IMG], {"output_size": [1, 2]}, lambda x: F.adaptive_avg_pool2d(x, (1, 2))),
    "adaptive_max_pool2d": ([IMG], {"output_size": 2}, lambda x: F.adaptive_max_pool2d(x, 2)),
    "interpolate": (
        [IMG],
        {"scale_factor": [2.0, 2.0], "mode": "bilinear", "align_corners": False},
        lambda x: F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False),
    ),
    "pad": ([X], {"pad": [1, 2], "mode": "reflect"}, lambda x: F.pad(x, (1, 2), "reflect")),
    "pixel_shuffle": ([IMG], {"factor": 2}, lambda x: F.pixel_shuffle(x, 2)),
    "pixel_unshuffle": ([IMG], {"factor": 2}, lambda x: F.pixel_unshuffle(x, 2)),
    "full": (
        [X],
        {"size": [{"input": 0, "dim": 0}, 3], "fill_value": 7, "datatype": "INT32"},
        lambda x: torch.full((x.shape[0], 3), 7, dtype=torch.int32),
    ),
    "full_like": ([X], {"fill_value": 1.5}, lambda x: torch.full_like(x, 1.5)),
    "arange": ([X], {"end": {"input": 0, "dim": 0}}, lambda x: torch.arange(x.shape[0])),
}
_TUPLES = {"split", "chunk", "unbind"}
_WEIGHTED = {"linear", "conv1d", "conv2d", "embedding", "prelu"}
_PREP = {  # inputs that need a valid range for the function to be defined
    "log": torch.abs,
    "sqrt": torch.abs,
    "rsqrt": lambda t: t.abs() + 0.1,
    "reciprocal": lambda t: t.abs() + 0.1,
    "div": lambda t: t.abs() + 0.5,
    "remainder": torch.abs,
}


def test_every_function_has_a_case() -> None:
    assert set(CASES) == set(FUNCTIONS)


def _spec(name: str) -> dict[str, Any]:
    inputs, args, _ = CASES[name]
    ins = [i[0] for i in inputs]
    nodes: list[dict[str, Any]] = []
    data = list(ins)
    if name in ("gather", "index"):
        top = 5 if name == "gather" else 3
        nodes.append({"id": "idx", "function": "clamp", "inputs": ["i"], "args": {"min": 0, "max": top}})
        data[1] = "idx"
    if name == "embedding":
        nodes.append({"id": "ids0", "function": "clamp", "inputs": ["ids"], "args": {"min": 0, "max": 0}})
        data[0] = "ids0"
    if name in ("masked_fill", "where"):
        cond = "y" if name == "masked_fill" else "c"
        nodes.append({"id": "mask", "function": "gt", "inputs": [cond], "args": {"other": 0}})
        data[1 if name == "masked_fill" else 0] = "mask"
    if name == "getitem":
        nodes.append({"id": "pieces", "function": "split", "inputs": ["x"], "args": {"split_size": 3, "dim": 2}})
        data = ["pieces"]
    if name in ("full", "arange"):
        data = ["x"]  # only supplies the size
    nodes.append({"id": "f", "function": name, "inputs": data, "args": args})
    out = "f"
    if name in _TUPLES:
        nodes.append({"id": "one", "function": "getitem", "inputs": ["f"], "args": {"index": 1}})
        out = "one"
    if name == "arange":  # a 1-D result: dimension 0 is the batch only by coincidence, so expose it reshaped
        nodes.append({"id": "col", "function": "unsqueeze", "inputs": ["f"], "args": {"dim": 1}})
        out = "col"
    return {
        "name": name,
        "inputs": [{"name": n, "datatype": d, "shape": s} for n, d, s in inputs],
        "outputs": [{"name": "out", "node": out}],
        "nodes": nodes,
    }


@pytest.mark.parametrize("name", sorted(set(FUNCTIONS) - _WEIGHTED))  # weighted ones: test_weight_functions
def test_function_builds_and_computes_its_reference(name: str) -> None:
    inputs, _, ref = CASES[name]
    v = from_spec(_spec(name))
    g = torch.Generator().manual_seed(1)
    for batch in (2, 3):
        xs = []
        for _, dt, shape in inputs:
            dims = [batch if d == -1 else d for d in shape]
            t = torch.randint(0, 6, dims, generator=g) if dt == "INT64" else torch.randn(dims, generator=g)
            xs.append(_PREP.get(name, lambda t: t)(t))
        (got,) = v.run(*xs)
        want = ref(*xs) if name != "arange" else ref(*xs).unsqueeze(1)
        assert got.dtype == want.dtype and got.shape == want.shape
        assert torch.allclose(got.double(), want.double(), atol=1e-6, equal_nan=True), name
        declared = v.outputs[0].shape
        assert all(d in (-1, s) for d, s in zip(declared, got.shape, strict=True))  # propagation agreed


def test_weight_functions() -> None:
    """linear / conv / embedding / prelu take their weight as an input node (a parameter node when imported)."""
    w = torch.randn(6, 6)
    x = torch.randn(3, 4, 6)
    for name, weight, call in [
        ("linear", w, lambda x, w: F.linear(x, w)),
        ("conv1d", torch.randn(4, 4, 3), lambda x, w: F.conv1d(x, w, padding=1)),
        ("prelu", torch.tensor([0.25]), F.prelu),
    ]:
        spec = {
            "name": name,
            "inputs": [{"name": "x", "shape": [-1, 4, 6]}],
            "outputs": [{"name": "out", "node": "f"}],
            "nodes": [
                {"id": "w", "parameter": {"shape": list(weight.shape)}},
                {
                    "id": "f",
                    "function": name,
                    "inputs": ["x", "w"],
                    "args": {"padding": [1]} if name == "conv1d" else {},
                },
            ],
        }
        v = from_spec(spec, {"w.value": weight})
        assert torch.allclose(v.run(x)[0], call(x, weight), atol=1e-6), name
    ids = torch.tensor([[0, 3, 5]])
    spec = {
        "name": "emb",
        "inputs": [{"name": "ids", "datatype": "INT64", "shape": [-1, 3]}],
        "outputs": [{"name": "out", "node": "f"}],
        "nodes": [
            {"id": "table", "parameter": {"shape": [6, 6]}},
            {"id": "f", "function": "embedding", "inputs": ["ids", "table"]},
        ],
    }
    v = from_spec(spec, {"table.value": w})
    assert torch.equal(v.run(ids)[0], F.embedding(ids, w))
    conv = {
        "name": "c2",
        "inputs": [{"name": "x", "shape": [-1, 4, 8, 8]}],
        "outputs": [{"name": "out", "node": "f"}],
        "nodes": [
            {"id": "k", "parameter": {"shape": [4, 1, 3, 3]}},
            {"id": "f", "function": "conv2d", "inputs": ["x", "k"], "args": {"padding": 1, "groups": 4}},
        ],
    }
    k = torch.randn(4, 1, 3, 3)
    img = torch.randn(2, 4, 8, 8)
    assert torch.allclose(from_spec(conv, {"k.value": k}).run(img)[0], F.conv2d(img, k, padding=1, groups=4), atol=1e-6)


def _bad(name: str, args: dict[str, Any], inputs: list[str] | None = None) -> SpecError:
    spec = {
        "name": "bad",
        "inputs": [{"name": "x", "shape": [-1, 4, 6]}, {"name": "y", "shape": [-1, 4, 6]}],
        "outputs": [{"name": "out", "node": "x"}],
        "nodes": [{"id": "my_node", "function": name, "inputs": inputs or ["x"], "args": args}],
    }
    with pytest.raises(SpecError) as ei:
        from_spec(spec)
    assert ei.value.fields.get("node") == "my_node"
    assert "'my_node'" in ei.value.message
    return ei.value


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_unknown_arguments_are_refused_naming_the_node(name: str) -> None:
    e = _bad(
        name,
        {**CASES[name][1], "callback": "os.system"},
        [i[0] if i[0] in ("x", "y") else "x" for i in CASES[name][0]][:1] or ["x"],
    )
    assert "callback" in e.message


@pytest.mark.parametrize(
    ("name", "args", "inputs", "needle"),
    [
        ("reshape", {"shape": [-1, -1]}, None, "at most one dimension"),
        ("reshape", {"shape": [1 << 30]}, None, "shape.0"),
        ("reshape", {"shape": [{"input": 3, "dim": 0}]}, None, "names input 3"),
        ("reshape", {"shape": ["__import__('os')"]}, None, "shape.0"),
        ("permute", {"dims": [0, 0, 1]}, None, "not a permutation"),
        ("transpose", {"dim0": 1, "dim1": 99}, None, "dim1"),
        ("add", {}, None, "with one input 'other' is required"),
        ("add", {"other": 1}, ["x", "y"], "must be left out"),
        ("mul", {"other": float("nan")}, None, "other"),
        ("mul", {"other": "1e400"}, None, "other"),
        ("cat", {"dim": "1"}, ["x", "y"], "dim: Input should be a valid integer"),
        ("softmax", {"dim": 1, "datatype": "FP128"}, None, "datatype"),
        ("interpolate", {"size": [4], "scale_factor": [2.0]}, None, "exactly one of 'size' or 'scale_factor'"),
        ("interpolate", {"scale_factor": [2.0], "mode": "nearest", "align_corners": True}, None, "align_corners"),
        ("pad", {"pad": [1]}, None, "pad"),
        ("pad", {"pad": [1, 1], "mode": "reflect", "value": 1.0}, None, "only for mode 'constant'"),
        ("einsum", {"equation": "ij;import os"}, None, "equation"),
        ("scaled_dot_product_attention", {}, ["x"], "takes 3..4 input(s), got 1"),
        ("full", {"size": [-1, 3], "fill_value": 0}, ["x"], "no -1 sizes"),
        ("full", {"size": [2, 3], "fill_value": 0}, ["x"], "function full takes 0 input(s), got 1"),
        ("split", {"split_size": 0}, None, "split_size"),
        ("chunk", {"chunks": 1000}, None, "chunks"),
        ("hardtanh", {"min_val": 2.0, "max_val": 1.0}, None, "must not exceed"),
        ("sum", {"dim": [1]}, ["x", "y"], "takes no args"),
        ("getitem", {"index": -1}, None, "index"),
        ("where", {}, ["x", "y"], "takes 3 input(s), got 2"),
        ("index", {"dims": [1, 1]}, ["x", "y", "y"], "strictly increasing"),
        ("index", {"dims": [1, 2]}, ["x", "y"], "2 dims need 3 inputs"),
    ],
)
def test_bad_arguments_are_refused_naming_the_node(
    name: str, args: dict[str, Any], inputs: list[str] | None, needle: str
) -> None:
    assert needle in _bad(name, args, inputs).message


def test_unknown_function_names_the_node() -> None:
    e = _bad("eval", {})
    assert "unknown function 'eval'" in e.message


def test_getitem_on_a_tensor_and_a_tuple_as_a_tensor_are_shape_errors() -> None:
    base = {"name": "t", "inputs": [{"name": "x", "shape": [-1, 4, 6]}], "outputs": [{"name": "out", "node": "g"}]}
    with pytest.raises(SpecError, match="getitem reads 'x', which is not a tuple"):
        from_spec({**base, "nodes": [{"id": "g", "function": "getitem", "inputs": ["x"], "args": {"index": 0}}]})
    with pytest.raises(SpecError, match="'s' is a tuple of 2 tensors; read it through getitem"):
        from_spec(
            {
                **base,
                "nodes": [
                    {"id": "s", "function": "chunk", "inputs": ["x"], "args": {"chunks": 2}},
                    {"id": "g", "function": "relu", "inputs": ["s"]},
                ],
            }
        )
    with pytest.raises(SpecError, match="a tuple of 2 tensors; select one with a getitem"):
        from_spec(
            {
                **base,
                "outputs": [{"name": "out", "node": "s"}],
                "nodes": [{"id": "s", "function": "chunk", "inputs": ["x"], "args": {"chunks": 2}}],
            }
        )

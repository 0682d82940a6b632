"""Weight statistics (checked against numpy) and the versions that changed a node."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from morphserve.graph import LiveModel, NotFoundError, spec_json
from morphserve.graph import stats as stats_module
from morphserve.graph.stats import node_history, node_weights, spec_fingerprints, tensor_stats

from .helpers import base


def _numpy_stats(a: np.ndarray) -> tuple[float, float, float, float]:
    x = a.astype(np.float64).ravel()
    x = x[np.isfinite(x)]
    return float(x.mean()), float(x.std()), float(x.min()), float(x.max())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64, torch.int64, torch.bfloat16])
def test_tensor_stats_match_numpy(dtype: torch.dtype) -> None:
    t = (torch.randn(37, 53, generator=torch.Generator().manual_seed(1)) * 3 + 0.5).to(dtype)
    s = tensor_stats("weight", "parameter", t)
    ref = _numpy_stats(t.to(torch.float64).numpy())
    assert (s.name, s.kind, s.shape, s.numel, s.nonfinite) == ("weight", "parameter", [37, 53], 37 * 53, 0)
    np.testing.assert_allclose([s.mean, s.std, s.min, s.max], ref, rtol=1e-12, atol=1e-12)


def test_tensor_stats_skip_non_finite_values_and_count_them() -> None:
    t = torch.tensor([1.0, float("nan"), 3.0, float("inf"), -float("inf"), 5.0])
    s = tensor_stats("w", "parameter", t)
    assert s.nonfinite == 3
    assert (s.mean, s.min, s.max) == (3.0, 1.0, 5.0)
    assert s.std == pytest.approx(np.std([1.0, 3.0, 5.0]))


def test_tensor_stats_of_empty_and_all_nan_tensors_are_none() -> None:
    for t in (torch.empty(0, 4), torch.full((3,), float("nan"))):
        s = tensor_stats("w", "buffer", t)
        assert (s.mean, s.std, s.min, s.max) == (None, None, None, None)
        assert s.nonfinite == t.numel()


def test_tensor_stats_in_chunks_agree_with_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    t = torch.randn(10_001, generator=torch.Generator().manual_seed(2))
    whole = tensor_stats("w", "parameter", t)
    monkeypatch.setattr(stats_module, "_CHUNK", 97)
    chunked = tensor_stats("w", "parameter", t)
    np.testing.assert_allclose(
        [chunked.mean, chunked.std, chunked.min, chunked.max], [whole.mean, whole.std, whole.min, whole.max], rtol=1e-12
    )


def test_node_weights_of_a_layer_parameters_then_buffers() -> None:
    v = base("resnet")
    w = node_weights(v, "stem_bn")
    assert (w.model, w.version, w.node) == ("resnet", 1, "stem_bn")
    names = [(t.name, t.kind) for t in w.tensors]
    assert names == [
        ("weight", "parameter"),
        ("bias", "parameter"),
        ("running_mean", "buffer"),
        ("running_var", "buffer"),
        ("num_batches_tracked", "buffer"),
    ]
    bn = v.modules["stem_bn"]
    for t in w.tensors:
        ref = _numpy_stats(getattr(bn, t.name).detach().to(torch.float64).numpy())
        np.testing.assert_allclose([t.mean, t.std, t.min, t.max], ref, rtol=1e-12, atol=1e-15)
    assert w.tensors[4].dtype == "INT64"


def test_node_weights_of_functions_and_io_are_empty_and_unknown_nodes_404() -> None:
    v = base("resnet")
    assert node_weights(v, "s1b1_add").tensors == []
    assert node_weights(v, "input").tensors == [] and node_weights(v, "output").tensors == []
    with pytest.raises(NotFoundError) as e:
        node_weights(v, "nope")
    assert e.value.fields == {"node": "nope"}


def _history(live: LiveModel, node: str):  # type: ignore[no-untyped-def]
    """As the journal rows would say it: each version's spec, and a digest per layer (here: the module's identity,
    which changes exactly when the tensors do, since unchanged layers are shared between versions)."""
    rows = [
        (
            v.version,
            v.parent,
            v.created_at,
            v.ops,
            spec_fingerprints(spec_json(v), {n: str(id(m)) for n, m in v.modules.items()}),
        )
        for v in live.versions()
    ]
    return node_history(live.name, node, rows)


def test_node_history_across_edits() -> None:
    live = LiveModel(base("digits"))
    for ops in (
        [
            {
                "op": "insert",
                "after": "fc2",
                "name": "extra",
                "init": "identity",
                "layer": {"type": "Linear", "in_features": 64, "out_features": 64},
            }
        ],
        [{"op": "set_weights", "node": "fc3", "tensors": {"bias": {"shape": [10], "data": [0.0] * 10}}}],
        [{"op": "replace", "node": "extra", "layer": {"type": "Linear", "in_features": 64, "out_features": 64}}],
        [{"op": "remove", "node": "extra"}],
    ):
        live.commit(live.propose(ops))
    extra = _history(live, "extra").versions
    assert [(v.version, v.change, v.what) for v in extra] == [
        (2, "added", []),
        (4, "changed", ["weights"]),
        (5, "removed", []),
    ]
    assert extra[0].ops[0]["name"] == "extra" and extra[0].parent == 1
    relu2 = _history(live, "relu2").versions  # its input was rewired twice
    assert [(v.version, v.change, v.what) for v in relu2] == [
        (1, "added", []),
        (2, "changed", ["inputs"]),
        (5, "changed", ["inputs"]),
    ]
    assert [(v.version, v.what) for v in _history(live, "fc3").versions] == [(1, []), (3, ["weights"])]
    live.commit(live.propose_rollback(1))
    assert [v.version for v in _history(live, "fc3").versions] == [1, 3, 6]  # rolling back restores old weights
    with pytest.raises(NotFoundError):
        _history(live, "never")


def test_node_history_from_journal_rows_uses_specs_and_blob_digests() -> None:
    spec = {
        "nodes": [
            {"id": "a", "layer": {"type": "Linear"}, "inputs": ["x"]},
            {"id": "b", "function": "relu", "args": {}, "inputs": ["a"]},
        ]
    }
    same = spec_fingerprints(spec, {"a": "d1"})
    reweighted = spec_fingerprints(spec, {"a": "d2"})
    rows = [(1, None, 1.0, [], same), (2, 1, 2.0, [{"op": "set_weights"}], reweighted), (3, 2, 3.0, [], reweighted)]
    h = node_history("m", "a", rows)
    assert [(v.version, v.change, v.what) for v in h.versions] == [(1, "added", []), (2, "changed", ["weights"])]
    # a parent gc deleted: the node counts as added in the first version still known
    assert [v.version for v in node_history("m", "b", rows[1:]).versions] == [2]

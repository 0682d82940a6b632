"""Version history: numbering, propose/commit, rollback, and parameter sharing between versions."""

from __future__ import annotations

import pytest
import torch

from morphserve.graph import LiveModel, NotFoundError, apply_edit, diff
from morphserve.graph.live import ConflictError

from .helpers import Snapshot, base, example, live, max_diff, new_bytes, run, storage_ptrs


def _lin(f: int) -> dict:
    return {"type": "Linear", "in_features": f, "out_features": f}


def test_versions_are_numbered_with_parents_and_ops() -> None:
    lm = live("digits")
    assert lm.name == "digits" and lm.current.version == 1 and lm.current.parent is None
    v2 = lm.propose([{"op": "insert", "after": "relu1", "layer": _lin(128), "init": "identity"}])
    lm.commit(v2)
    v3 = lm.propose([{"op": "remove", "node": "linear_1"}], if_version=2)
    lm.commit(v3)
    assert [(v.version, v.parent) for v in lm.versions()] == [(1, None), (2, 1), (3, 2)]
    assert lm.get(2) is v2 and lm.get() is v3 and lm.current is v3
    assert v3.ops == ({"op": "remove", "node": "linear_1"},)
    assert v2.created_at <= v3.created_at
    with pytest.raises(NotFoundError):
        lm.get(9)


def test_commit_refuses_out_of_order_and_foreign_versions() -> None:
    lm = live("digits")
    v2 = lm.propose([{"op": "remove", "node": "relu1"}])
    other = live("mlp").propose([{"op": "remove", "node": "relu1"}])
    with pytest.raises(ConflictError):
        lm.commit(other)  # another model's version
    lm.commit(v2)
    with pytest.raises(ConflictError):
        lm.commit(v2)  # twice
    assert [v.version for v in lm.versions()] == [1, 2]


def test_propose_is_pure() -> None:
    lm = live("convnet")
    snap = Snapshot.take(lm)
    for _ in range(3):
        lm.propose([{"op": "insert", "after": "relu1_1", "layer": {"type": "Dropout"}}])
    snap.check()


def test_rollback_is_a_new_version_equal_to_the_target() -> None:
    lm = live("digits")
    v1 = lm.current
    x = example(v1)
    lm.commit(lm.propose([{"op": "insert", "after": "relu1", "name": "extra", "layer": _lin(128)}]))
    lm.commit(
        lm.propose(
            [{"op": "replace", "node": "fc3", "layer": {"type": "Linear", "in_features": 64, "out_features": 10}}]
        )
    )
    v3 = lm.current
    assert max_diff(run(v1, x), run(v3, x)) > 1e-3
    rb = lm.propose_rollback(1, if_version=3)
    assert lm.current is v3  # proposing a rollback commits nothing
    lm.commit(rb)
    v4 = lm.current
    assert (v4.version, v4.parent, v4.ops) == (4, 3, ({"op": "rollback", "to": 1},))
    assert v4 is not v1
    assert v4.spec == v1.spec
    assert dict(v4.modules).keys() == dict(v1.modules).keys()
    for k, m in v1.modules.items():
        assert v4.modules[k] is m  # the very same modules, no copies
    assert all(torch.equal(a, b) for a, b in zip(run(v1, x), run(v4, x), strict=True))
    d = diff(v1, v4)
    assert (d.added, d.removed, d.changed, d.outputs_changed) == ([], [], [], False)
    # and rolling forward again to v3
    lm.commit(lm.propose_rollback(3))
    v5 = lm.current
    assert all(v5.modules[k] is m for k, m in v3.modules.items())
    assert torch.equal(run(v5, x)[0], run(v3, x)[0])
    # earlier versions are untouched by all of this
    assert [v.version for v in lm.versions()] == [1, 2, 3, 4, 5]


def test_rollback_refusals() -> None:
    lm = live("mlp")
    lm.commit(lm.propose([{"op": "remove", "node": "relu1"}]))
    snap = Snapshot.take(lm)
    with pytest.raises(NotFoundError):
        lm.propose_rollback(7)
    with pytest.raises(ConflictError):
        lm.propose_rollback(1, if_version=1)
    snap.check()


def test_forget_keeps_the_current_version() -> None:
    lm = live("digits")
    lm.commit(lm.propose([{"op": "remove", "node": "relu1"}]))
    lm.forget(2)
    assert lm.current.version == 2
    lm.forget(1)
    assert [v.version for v in lm.versions()] == [2]


# ------------------------------------------------------------------------------------------- parameter sharing


def test_unchanged_layers_share_parameters_and_memory_grows_by_the_new_layer() -> None:
    lm = live("mlp")
    v1 = lm.current
    # a small layer: an identity Linear 10x10 after the classifier
    v2 = lm.propose([{"op": "insert", "after": "fc3", "name": "head", "layer": _lin(10), "init": "identity"}])
    lm.commit(v2)
    for k, m in v1.modules.items():
        assert v2.modules[k] is m
        for (n1, p1), (n2, p2) in zip(m.named_parameters(), v2.modules[k].named_parameters(), strict=True):
            assert n1 == n2 and p1.data_ptr() == p2.data_ptr()
    sd1, sd2 = v1.state_dict(), v2.state_dict()
    for k, t in sd1.items():
        assert sd2[k].data_ptr() == t.data_ptr()
    head_bytes = sum(p.numel() * p.element_size() for p in v2.modules["head"].parameters())
    assert head_bytes == (10 * 10 + 10) * 4
    assert new_bytes(v1, v2) == head_bytes
    total = sum(t.untyped_storage().nbytes() for t in sd2.values())
    assert total > 4_000 * head_bytes  # the model is ~2.1 MB; the version added 440 bytes


def test_memory_per_edit_is_the_size_of_what_changed() -> None:
    v1 = base("mlp")
    # replacing fc2 (512x512) costs exactly fc2's new tensors; nothing else is copied
    v2 = apply_edit(v1, [{"op": "replace", "node": "fc2", "layer": _lin(512), "keep_weights": True}], version=2)
    assert new_bytes(v1, v2) == (512 * 512 + 512) * 4
    # set_weights on fc3 copies only fc3
    v3 = apply_edit(
        v2, [{"op": "set_weights", "node": "fc3", "tensors": {"bias": {"shape": [10], "data": [0.0] * 10}}}], version=3
    )
    assert new_bytes(v2, v3) == (10 * 512 + 10) * 4
    # remove adds nothing; a rollback adds nothing
    v4 = apply_edit(v3, [{"op": "remove", "node": "relu1"}], version=4)
    assert new_bytes(v3, v4) == 0
    lm = LiveModel(v1)
    lm.commit(lm.propose([{"op": "remove", "node": "relu2"}]))
    rb = lm.propose_rollback(1)
    assert new_bytes(v1, rb) == 0 and storage_ptrs(rb) == storage_ptrs(v1)


def test_graph_module_shares_the_version_modules() -> None:
    v1 = base("digits")
    v2 = apply_edit(v1, [{"op": "insert", "after": "relu2", "layer": _lin(64), "init": "identity"}], version=2)
    gm1, gm2 = v1.graph_module, v2.graph_module
    assert gm1 is not gm2
    assert gm2.get_submodule("fc1") is gm1.get_submodule("fc1") is v1.modules["fc1"]
    assert v2.graph_module is gm2  # built once, cached

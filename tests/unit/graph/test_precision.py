"""Half precision: a compute datatype for the whole model, cast at its boundary (app/morphserve/graph/precision.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from morphserve.graph import EditError, LiveModel, from_spec, load_zoo, read_bundle
from morphserve.graph.bundle import bundle_bytes
from morphserve.graph.edits import recast
from morphserve.store import Store
from morphserve.store.memory import MemoryBlobs, MemoryJournal

X = torch.rand(5, 64, generator=torch.Generator().manual_seed(0))
IDENTITY = {
    "op": "insert",
    "after": "fc1",
    "init": "identity",
    "layer": {"type": "Linear", "in_features": 128, "out_features": 128},
}


@pytest.mark.parametrize("datatype", ["BF16", "FP16"])
def test_cast_computes_in_half_and_keeps_the_wire_datatypes(datatype: str) -> None:
    live = LiveModel(load_zoo("digits"))
    ref = live.current.run(X)[0]
    v2 = live.propose([{"op": "cast", "datatype": datatype}])
    live.commit(v2)
    y = v2.run(X)[0]
    assert v2.spec.compute_datatype == datatype
    assert [t.datatype for t in v2.inputs] == ["FP32"] and [o.datatype for o in v2.outputs] == ["FP32"]
    assert y.dtype == torch.float32
    assert all(p.dtype != torch.float32 for m in v2.modules.values() for p in m.parameters())
    assert torch.allclose(y, ref, atol=0.1 * ref.abs().max().item())  # half precision, not another model
    assert all(p.dtype == torch.float32 for m in live.get(1).modules.values() for p in m.parameters())  # parent kept


def test_identity_inserts_and_weights_keep_the_models_datatype() -> None:
    live = LiveModel(load_zoo("digits"))
    live.commit(live.propose([{"op": "cast", "datatype": "BF16"}]))
    before = live.current.run(X)[0]
    v3 = live.propose([IDENTITY])
    live.commit(v3)
    assert v3.modules["linear_1"].weight.dtype == torch.bfloat16
    assert torch.equal(v3.run(X)[0], before)  # an identity is exact in BF16 too
    v4 = live.propose(
        [
            {
                "op": "set_weights",
                "node": "fc3",
                "tensors": {  # FP32 values for a BF16 layer
                    "weight": {"shape": [10, 64], "data": [0.0] * 640},
                    "bias": {"shape": [10], "data": [1.5] * 10},
                },
            }
        ]
    )
    assert v4.modules["fc3"].bias.dtype == torch.bfloat16
    assert torch.equal(v4.run(X)[0], torch.full((5, 10), 1.5))


def test_casting_back_and_rolling_back() -> None:
    live = LiveModel(load_zoo("digits"))
    ref = live.current.run(X)[0]
    live.commit(live.propose([{"op": "cast", "datatype": "BF16"}]))
    with pytest.raises(EditError, match="already"):
        live.propose([{"op": "cast", "datatype": "BF16"}])
    back = live.propose_rollback(1)
    assert back.spec.compute_datatype is None and torch.equal(back.run(X)[0], ref)
    fp32 = live.propose([{"op": "cast", "datatype": "FP32"}])
    assert fp32.spec.compute_datatype is None and fp32.modules["fc1"].weight.dtype == torch.float32


def test_recast_makes_version_1_in_half_precision() -> None:
    v = recast(load_zoo("digits"), "BF16")
    assert (v.version, v.parent, v.spec.compute_datatype) == (1, None, "BF16")
    assert recast(v, "BF16") is v


def test_a_half_precision_version_round_trips_through_a_bundle_and_the_store(tmp_path: Path) -> None:
    live = LiveModel(load_zoo("digits"))
    v2 = live.propose([{"op": "cast", "datatype": "BF16"}])
    live.commit(v2)
    path = tmp_path / "b.zip"
    path.write_bytes(bundle_bytes(v2))
    spec, tensors = read_bundle(path)
    assert spec["compute_datatype"] == "BF16" and tensors is not None and tensors["fc1.weight"].dtype == torch.bfloat16
    assert torch.equal(from_spec(spec, tensors).run(X)[0], v2.run(X)[0])
    store = Store(MemoryJournal(), MemoryBlobs())
    store.commit(live.get(1), create=True)  # a new model: its first row
    store.commit(v2)
    loaded = store.load("digits", 2)
    assert loaded.spec.compute_datatype == "BF16" and torch.equal(loaded.run(X)[0], v2.run(X)[0])

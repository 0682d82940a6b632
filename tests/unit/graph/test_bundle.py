"""Spec + safetensors export/import: bit-identical round trips, files on disk, strict weight loading."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as st_load

from morphserve.graph import SpecError, apply_edit, from_spec, read_bundle, spec_json, weights_bytes

from .helpers import MODELS, base, example, run


def _round_trip(v):
    spec = json.loads(json.dumps(spec_json(v)))  # really plain JSON
    return from_spec(spec, st_load(weights_bytes(v)))


def _assert_bit_identical(a, b, x) -> None:
    oa, ob = run(a, x), run(b, x)
    assert len(oa) == len(ob)
    for p, q in zip(oa, ob, strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("model", MODELS)
def test_round_trip_zoo_models_bit_identical(model: str) -> None:
    v = base(model)
    w = _round_trip(v)
    assert w.spec == v.spec and w.model == model
    head = v.outputs[0].node
    assert w.modules[head] is not v.modules[head]
    _assert_bit_identical(v, w, example(v, batch=5))
    sd_v, sd_w = v.state_dict(), w.state_dict()
    assert sd_v.keys() == sd_w.keys() and all(torch.equal(sd_v[k], sd_w[k]) for k in sd_v)


@pytest.mark.parametrize("model", MODELS)
def test_round_trip_after_edits(model: str) -> None:
    v1 = base(model)
    relus = [n.id for n in v1.spec.nodes if n.layer is not None and n.layer.type == "ReLU"]
    out = v1.outputs[0].node
    bn = {"type": "BatchNorm1d", "num_features": 10}
    v2 = apply_edit(
        v1,
        [
            {"op": "insert", "after": out, "name": "head_bn", "layer": bn},
            {
                "op": "set_weights",
                "node": "head_bn",
                "tensors": {
                    "running_mean": {"shape": [10], "data": [0.1 * i for i in range(10)]},
                    "weight": {"shape": [10], "data": [1.5] * 10},
                },
            },
            {"op": "remove", "node": relus[0]},
            {"op": "replace", "node": relus[-1], "layer": {"type": "LeakyReLU", "negative_slope": 0.2}},
        ],
        version=2,
    )
    w = _round_trip(v2)
    assert w.version == 1 and w.spec == v2.spec
    _assert_bit_identical(v2, w, example(v2, batch=4, seed=9))
    # and it is not trivially identical to the original
    assert not torch.equal(run(v1, example(v1))[0], run(w, example(v1))[0])


def test_weights_keys_and_metadata() -> None:
    v = base("digits")
    data = weights_bytes(v)
    tensors = st_load(data)
    assert set(tensors) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"}
    assert tensors["fc1.weight"].shape == (128, 64)


def test_from_spec_without_weights_is_seeded() -> None:
    spec = spec_json(base("mlp"))
    a, b, c = from_spec(spec, seed=1), from_spec(spec, seed=1), from_spec(spec, seed=2)
    x = example(a)
    _assert_bit_identical(a, b, x)
    assert not torch.equal(run(a, x)[0], run(c, x)[0])
    assert from_spec(spec, name="renamed").model == "renamed"


def test_read_bundle_file_dir_and_zip(tmp_path: Path) -> None:
    v = base("digits")
    spec, weights = spec_json(v), weights_bytes(v)
    x = example(v)
    # x.json + x.safetensors beside it
    (tmp_path / "m.json").write_text(json.dumps(spec))
    (tmp_path / "m.safetensors").write_bytes(weights)
    # a directory export
    d = tmp_path / "export"
    d.mkdir()
    (d / "spec.json").write_text(json.dumps(spec))
    (d / "weights.safetensors").write_bytes(weights)
    # a zip export
    z = tmp_path / "export.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("spec.json", json.dumps(spec))
        f.writestr("weights.safetensors", weights)
    for path in (tmp_path / "m.json", d, z):
        s, t = read_bundle(path)
        assert t is not None
        _assert_bit_identical(v, from_spec(s, t), x)
    # a spec alone: no weights
    (tmp_path / "alone.json").write_text(json.dumps(spec))
    s, t = read_bundle(tmp_path / "alone.json")
    assert t is None and s == spec
    with pytest.raises(SpecError):
        read_bundle(tmp_path / "missing.json")


def test_load_refuses_mismatched_weights() -> None:
    v = base("digits")
    spec = spec_json(v)
    tensors = dict(st_load(weights_bytes(v)))
    with pytest.raises(SpecError, match=r"missing \['fc3.bias'\]"):
        from_spec(spec, {k: t for k, t in tensors.items() if k != "fc3.bias"})
    with pytest.raises(SpecError, match=r"unexpected \['fc9.weight'\]"):
        from_spec(spec, {**tensors, "fc9.weight": torch.zeros(1)})
    with pytest.raises(SpecError, match="'fc3.bias' is torch.float32 \\[5\\]"):
        from_spec(spec, {**tensors, "fc3.bias": torch.zeros(5)})
    with pytest.raises(SpecError, match="'fc3.bias' is torch.float64"):
        from_spec(spec, {**tensors, "fc3.bias": torch.zeros(10, dtype=torch.float64)})


def test_spec_declared_output_must_match() -> None:
    spec = spec_json(base("digits"))
    spec["outputs"][0]["shape"] = [-1, 11]
    with pytest.raises(SpecError, match=r"declared \[-1, 11\] but node 'fc3' produces \[-1, 10\]"):
        from_spec(spec)

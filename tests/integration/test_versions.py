"""Durable versions through the API: restore, corruption at start, --fresh, pin, gc, export, evicted versions."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from morphserve.graph import from_spec, read_bundle
from morphserve.serving.metrics import Metrics
from morphserve.serving.registry import Registry
from morphserve.settings import Settings
from tests.conftest import AUTH
from tests.integration.helpers import assert_error, head_ops

X = [[0.5] * 64]


def _bias_edit(client: TestClient, value: float) -> int:
    r = client.post(
        "/v1/models/digits/edits",
        headers=AUTH,
        json={
            "ops": [{"op": "set_weights", "node": "fc3", "tensors": {"bias": {"shape": [10], "data": [value] * 10}}}]
        },
    )
    assert r.status_code == 200, r.text
    return int(r.json()["version"])


def _infer(client: TestClient, version: int | None = None) -> tuple[int, list[float]]:
    path = "/v2/models/digits" + (f"/versions/{version}" if version else "") + "/infer"
    r = client.post(path, json={"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": X[0]}]})
    assert r.status_code == 200, r.text
    return int(r.json()["model_version"]), r.json()["outputs"][0]["data"]


def test_restart_restores_last_version_and_history(make_client: Callable[..., TestClient], tmp_path: Path) -> None:
    a = make_client(state_dir=tmp_path / "s")
    for i in range(3):
        _bias_edit(a, float(i))
    before = _infer(a)
    a.__exit__(None, None, None)
    b = make_client(state_dir=tmp_path / "s")
    assert _infer(b) == before
    versions = b.get("/v1/models/digits/versions").json()
    assert [v["version"] for v in versions["versions"]] == [1, 2, 3, 4] and versions["current"] == 4
    assert versions["versions"][2]["ops"][0]["op"] == "set_weights"


def test_fresh_starts_empty(make_client: Callable[..., TestClient], tmp_path: Path) -> None:
    a = make_client(state_dir=tmp_path / "s")
    _bias_edit(a, 1.0)
    a.__exit__(None, None, None)
    b = make_client(state_dir=tmp_path / "s", fresh=True)
    assert b.get("/v1/models/digits").json()["version"] == 1


def test_evicted_versions_come_back_for_infer_graph_diff_rollback(make_client: Callable[..., TestClient]) -> None:
    c = make_client(resident_versions=2)
    outputs = {}
    for i in range(2, 7):
        assert _bias_edit(c, float(i)) == i
        outputs[i] = _infer(c)[1]
    assert c.get("/v1/models/digits").json()["resident_versions"] == [5, 6]
    assert _infer(c, 3) == (3, outputs[3])
    assert c.get("/v1/models/digits/graph", params={"version": 2}).json()["version"] == 2
    assert c.get("/v1/models/digits/diff", params={"from": 2, "to": 3}).json()["changed"][0]["id"] == "fc3"
    r = c.post("/v1/models/digits/rollback", headers=AUTH, json={"version": 2})
    assert r.status_code == 200 and r.json()["version"] == 7
    assert _infer(c) == (7, outputs[2])


def test_pin_and_gc(make_client: Callable[..., TestClient]) -> None:
    c = make_client()
    for i in range(5):
        _bias_edit(c, float(i))  # versions 2..6
    assert c.post("/v1/models/digits/versions/3/pin").status_code == 401
    assert c.post("/v1/models/digits/versions/3/pin", headers=AUTH).json()["pinned"] is True
    assert c.post("/v1/models/digits/versions/42/pin", headers=AUTH).status_code == 404
    r = c.post("/v1/models/digits/gc", headers=AUTH, json={"keep": 1})
    assert r.status_code == 200, r.text
    assert r.json()["removed_versions"] == [1, 2, 4, 5] and r.json()["removed_blobs"] >= 1
    listed = c.get("/v1/models/digits/versions").json()["versions"]
    assert [(v["version"], v["pinned"]) for v in listed] == [(3, True), (6, False)]
    assert c.get("/v1/models/digits/graph", params={"version": 2}).status_code == 404
    assert c.post("/v1/models/digits/gc", headers=AUTH, json={"keep": 0}).status_code == 422


def test_export_round_trip_is_bit_identical(make_client: Callable[..., TestClient], tmp_path: Path) -> None:
    c = make_client()
    c.post(
        "/v1/models/digits/layers",
        headers=AUTH,
        json={
            "after": "relu1",
            "layer": {"type": "Residual", "body": [{"type": "Linear", "in_features": 128, "out_features": 128}]},
            "seed": 3,
        },
    )
    r = c.get("/v1/models/digits/versions/2/export")
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    z = zipfile.ZipFile(io.BytesIO(r.content))
    assert set(z.namelist()) == {"spec.json", "weights.safetensors"}
    path = tmp_path / "digits-v2.zip"
    path.write_bytes(r.content)
    spec, tensors = read_bundle(path)
    loaded = from_spec(spec, tensors)
    x = np.random.default_rng(0).random((3, 64), dtype=np.float32)
    served = c.post("/v1/models/digits/infer", json={"inputs": x.tolist()}).json()["outputs"]
    assert np.array_equal(loaded.run(torch.from_numpy(x))[0].numpy(), np.asarray(served, dtype=np.float32))
    assert json.loads(z.read("spec.json"))["nodes"][2]["layer"]["type"] == "Residual"
    # and the server loads the export back as a model
    other = make_client(models=[f"copy={path}"], state_dir=tmp_path / "other")
    out = other.post("/v1/models/copy/infer", json={"inputs": x.tolist()}).json()["outputs"]
    assert np.array_equal(np.asarray(out, dtype=np.float32), np.asarray(served, dtype=np.float32))


def test_export_onnx(client: TestClient) -> None:
    pytest.importorskip("onnx", reason="ONNX export is an optional extra (pip install 'morphserve[onnx]')")
    pytest.importorskip("onnxscript", reason="ONNX export is an optional extra (pip install 'morphserve[onnx]')")
    import onnx

    r = client.get("/v1/models/digits/versions/1/export", params={"format": "onnx"})
    assert r.status_code == 200, r.text
    model = onnx.load_from_string(r.content)
    assert [i.name for i in model.graph.input] == ["input"]
    assert client.get("/v1/models/digits/versions/9/export").status_code == 404


def _two_models(state: Path) -> None:
    reg = Registry(Settings(models=["digits", "mlp"], state_dir=state), Metrics())
    reg.load_from_settings()
    reg.close()


def test_corrupt_blob_at_start_is_reported_and_other_models_serve(tmp_path: Path) -> None:
    state = tmp_path / "s"
    _two_models(state)
    reg = Registry(Settings(models=[], state_dir=state), Metrics())
    record = reg.store.journal.latest("mlp")  # type: ignore[union-attr]
    assert record is not None
    blob = reg.store.blobs.path(record.blobs["fc2"])  # type: ignore[union-attr]
    reg.close()
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    corrupted = blob.read_bytes()
    reg = Registry(Settings(models=["digits", "mlp"], state_dir=state), Metrics())
    reg.load_from_settings()
    try:
        assert reg.names() == ["digits"]
        assert str(blob) in reg.failed["mlp"]
        assert blob.read_bytes() == corrupted  # nothing overwritten, not even by `--model mlp`
        assert reg.store.journal.latest("mlp") == record  # type: ignore[union-attr]
    finally:
        reg.close()


def test_unreadable_journal_serves_models_in_memory_refuses_edits_and_is_left_alone(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    state = tmp_path / "s"
    state.mkdir()
    journal = state / "journal.sqlite3"
    journal.write_bytes(b"garbage" * 1000)
    c = make_client(state_dir=state)
    assert c.get("/v2/health/ready").json() == {"ready": True}  # it serves what it was asked to
    assert _infer(c)[0] == 1
    assert c.get("/v1/models/digits/versions").json()["current"] == 1
    r = c.post("/v1/models/digits/edits", headers=AUTH, json={"ops": head_ops(1.0)})
    body = assert_error(r, 503, str(journal))
    assert "Retry-After" not in r.headers  # retrying cannot help until an operator acts
    assert "error" in body and journal.read_bytes() == b"garbage" * 1000
    assert _infer(c)[0] == 1


def test_a_reloaded_old_version_is_cached_within_the_resident_budget(make_client: Callable[..., TestClient]) -> None:
    """Views of an evicted version load it from the store once (off the event loop), not on every request."""
    c = make_client(resident_versions=2)
    for i in range(2, 6):
        assert _bias_edit(c, float(i)) == i
    store = c.app.state.registry.store  # type: ignore[attr-defined]
    loads: list[int | None] = []
    real = store.load

    def counting(model: str, version: int | None = None, previous: object = None) -> object:
        loads.append(version)
        return real(model, version, previous)  # type: ignore[arg-type]

    store.load = counting
    for _ in range(3):
        assert c.get("/v1/models/digits/graph", params={"version": 2}).json()["version"] == 2
        assert c.get("/v1/models/digits/diff", params={"from": 2, "to": 3}).status_code == 200
    assert loads.count(2) == 1 and loads.count(3) == 1
    # A third evicted version pushes the least recently used one (2) out of the cache of 2 ...
    assert c.get("/v1/models/digits/graph", params={"version": 1}).status_code == 200
    assert c.get("/v1/models/digits/graph", params={"version": 2}).status_code == 200  # ... so it loads again
    assert loads.count(2) == 2

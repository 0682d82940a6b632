"""The node routes (weights summary, versions that changed a node) and the catalogue schema route."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from fastapi.testclient import TestClient
from pydantic import TypeAdapter
from safetensors.numpy import load as load_safetensors

from morphserve.graph.catalogue import LAYER_TYPES, LayerSpec
from tests.conftest import AUTH
from tests.integration.helpers import assert_error


def _tensors(client: TestClient, model: str, version: int) -> dict[str, np.ndarray]:
    """Every tensor of a version, from its export (the same bytes the server computes on)."""
    import zipfile

    r = client.get(f"/v1/models/{model}/versions/{version}/export")
    assert r.status_code == 200
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        return load_safetensors(z.read("weights.safetensors"))


def _check(summary: dict, ref: dict[str, np.ndarray], node: str) -> None:
    assert summary["node"] == node
    names = [t["name"] for t in summary["tensors"]]
    assert names and set(names) == {k.split(".", 1)[1] for k in ref if k.startswith(node + ".")}
    for t in summary["tensors"]:
        a = ref[f"{node}.{t['name']}"].astype(np.float64)
        assert t["shape"] == list(a.shape) and t["numel"] == a.size
        np.testing.assert_allclose(
            [t["mean"], t["std"], t["min"], t["max"]], [a.mean(), a.std(), a.min(), a.max()], rtol=1e-9, atol=1e-12
        )


def test_weights_summary_matches_numpy_at_each_version(client: TestClient) -> None:
    v1 = client.get("/v1/models/digits/nodes/fc3/weights").json()
    assert v1["version"] == 1 and v1["model"] == "digits"
    _check(v1, _tensors(client, "digits", 1), "fc3")
    assert [(t["name"], t["kind"], t["dtype"]) for t in v1["tensors"]] == [
        ("weight", "parameter", "FP32"),
        ("bias", "parameter", "FP32"),
    ]
    r = client.post(
        "/v1/models/digits/edits",
        headers=AUTH,
        json={
            "ops": [
                {
                    "op": "set_weights",
                    "node": "fc3",
                    "tensors": {"bias": {"shape": [10], "data": [float(i) for i in range(10)]}},
                }
            ]
        },
    )
    assert r.status_code == 200, r.text
    v2 = client.get("/v1/models/digits/nodes/fc3/weights").json()
    assert v2["version"] == 2
    bias = next(t for t in v2["tensors"] if t["name"] == "bias")
    assert (bias["min"], bias["max"], bias["mean"]) == (0.0, 9.0, 4.5)
    assert bias["std"] == np.std(np.arange(10.0))
    again = client.get("/v1/models/digits/nodes/fc3/weights", params={"version": 1}).json()
    assert again == v1  # an old version on request


def test_weights_summary_of_batchnorm_includes_buffers(make_client: Callable[..., TestClient]) -> None:
    client = make_client(models=["resnet"])
    s = client.get("/v1/models/resnet/nodes/stem_bn/weights").json()
    assert [t["kind"] for t in s["tensors"]] == ["parameter", "parameter", "buffer", "buffer", "buffer"]
    _check(s, _tensors(client, "resnet", 1), "stem_bn")
    assert client.get("/v1/models/resnet/nodes/s1b1_add/weights").json()["tensors"] == []


def test_weights_summary_errors(client: TestClient) -> None:
    assert_error(client.get("/v1/models/nope/nodes/fc1/weights"), 404, "nope")
    body = assert_error(client.get("/v1/models/digits/nodes/fc9/weights"), 404, "fc9")
    assert body["node"] == "fc9"
    assert_error(client.get("/v1/models/digits/nodes/fc1/weights", params={"version": 7}), 404)
    assert_error(client.get("/v1/models/digits/nodes/fc1/weights", params={"version": 0}), 422)


def test_node_versions_from_the_journal(client: TestClient) -> None:
    def post(ops: list[dict]) -> int:
        r = client.post("/v1/models/digits/edits", headers=AUTH, json={"ops": ops})
        assert r.status_code == 200, r.text
        return int(r.json()["version"])

    post(
        [
            {
                "op": "insert",
                "after": "fc2",
                "name": "extra",
                "init": "identity",
                "layer": {"type": "Linear", "in_features": 64, "out_features": 64},
            }
        ]
    )
    post([{"op": "set_weights", "node": "fc3", "tensors": {"bias": {"shape": [10], "data": [1.0] * 10}}}])
    post([{"op": "remove", "node": "extra"}])
    r = client.post("/v1/models/digits/rollback", headers=AUTH, json={"version": 2})
    assert r.status_code == 200
    extra = client.get("/v1/models/digits/nodes/extra/versions").json()
    assert extra["model"] == "digits" and extra["node"] == "extra"
    assert [(v["version"], v["parent"], v["change"]) for v in extra["versions"]] == [
        (2, 1, "added"),
        (4, 3, "removed"),
        (5, 4, "added"),
    ]
    assert extra["versions"][0]["ops"][0]["op"] == "insert"
    fc3 = client.get("/v1/models/digits/nodes/fc3/versions").json()["versions"]
    assert [(v["version"], v["change"], v["what"]) for v in fc3] == [
        (1, "added", []),
        (3, "changed", ["weights"]),
        (5, "changed", ["weights"]),
    ]
    relu2 = client.get("/v1/models/digits/nodes/relu2/versions").json()["versions"]
    assert [(v["version"], v["what"]) for v in relu2] == [(1, []), (2, ["inputs"]), (4, ["inputs"]), (5, ["inputs"])]
    assert_error(client.get("/v1/models/digits/nodes/never/versions"), 404, "never")
    assert_error(client.get("/v1/models/nope/nodes/fc1/versions"), 404, "nope")


def test_catalogue_is_the_layer_schema(client: TestClient) -> None:
    r = client.get("/v1/catalogue")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    schema = r.json()
    assert schema == TypeAdapter(LayerSpec).json_schema()
    assert set(schema["discriminator"]["mapping"]) == set(LAYER_TYPES)
    linear = schema["$defs"]["Linear"]
    assert linear["required"] == ["in_features", "out_features"]
    assert linear["properties"]["in_features"]["minimum"] == 1 and linear["properties"]["bias"]["default"] is True

"""Model management and graph views: list, get, create (zoo and spec), delete; graph json/dot/svg with ETag
and 304; versions; diff."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import AUTH
from tests.integration.helpers import X, assert_error, head_ops, identity_insert

SPEC = {
    "name": "tiny",
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
    "outputs": [{"name": "y", "node": "lin"}],
    "nodes": [{"id": "lin", "layer": {"type": "Linear", "in_features": 4, "out_features": 2}, "inputs": ["x"]}],
}


def _edit(client: TestClient, ops: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    r = client.post("/v1/models/digits/edits", json={"ops": ops, **extra}, headers=AUTH)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


# -- list / get ------------------------------------------------------------------------------------------------
def test_list_models(client: TestClient) -> None:
    r = client.get("/v1/models")
    assert r.status_code == 200
    (m,) = r.json()["models"]
    assert m["name"] == "digits" and m["version"] == 1 and m["versions"] == 1
    assert m["resident_versions"] == [1] and m["device"] == "cpu" and m["queue_depth"] == 0
    assert m["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
    assert m["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 10]}]
    assert m["params"] == 64 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10


def test_get_model_and_404(client: TestClient) -> None:
    r = client.get("/v1/models/digits")
    assert r.status_code == 200 and r.json()["name"] == "digits"
    body = assert_error(client.get("/v1/models/nope"), 404, "nope")
    assert body["model"] == "nope"


# -- create / delete -------------------------------------------------------------------------------------------
def test_create_from_zoo_then_serve_and_delete(client: TestClient) -> None:
    body = {"name": "small", "zoo": "mlp", "options": {"hidden": 16, "depth": 1, "in_features": 8}}
    r = client.post("/v1/models", json=body, headers=AUTH)
    assert r.status_code == 201, r.text
    info = r.json()
    assert info["name"] == "small" and info["version"] == 1
    assert info["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 8]}]
    assert [m["name"] for m in client.get("/v1/models").json()["models"]] == ["digits", "small"]
    out = client.post("/v1/models/small/infer", json={"inputs": [[0.5] * 8]})
    assert out.status_code == 200 and out.json()["model"] == "small"
    assert client.get("/v2/models/small/ready").status_code == 200

    r = client.delete("/v1/models/small", headers=AUTH)
    assert r.status_code == 200 and r.json() == {"deleted": "small"}
    assert_error(client.get("/v1/models/small"), 404)
    assert_error(client.post("/v1/models/small/infer", json={"inputs": [[0.5] * 8]}), 404)
    assert_error(client.get("/v2/models/small/ready"), 404)
    assert_error(client.delete("/v1/models/small", headers=AUTH), 404)
    # the name is free again (deleted from the state dir too)
    r = client.post("/v1/models", json={"name": "small", "zoo": "mlp", "options": {"hidden": 4}}, headers=AUTH)
    assert r.status_code == 201, r.text


def test_create_from_spec(client: TestClient) -> None:
    r = client.post("/v1/models", json={"name": "tiny", "spec": SPEC}, headers=AUTH)
    assert r.status_code == 201, r.text
    assert r.json()["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}]
    assert r.json()["params"] == 4 * 2 + 2
    out = client.post("/v1/models/tiny/infer", json={"inputs": [[1, 2, 3, 4]]})
    assert out.status_code == 200 and len(out.json()["outputs"][0]) == 2
    g = client.get("/v1/models/tiny/graph").json()
    assert [n["id"] for n in g["nodes"]] == ["x", "lin", "y"]


def test_create_errors(client: TestClient) -> None:
    dup = assert_error(client.post("/v1/models", json={"name": "digits", "zoo": "mlp"}, headers=AUTH), 409, "digits")
    assert dup
    assert_error(client.post("/v1/models", json={"name": "a", "zoo": "mlp", "spec": SPEC}, headers=AUTH), 422, "one of")
    assert_error(client.post("/v1/models", json={"name": "a"}, headers=AUTH), 422, "one of")
    assert_error(client.post("/v1/models", json={"name": "a", "zoo": "gpt9"}, headers=AUTH), 404, "gpt9")
    bad_options = {"name": "a", "zoo": "mlp", "options": {"colour": 1}}
    assert_error(client.post("/v1/models", json=bad_options, headers=AUTH), 422, "colour")
    assert_error(client.post("/v1/models", json={"name": "bad name!", "zoo": "mlp"}, headers=AUTH), 422, "name")
    bad_spec = {**SPEC, "outputs": [{"name": "y", "node": "missing"}]}
    assert_error(client.post("/v1/models", json={"name": "a", "spec": bad_spec}, headers=AUTH), 422, "missing")
    shapes = {
        **SPEC,
        "nodes": [{"id": "lin", "layer": {"type": "Linear", "in_features": 5, "out_features": 2}, "inputs": ["x"]}],
    }
    assert_error(client.post("/v1/models", json={"name": "a", "spec": shapes}, headers=AUTH), 422)
    assert_error(client.post("/v1/models", json={"name": "a", "spec": "nope"}, headers=AUTH), 422)
    assert [m["name"] for m in client.get("/v1/models").json()["models"]] == ["digits"]


# -- graph -----------------------------------------------------------------------------------------------------
def test_graph_json_with_etag(client: TestClient) -> None:
    r = client.get("/v1/models/digits/graph")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert r.headers["etag"] == '"1"'
    g = r.json()
    assert g["model"] == "digits" and g["version"] == 1 and g["parent"] is None
    assert [n["id"] for n in g["nodes"]] == ["input", "fc1", "relu1", "fc2", "relu2", "fc3", "output"]
    assert {"source": "fc3", "target": "output"} in g["edges"]
    assert g["totals"]["params"] == client.get("/v1/models/digits").json()["params"]
    fc1 = next(n for n in g["nodes"] if n["id"] == "fc1")
    assert fc1["kind"] == "layer" and fc1["shape"] == [-1, 128] and fc1["layer"]["type"] == "Linear"


def test_graph_if_none_match_304(client: TestClient) -> None:
    r = client.get("/v1/models/digits/graph", headers={"If-None-Match": '"1"'})
    assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == '"1"'
    assert client.get("/v1/models/digits/graph", headers={"If-None-Match": 'W/"1", "7"'}).status_code == 304
    assert client.get("/v1/models/digits/graph", headers={"If-None-Match": '"2"'}).status_code == 200
    _edit(client, [identity_insert()])
    # the cached copy is stale after an edit
    r = client.get("/v1/models/digits/graph", headers={"If-None-Match": '"1"'})
    assert r.status_code == 200 and r.headers["etag"] == '"2"' and r.json()["version"] == 2
    # but an explicit old version still matches its own tag
    r = client.get("/v1/models/digits/graph?version=1", headers={"If-None-Match": '"1"'})
    assert r.status_code == 304


def test_graph_json_is_described_once_per_version_and_revalidated(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The web page fetches a version's graph once and keeps it: the answer says to revalidate (no-cache, with the
    ETag), and the server describes each version once while it holds it (10,000 nodes take ~0.3 s to describe)."""
    from morphserve.serving import registry as held

    calls: list[int] = []
    real = held.describe
    monkeypatch.setattr(held, "describe", lambda v: calls.append(v.version) or real(v))
    _edit(client, [identity_insert()])
    first = client.get("/v1/models/digits/graph?version=2")
    again = client.get("/v1/models/digits/graph?version=2")
    assert first.headers["cache-control"] == "no-cache" and first.headers["etag"] == '"2"'
    assert first.content == again.content and first.json()["version"] == 2
    client.get("/v1/models/digits/graph?version=1")
    assert calls == [2, 1]
    r = client.get("/v1/models/digits/graph?version=2", headers={"If-None-Match": '"2"'})
    assert r.status_code == 304 and r.headers["cache-control"] == "no-cache"


def test_graph_versions_param(client: TestClient) -> None:
    _edit(client, [identity_insert(name="ident")])
    v1 = client.get("/v1/models/digits/graph?version=1")
    v2 = client.get("/v1/models/digits/graph?version=2")
    assert v1.headers["etag"] == '"1"' and v2.headers["etag"] == '"2"'
    assert "ident" not in [n["id"] for n in v1.json()["nodes"]]
    assert "ident" in [n["id"] for n in v2.json()["nodes"]]
    assert v2.json()["parent"] == 1 and v2.json()["ops"][0]["op"] == "insert"
    assert client.get("/v1/models/digits/graph").json() == v2.json()


def test_graph_dot_and_svg(client: TestClient) -> None:
    r = client.get("/v1/models/digits/graph?format=dot")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/vnd.graphviz")
    assert r.headers["etag"] == '"1"'
    assert r.text.lstrip().startswith("digraph") and "fc1" in r.text and "fc3 -> output" in r.text
    r = client.get("/v1/models/digits/graph?format=svg")
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
    assert r.headers["etag"] == '"1"'
    assert "<svg" in r.text and "fc3" in r.text


@pytest.mark.parametrize(
    "query,status", [("format=png", 422), ("version=0", 422), ("version=x", 422), ("version=9", 404)]
)
def test_graph_bad_query(client: TestClient, query: str, status: int) -> None:
    assert_error(client.get(f"/v1/models/digits/graph?{query}"), status)


def test_graph_unknown_model_404(client: TestClient) -> None:
    assert_error(client.get("/v1/models/nope/graph"), 404, "nope")
    assert_error(client.get("/v1/models/nope/graph?format=svg"), 404, "nope")


def test_svg_without_graphviz_is_a_permanent_501(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Not 503: retrying cannot help until graphviz is installed (like ONNX export without its extra)."""
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` on it
    r = client.get("/v1/models/digits/graph?format=svg")
    assert_error(r, 501, "graphviz", "format=dot")
    assert "Retry-After" not in r.headers
    assert client.get("/v1/models/digits/graph?format=dot").status_code == 200


# -- versions and diff -------------------------------------------------------------------------------------------
def test_versions(client: TestClient) -> None:
    _edit(client, [identity_insert()])
    _edit(client, head_ops(1.0))
    client.post("/v1/models/digits/rollback", json={"version": 1}, headers=AUTH).raise_for_status()
    r = client.get("/v1/models/digits/versions")
    assert r.status_code == 200
    body = r.json()
    assert body["model"] == "digits" and body["current"] == 4
    vs = body["versions"]
    assert [v["version"] for v in vs] == [1, 2, 3, 4]
    assert [v["parent"] for v in vs] == [None, 1, 2, 3]
    assert vs[1]["ops"][0]["op"] == "insert"
    sw = vs[2]["ops"][0]
    assert sw["op"] == "set_weights" and sw["node"] == "fc3"
    assert sw["tensors"]["bias"]["shape"] == [10] and "data" not in sw["tensors"]["bias"]  # summarised
    assert vs[3]["ops"] == [{"op": "rollback", "to": 1}]
    assert vs[3]["resident"] is True
    assert all(isinstance(v["created_at"], float) for v in vs)
    assert_error(client.get("/v1/models/nope/versions"), 404)


def test_diff(client: TestClient) -> None:
    _edit(client, [identity_insert(name="ident")])
    _edit(client, head_ops(1.0))
    r = client.get("/v1/models/digits/diff?from=1&to=3")
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["model"] == "digits" and d["from_version"] == 1 and d["to_version"] == 3
    assert d["added"] == ["ident"] and d["removed"] == [] and d["outputs_changed"] is False
    changed = {c["id"]: c["changes"] for c in d["changed"]}
    assert changed == {"fc2": ["inputs"], "fc3": ["weights"]}
    # `to` defaults to the current version
    assert client.get("/v1/models/digits/diff?from=1").json() == d
    back = client.get("/v1/models/digits/diff?from=3&to=1").json()
    assert back["removed"] == ["ident"] and back["added"] == []
    same = client.get("/v1/models/digits/diff?from=2&to=2").json()
    assert same["added"] == same["removed"] == same["changed"] == []


@pytest.mark.parametrize(
    "query,status", [("", 422), ("from=0", 422), ("from=1&to=9", 404), ("from=9", 404), ("from=a", 422)]
)
def test_diff_errors(client: TestClient, query: str, status: int) -> None:
    assert_error(client.get(f"/v1/models/digits/diff?{query}"), status)
    assert_error(client.get("/v1/models/nope/diff?from=1"), 404)


def test_digits_serves_throughout(client: TestClient) -> None:
    """Management calls on other models leave digits serving."""
    client.post("/v1/models", json={"name": "tiny", "spec": SPEC}, headers=AUTH).raise_for_status()
    client.delete("/v1/models/tiny", headers=AUTH).raise_for_status()
    assert client.post("/v1/models/digits/infer", json={"inputs": X.tolist()}).status_code == 200


def test_a_model_created_in_bf16_serves_fp32_on_the_wire_and_comes_back_so(make_client: Any, tmp_path: Path) -> None:
    state = tmp_path / "half"
    c = make_client(state_dir=state)
    r = c.post("/v1/models", headers=AUTH, json={"name": "d16", "zoo": "digits", "dtype": "BF16"})
    assert r.status_code == 201, r.text
    info = r.json()
    assert info["compute_datatype"] == "BF16" and info["inputs"][0]["datatype"] == "FP32"
    assert info["outputs"][0]["datatype"] == "FP32"
    full = c.post("/v1/models/digits/infer", json={"inputs": X.tolist()}).json()["outputs"]
    half = c.post("/v1/models/d16/infer", json={"inputs": X.tolist()}).json()["outputs"]
    assert (
        full != half
        and max(abs(a - b) for ra, rb in zip(full, half, strict=True) for a, b in zip(ra, rb, strict=True)) < 0.5
    )
    assert c.get("/v1/models/d16/graph").json()["compute_datatype"] == "BF16"
    r = c.post("/v1/models/digits/edits", headers=AUTH, json={"ops": [{"op": "cast", "datatype": "BF16"}]})
    assert r.status_code == 200 and c.get("/v1/models/digits").json()["compute_datatype"] == "BF16"
    assert c.post("/v1/models/digits/infer", json={"inputs": X.tolist()}).json()["outputs"] == half
    c.__exit__(None, None, None)
    again = make_client(state_dir=state)  # restored from the journal in BF16, bit for bit
    assert again.get("/v1/models/d16").json()["compute_datatype"] == "BF16"
    assert again.post("/v1/models/d16/infer", json={"inputs": X.tolist()}).json()["outputs"] == half


def test_an_unknown_dtype_is_a_422(client: TestClient) -> None:
    assert_error(client.post("/v1/models", headers=AUTH, json={"name": "x", "zoo": "digits", "dtype": "INT8"}), 422)

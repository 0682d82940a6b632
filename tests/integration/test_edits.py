"""Live edits: the general edits route (dry runs, validation, conflicts), the layer sugar, weights upload,
rollback, and the admin token on every mutating route."""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save as save_safetensors

from tests.conftest import AUTH
from tests.integration.helpers import X, assert_error, head_ops, identity_insert, reference

EDITS = "/v1/models/digits/edits"


def _outputs(client: TestClient, x: np.ndarray = X) -> tuple[int, np.ndarray]:
    r = client.post("/v1/models/digits/infer", json={"inputs": x.tolist()})
    assert r.status_code == 200, r.text
    return r.json()["model_version"], np.array(r.json()["outputs"], dtype=np.float32)


def _state(client: TestClient) -> tuple[int, str, list[Any], np.ndarray]:
    """Everything an edit could change: current version, graph JSON, version history, outputs."""
    version, out = _outputs(client)
    graph = client.get("/v1/models/digits/graph").text
    history = client.get("/v1/models/digits/versions").json()["versions"]
    assert client.get("/v1/models/digits").json()["version"] == version
    return version, graph, history, out


def _assert_unchanged(client: TestClient, before: tuple[int, str, list[Any], np.ndarray]) -> None:
    after = _state(client)
    assert after[0] == before[0] and after[1] == before[1] and after[2] == before[2]
    np.testing.assert_array_equal(after[3], before[3])


def _safetensors(tensors: dict[str, torch.Tensor]) -> bytes:
    return save_safetensors({k: v.contiguous() for k, v in tensors.items()})


# -- the edits route --------------------------------------------------------------------------------------------
def test_insert_identity_keeps_outputs(client: TestClient) -> None:
    sent = time.time()
    r = client.post(EDITS, json={"ops": [identity_insert(name="ident")]}, headers=AUTH)
    answered = time.time()
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "digits" and body["version"] == 2 and body["previous_version"] == 1
    assert body["dry_run"] is False and body["graph"] is None
    assert body["diff"]["added"] == ["ident"] and body["diff"]["from_version"] == 1 and body["diff"]["to_version"] == 2
    t = body["timings_ms"]
    assert {"validate", "build", "swap", "total"} <= set(t) and all(v >= 0 for v in t.values())
    assert t["total"] >= t["validate"]
    assert sent <= body["live_at"] <= answered  # the swap happened while the request was being answered
    version, out = _outputs(client)
    assert version == 2
    np.testing.assert_allclose(out, reference(), rtol=1e-5, atol=1e-5)


def test_dry_run_never_goes_live(client: TestClient) -> None:
    body = client.post(EDITS, json={"ops": [identity_insert(name="ident")], "dry_run": True}, headers=AUTH).json()
    assert body["dry_run"] is True and body["live_at"] is None
    assert _outputs(client)[0] == 1


def test_insert_identity_linear_keeps_outputs(client: TestClient) -> None:
    op = {
        "op": "insert",
        "after": "fc2",
        "layer": {"type": "Linear", "in_features": 64, "out_features": 64},
        "init": "identity",
    }
    client.post(EDITS, json={"ops": [op]}, headers=AUTH).raise_for_status()
    version, out = _outputs(client)
    assert version == 2
    np.testing.assert_allclose(out, reference(), rtol=1e-4, atol=1e-4)


def test_multi_op_edit_is_one_version(client: TestClient) -> None:
    ops = [identity_insert(name="a"), identity_insert(after="a", name="b"), {"op": "remove", "node": "a"}]
    body = client.post(EDITS, json={"ops": ops}, headers=AUTH).json()
    assert body["version"] == 2 and body["diff"]["added"] == ["b"]
    assert [v["version"] for v in client.get("/v1/models/digits/versions").json()["versions"]] == [1, 2]


def test_dry_run_changes_nothing(client: TestClient) -> None:
    before = _state(client)
    r = client.post(EDITS, json={"ops": [identity_insert(name="ident")], "dry_run": True}, headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["dry_run"] is True and body["version"] == 2 and body["previous_version"] == 1
    assert "ident" in [n["id"] for n in body["graph"]["nodes"]]  # the would-be graph
    assert body["diff"]["added"] == ["ident"]
    _assert_unchanged(client, before)
    assert_error(client.get("/v1/models/digits/graph?version=2"), 404)
    # a dry run of an invalid edit still answers 422
    bad = {"ops": [{"op": "remove", "node": "fc3"}], "dry_run": True}
    assert_error(client.post(EDITS, json=bad, headers=AUTH), 422, "allow_output_change")
    # and the real edit afterwards gets the number the dry run announced
    assert client.post(EDITS, json={"ops": [identity_insert(name="ident")]}, headers=AUTH).json()["version"] == 2


@pytest.mark.parametrize(
    "ops,op_index,words",
    [
        (
            [{"op": "insert", "after": "relu1", "layer": {"type": "Linear", "in_features": 7, "out_features": 128}}],
            0,
            ["insert", "relu1"],
        ),
        (
            [
                identity_insert(name="ok"),
                {"op": "replace", "node": "fc2", "layer": {"type": "Linear", "in_features": 128, "out_features": 32}},
            ],
            1,
            ["replace", "fc2"],
        ),
        ([{"op": "remove", "node": "fc3"}], None, ["allow_output_change"]),
        ([{"op": "explode", "node": "fc1"}], 0, ["explode"]),
        ([{"op": "insert", "layer": {"type": "Identity"}}], 0, ["after", "before"]),
        ([{"op": "insert", "after": "fc1", "layer": {"type": "Warp"}}], 0, ["Warp"]),
        ([identity_insert(name="fc2")], 0, ["already exists"]),
        (
            [{"op": "set_weights", "node": "fc3", "tensors": {"bias": {"shape": [11], "data": [0.0] * 11}}}],
            0,
            ["bias", "[10]", "[11]"],
        ),
        (
            [{"op": "set_weights", "node": "fc3", "tensors": {"gamma": {"shape": [10], "data": [0.0] * 10}}}],
            0,
            ["gamma"],
        ),
        ([{"op": "set_weights", "node": "fc3", "tensors": {"bias": {"shape": [10], "data": [1e39] * 10}}}], 0, ["fc3"]),
        (
            [
                {
                    "op": "replace",
                    "node": "fc1",
                    "layer": {"type": "Linear", "in_features": 64, "out_features": 64},
                    "keep_weights": True,
                }
            ],
            0,
            ["keep_weights"],
        ),
    ],
)
def test_invalid_edit_422_names_op_and_reason_and_changes_nothing(
    client: TestClient, ops: list[dict[str, Any]], op_index: int | None, words: list[str]
) -> None:
    before = _state(client)
    body = assert_error(client.post(EDITS, json={"ops": ops}, headers=AUTH), 422, *words)
    if op_index is not None:
        assert body["op"] == op_index, body
    _assert_unchanged(client, before)


def test_set_weights_wrong_shape_names_expected_and_got(client: TestClient) -> None:
    ops = [{"op": "set_weights", "node": "fc3", "tensors": {"bias": {"shape": [11], "data": [0.0] * 11}}}]
    body = assert_error(client.post(EDITS, json={"ops": ops}, headers=AUTH), 422)
    assert body["node"] == "fc3" and body["expected"] == [10] and body["got"] == [11]


@pytest.mark.parametrize(
    "body",
    [
        {"ops": []},
        {"ops": "insert"},
        {},
        {"ops": [identity_insert()], "colour": 1},
        {"ops": [identity_insert()], "if_version": "x"},
    ],
)
def test_malformed_edit_body_422(client: TestClient, body: dict[str, Any]) -> None:
    assert_error(client.post(EDITS, json=body, headers=AUTH), 422)
    assert client.get("/v1/models/digits").json()["version"] == 1


@pytest.mark.parametrize(
    "op",
    [
        {"op": "remove", "node": "nope"},
        {"op": "replace", "node": "nope", "layer": {"type": "Identity"}},
        {"op": "insert", "after": "nope", "layer": {"type": "Identity"}},
        {"op": "set_weights", "node": "nope", "tensors": {"bias": {"shape": [1], "data": [0.0]}}},
    ],
)
def test_unknown_node_404(client: TestClient, op: dict[str, Any]) -> None:
    body = assert_error(client.post(EDITS, json={"ops": [op]}, headers=AUTH), 404, "nope")
    assert body["node"] == "nope" and body["op"] == 0
    assert client.get("/v1/models/digits").json()["version"] == 1


def test_edit_unknown_model_404(client: TestClient) -> None:
    assert_error(client.post("/v1/models/nope/edits", json={"ops": [identity_insert()]}, headers=AUTH), 404, "nope")


def test_allow_output_change(client: TestClient) -> None:
    op = {"op": "replace", "node": "fc3", "layer": {"type": "Linear", "in_features": 64, "out_features": 5}}
    assert_error(client.post(EDITS, json={"ops": [op]}, headers=AUTH), 422, "allow_output_change")
    r = client.post(EDITS, json={"ops": [op], "allow_output_change": True}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["diff"]["outputs_changed"] is True
    version, out = _outputs(client)
    assert version == 2 and out.shape == (3, 5)
    assert client.get("/v2/models/digits").json()["outputs"][0]["shape"] == [-1, 5]


# -- optimistic concurrency: if_version and If-Match ---------------------------------------------------------------
def test_if_version_conflict_409(client: TestClient) -> None:
    assert client.post(EDITS, json={"ops": [identity_insert()], "if_version": 1}, headers=AUTH).status_code == 200
    before = _state(client)
    body = assert_error(
        client.post(EDITS, json={"ops": [identity_insert()], "if_version": 1}, headers=AUTH), 409, "version 2"
    )
    assert body["expected"] == 1 and body["got"] == 2
    _assert_unchanged(client, before)


def test_if_match_conflict_409(client: TestClient) -> None:
    ok = client.post(EDITS, json={"ops": [identity_insert()]}, headers={**AUTH, "If-Match": '"1"'})
    assert ok.status_code == 200, ok.text
    before = _state(client)
    assert_error(client.post(EDITS, json={"ops": [identity_insert()]}, headers={**AUTH, "If-Match": '"1"'}), 409)
    assert_error(client.post(EDITS, json={"ops": [identity_insert()]}, headers={**AUTH, "If-Match": 'W/"1"'}), 409)
    _assert_unchanged(client, before)
    # the ETag of the graph is what If-Match takes
    etag = client.get("/v1/models/digits/graph").headers["etag"]
    assert client.post(EDITS, json={"ops": [identity_insert()]}, headers={**AUTH, "If-Match": etag}).status_code == 200
    assert client.post(EDITS, json={"ops": [identity_insert()]}, headers={**AUTH, "If-Match": "*"}).status_code == 200


def test_if_match_bad_or_disagreeing_400(client: TestClient) -> None:
    assert_error(
        client.post(EDITS, json={"ops": [identity_insert()]}, headers={**AUTH, "If-Match": "abc"}), 400, "If-Match"
    )
    assert_error(
        client.post(EDITS, json={"ops": [identity_insert()], "if_version": 2}, headers={**AUTH, "If-Match": '"1"'}),
        400,
        "disagree",
    )
    assert client.get("/v1/models/digits").json()["version"] == 1


def test_if_match_on_sugar_routes_409(client: TestClient) -> None:
    client.post(EDITS, json={"ops": head_ops(1.0)}, headers=AUTH).raise_for_status()
    stale = {**AUTH, "If-Match": '"1"'}
    before = _state(client)
    assert_error(
        client.post("/v1/models/digits/layers", json={"after": "fc1", "layer": {"type": "Identity"}}, headers=stale),
        409,
    )
    assert_error(client.put("/v1/models/digits/layers/relu1", json={"layer": {"type": "Tanh"}}, headers=stale), 409)
    assert_error(client.delete("/v1/models/digits/layers/relu1", headers=stale), 409)
    assert_error(
        client.put(
            "/v1/models/digits/layers/fc3/weights",
            content=_safetensors({"bias": torch.zeros(10)}),
            headers={**stale, "Content-Type": "application/octet-stream"},
        ),
        409,
    )
    assert_error(client.post("/v1/models/digits/rollback", json={"version": 1}, headers=stale), 409)
    assert_error(client.post("/v1/models/digits/rollback", json={"version": 1, "if_version": 1}, headers=AUTH), 409)
    _assert_unchanged(client, before)


# -- layer sugar -------------------------------------------------------------------------------------------------
def test_post_layers_inserts(client: TestClient) -> None:
    r = client.post(
        "/v1/models/digits/layers",
        json={"after": "fc1", "name": "ident", "layer": {"type": "Identity"}, "if_version": 1},
        headers=AUTH,
    )
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2 and r.json()["diff"]["added"] == ["ident"]
    g = client.get("/v1/models/digits/graph").json()
    assert next(n for n in g["nodes"] if n["id"] == "relu1")["inputs"] == ["ident"]
    np.testing.assert_allclose(_outputs(client)[1], reference(), rtol=1e-5, atol=1e-5)
    body = {"before": "fc2", "layer": {"type": "Linear", "in_features": 128, "out_features": 128}, "init": "identity"}
    r = client.post("/v1/models/digits/layers", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["diff"]["added"] == ["linear_1"]
    np.testing.assert_allclose(_outputs(client)[1], reference(), rtol=1e-4, atol=1e-4)
    assert_error(
        client.post("/v1/models/digits/layers", json={"after": "zzz", "layer": {"type": "Identity"}}, headers=AUTH),
        404,
        "zzz",
    )
    assert_error(client.post("/v1/models/digits/layers", json={"layer": {"type": "Identity"}}, headers=AUTH), 422)
    assert_error(
        client.post("/v1/models/digits/layers", json={"after": "fc1", "layer": {"type": "Nope"}}, headers=AUTH), 422
    )


def test_put_layer_replaces(client: TestClient) -> None:
    r = client.put("/v1/models/digits/layers/relu1", json={"layer": {"type": "Tanh"}}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert [c["id"] for c in r.json()["diff"]["changed"]] == ["relu1"]
    g = client.get("/v1/models/digits/graph").json()
    assert next(n for n in g["nodes"] if n["id"] == "relu1")["layer"] == {"type": "Tanh"}
    # keep_weights: the same-shaped Linear keeps computing the same thing
    r = client.put("/v1/models/digits/layers/relu1", json={"layer": {"type": "ReLU"}}, headers=AUTH)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(_outputs(client)[1], reference(), rtol=1e-5, atol=1e-5)
    r = client.put(
        "/v1/models/digits/layers/fc2",
        headers=AUTH,
        json={"layer": {"type": "Linear", "in_features": 128, "out_features": 64}, "keep_weights": True},
    )
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(_outputs(client)[1], reference(), rtol=1e-5, atol=1e-5)
    # the head changes shape only with allow_output_change
    head = {"layer": {"type": "Linear", "in_features": 64, "out_features": 3}}
    assert_error(client.put("/v1/models/digits/layers/fc3", json=head, headers=AUTH), 422, "allow_output_change")
    r = client.put("/v1/models/digits/layers/fc3", json={**head, "allow_output_change": True}, headers=AUTH)
    assert r.status_code == 200 and _outputs(client)[1].shape == (3, 3)
    assert_error(client.put("/v1/models/digits/layers/nope", json={"layer": {"type": "Tanh"}}, headers=AUTH), 404)


def test_delete_layer_removes(client: TestClient) -> None:
    client.post(EDITS, json={"ops": [identity_insert(name="ident")]}, headers=AUTH).raise_for_status()
    r = client.delete("/v1/models/digits/layers/ident", headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 3 and r.json()["diff"]["removed"] == ["ident"]
    assert "ident" not in [n["id"] for n in client.get("/v1/models/digits/graph").json()["nodes"]]
    assert_error(client.delete("/v1/models/digits/layers/ident", headers=AUTH), 404, "ident")
    assert_error(client.delete("/v1/models/digits/layers/fc3", headers=AUTH), 422, "allow_output_change")
    r = client.delete("/v1/models/digits/layers/fc3?allow_output_change=true", headers=AUTH)
    assert r.status_code == 200 and _outputs(client)[1].shape == (3, 64)


def test_put_weights_safetensors(client: TestClient) -> None:
    w = torch.zeros(10, 64)
    b = torch.arange(10, dtype=torch.float32)
    r = client.put(
        "/v1/models/digits/layers/fc3/weights",
        content=_safetensors({"weight": w, "bias": b}),
        headers={**AUTH, "Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2
    assert [c["changes"] for c in r.json()["diff"]["changed"]] == [["weights"]]
    np.testing.assert_allclose(_outputs(client)[1], np.tile(np.arange(10, dtype=np.float32), (3, 1)))
    # names may carry the node prefix, as in a model's state dict
    r = client.put(
        "/v1/models/digits/layers/fc3/weights",
        content=_safetensors({"fc3.bias": b + 1}),
        headers={**AUTH, "Content-Type": "application/octet-stream", "If-Match": '"2"'},
    )
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(_outputs(client)[1], np.tile(np.arange(10, dtype=np.float32) + 1, (3, 1)))


def test_put_weights_errors(client: TestClient) -> None:
    before = _state(client)
    octet = {**AUTH, "Content-Type": "application/octet-stream"}
    url = "/v1/models/digits/layers/fc3/weights"
    assert_error(
        client.put(
            url, content=_safetensors({"bias": torch.zeros(10)}), headers={**AUTH, "Content-Type": "application/json"}
        ),
        415,
        "octet-stream",
    )
    assert_error(client.put(url, content=b"not safetensors", headers=octet), 400, "safetensors")
    assert_error(client.put(url, content=b"", headers=octet), 400)
    body = assert_error(client.put(url, content=_safetensors({"bias": torch.zeros(11)}), headers=octet), 422, "bias")
    assert body["expected"] == [10] and body["got"] == [11]
    body = assert_error(
        client.put(url, content=_safetensors({"bias": torch.zeros(10, dtype=torch.float64)}), headers=octet),
        422,
        "FP64",
    )
    assert body["expected"] == "FP32" and body["got"] == "FP64"
    assert_error(client.put(url, content=_safetensors({"gamma": torch.zeros(10)}), headers=octet), 422, "gamma")
    assert_error(
        client.put(
            "/v1/models/digits/layers/nope/weights", content=_safetensors({"bias": torch.zeros(10)}), headers=octet
        ),
        404,
        "nope",
    )
    assert_error(
        client.put(
            "/v1/models/nope/layers/fc3/weights", content=_safetensors({"bias": torch.zeros(10)}), headers=octet
        ),
        404,
        "nope",
    )
    _assert_unchanged(client, before)


# -- rollback ----------------------------------------------------------------------------------------------------
def test_rollback(client: TestClient) -> None:
    client.post(EDITS, json={"ops": [identity_insert(name="ident")]}, headers=AUTH).raise_for_status()
    client.post(EDITS, json={"ops": head_ops(5.0)}, headers=AUTH).raise_for_status()
    assert _outputs(client)[1].tolist() == [[5.0] * 10] * 3
    r = client.post("/v1/models/digits/rollback", json={"version": 1}, headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["version"] == 4 and body["previous_version"] == 3 and body["diff"]["removed"] == ["ident"]
    version, out = _outputs(client)
    assert version == 4
    np.testing.assert_allclose(out, reference(), rtol=1e-6, atol=1e-6)
    v1 = client.get("/v1/models/digits/graph?version=1").json()
    v4 = client.get("/v1/models/digits/graph").json()
    assert v4["nodes"] == v1["nodes"] and v4["ops"] == [{"op": "rollback", "to": 1}]
    # roll forward again to version 3
    r = client.post("/v1/models/digits/rollback", json={"version": 3, "if_version": 4}, headers=AUTH)
    assert r.status_code == 200 and _outputs(client)[1].tolist() == [[5.0] * 10] * 3


def test_rollback_errors(client: TestClient) -> None:
    assert_error(client.post("/v1/models/digits/rollback", json={"version": 7}, headers=AUTH), 404, "7")
    assert_error(client.post("/v1/models/digits/rollback", json={"version": 0}, headers=AUTH), 422)
    assert_error(client.post("/v1/models/digits/rollback", json={}, headers=AUTH), 422)
    assert_error(client.post("/v1/models/nope/rollback", json={"version": 1}, headers=AUTH), 404)
    assert client.get("/v1/models/digits").json()["version"] == 1


# -- auth on every mutating route ------------------------------------------------------------------------------------
MUTATING: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/v1/models", {"json": {"name": "m2", "zoo": "mlp", "options": {"hidden": 4}}}),
    ("DELETE", "/v1/models/digits", {}),
    ("POST", "/v1/models/digits/edits", {"json": {"ops": [identity_insert()]}}),
    ("POST", "/v1/models/digits/layers", {"json": {"after": "fc1", "layer": {"type": "Identity"}}}),
    ("PUT", "/v1/models/digits/layers/relu1", {"json": {"layer": {"type": "Tanh"}}}),
    ("DELETE", "/v1/models/digits/layers/relu1", {}),
    (
        "PUT",
        "/v1/models/digits/layers/fc3/weights",
        {"content": _safetensors({"bias": torch.zeros(10)}), "headers": {"Content-Type": "application/octet-stream"}},
    ),
    ("POST", "/v1/models/digits/rollback", {"json": {"version": 1}}),
    ("POST", "/v1/models/digits/versions/1/pin", {}),
    ("DELETE", "/v1/models/digits/versions/1/pin", {}),
    ("POST", "/v1/models/digits/gc", {"json": {"keep": 1}}),
]
IDS = [f"{m} {p}" for m, p, _ in MUTATING]


def _call(client: TestClient, method: str, path: str, kw: dict[str, Any], auth: dict[str, str]) -> Any:
    kw = {**kw, "headers": {**kw.get("headers", {}), **auth}}
    return client.request(method, path, **kw)


@pytest.mark.parametrize("method,path,kw", MUTATING, ids=IDS)
def test_mutating_routes_need_the_token(client: TestClient, method: str, path: str, kw: dict[str, Any]) -> None:
    before = _state(client)
    r = _call(client, method, path, kw, {})
    assert_error(r, 401, "Bearer")
    assert r.headers["www-authenticate"] == "Bearer"
    assert_error(_call(client, method, path, kw, {"Authorization": "Bearer wrong"}), 403)
    assert_error(_call(client, method, path, kw, {"Authorization": "Basic dGVzdC10b2tlbg=="}), 403)
    assert_error(_call(client, method, path, kw, {"Authorization": "Bearer"}), 403)
    _assert_unchanged(client, before)
    assert [m["name"] for m in client.get("/v1/models").json()["models"]] == ["digits"]
    # and with the token the very same request goes through
    r = _call(client, method, path, kw, AUTH)
    assert r.status_code in (200, 201), r.text


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/v1/models"),
        ("GET", "/v1/models/digits"),
        ("GET", "/v1/models/digits/graph"),
        ("GET", "/v1/models/digits/versions"),
        ("GET", "/v1/models/digits/diff?from=1"),
        ("GET", "/v2/models/digits"),
        ("GET", "/metrics"),
        ("GET", "/v2/health/ready"),
    ],
)
def test_read_routes_are_open(client: TestClient, method: str, path: str) -> None:
    assert client.request(method, path).status_code == 200


@pytest.mark.parametrize("interval_us", [300.0, 0.0])
def test_an_edit_runs_with_the_configured_switch_interval(
    make_client: Any, monkeypatch: pytest.MonkeyPatch, interval_us: float
) -> None:
    """`--edit-switch-interval-us`: in force while the edit is built and warmed up, Python's own before and after."""
    c = make_client(edit_switch_interval_us=interval_us)
    residency = c.app.state.registry.get("digits").residency  # type: ignore[attr-defined]
    seen: list[float] = []
    prepare = residency.prepare
    monkeypatch.setattr(residency, "prepare", lambda v: (seen.append(sys.getswitchinterval()), prepare(v))[1])
    before = sys.getswitchinterval()
    c.post(EDITS, json={"ops": [identity_insert(name="ident")]}, headers=AUTH).raise_for_status()
    expected = interval_us / 1e6 if interval_us else before
    assert seen == [pytest.approx(min(expected, before), rel=0.02)]
    assert sys.getswitchinterval() == before

"""Staged versions and rollouts (issue 25): stage, shadow, canary, gate, promote or abort, and every bad input.

The app runs in-process (TestClient); the shadow runs, the evaluations and the gates' monitor are the server's own
threads, so the tests wait for their outcomes with deadlines on the state the API reports, never on sleeps.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save as save_safetensors

from tests.conftest import AUTH
from tests.digits import digits
from tests.integration.helpers import X, assert_error, identity_insert, reference

V1 = "/v1/models/digits/infer"
ROLLOUT = "/v1/models/digits/rollout"
FRESH_HEAD = {"layer": {"type": "Linear", "in_features": 64, "out_features": 10}, "seed": 7}


def _stage(
    client: TestClient, body: dict[str, Any], path: str = "/v1/models/digits/edits", method: str = "POST"
) -> int:
    r = client.request(method, path, json={**body, "stage": True}, headers=AUTH)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["staged"] and out["live_at"] is None
    return int(out["version"])


def _infer(client: TestClient, x: np.ndarray, headers: dict[str, str] | None = None) -> tuple[int, np.ndarray]:
    r = client.post(V1, json={"inputs": x.tolist()}, headers=headers or {})
    assert r.status_code == 200, r.text
    body = r.json()
    return int(body["model_version"]), np.asarray(body["outputs"], dtype=np.float32)


def _until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.01)


def _state(client: TestClient) -> dict[str, Any]:
    r = client.get(ROLLOUT)
    assert r.status_code == 200, r.text
    return dict(r.json())


# -- staged versions ----------------------------------------------------------------------------------------------
def test_a_staged_version_serves_only_requests_that_name_it_until_promoted(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client()
    v2 = _stage(client, {"ops": [{"op": "replace", "node": "fc3", **FRESH_HEAD}]})
    assert v2 == 2
    info = client.get("/v1/models/digits").json()
    assert (info["version"], info["latest"]) == (1, 2)
    version, out = _infer(client, X)
    assert version == 1 and np.allclose(out, reference(X), atol=1e-5)
    named = client.post("/v2/models/digits/versions/2/infer", json=_oip(X))
    assert named.status_code == 200 and named.json()["model_version"] == "2"
    staged_out = np.asarray(named.json()["outputs"][0]["data"], dtype=np.float32).reshape(3, 10)
    assert not np.allclose(staged_out, reference(X), atol=1e-3)
    # the next edit is based on the current version and numbered after the staged one
    r = client.post("/v1/models/digits/edits", json={"ops": [identity_insert()], "if_version": 1}, headers=AUTH)
    assert r.status_code == 200 and r.json()["version"] == 3 and r.json()["previous_version"] == 1, r.text
    assert client.get("/v1/models/digits/versions").json()["versions"][1]["staged"] is True
    # promoting an older version than the current one makes a new version equal to it: versions only move forward
    r = client.post("/v1/models/digits/versions/2/promote", headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 4 and r.json()["previous_version"] == 3
    version, out = _infer(client, X)
    assert version == 4 and np.allclose(out, staged_out, atol=1e-6)


def test_promoting_a_newer_staged_version_is_a_swap_and_survives_a_restart(
    make_client: Callable[..., TestClient], tmp_path: Any
) -> None:
    client = make_client()
    v2 = _stage(client, {"layer": {"type": "Identity"}, "after": "relu1"}, path="/v1/models/digits/layers")
    r = client.post(f"/v1/models/digits/versions/{v2}/promote", headers=AUTH)
    assert r.status_code == 200 and r.json()["version"] == 2 and r.json()["live_at"] is not None, r.text
    assert _infer(client, X)[0] == 2
    client.__exit__(None, None, None)
    again = make_client()
    assert again.get("/v1/models/digits").json()["version"] == 2


def test_a_staged_version_after_a_restart_is_still_staged(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    _stage(client, {"ops": [{"op": "replace", "node": "fc3", **FRESH_HEAD}]})
    client.__exit__(None, None, None)
    again = make_client()
    info = again.get("/v1/models/digits").json()
    assert (info["version"], info["latest"]) == (1, 2)
    assert _infer(again, X)[0] == 1
    r = again.post("/v1/models/digits/edits", json={"ops": [identity_insert()]}, headers=AUTH)
    assert r.json()["version"] == 3  # numbered after the staged version the journal has


# -- rollouts: the gates decide -------------------------------------------------------------------------------------
def test_a_broken_head_under_full_shadow_is_aborted_by_its_gates_and_no_client_sees_it(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client()
    candidate = _stage(client, {"ops": [{"op": "replace", "node": "fc3", **FRESH_HEAD}]})
    gates = {"min_requests": 200, "min_agreement": 0.99}
    r = client.put(ROLLOUT, json={"candidate": candidate, "shadow": 1.0, "gates": gates}, headers=AUTH)
    assert r.status_code == 201, r.text
    assert r.json()["state"] == "running" and r.json()["baseline"] == 1
    x, _ = digits(500)
    sent = 0
    while _state(client)["state"] == "running":
        assert sent < 200 + 400, "the gates did not decide within the window"
        version, out = _infer(client, x[sent % 500 : sent % 500 + 1])
        assert version == 1  # every client answer comes from the current version
        assert np.allclose(out, reference(x[sent % 500 : sent % 500 + 1]), atol=1e-5)
        sent += 1
    done = _state(client)
    assert done["state"] == "aborted" and "agreement" in done["reason"], done
    assert done["evidence"]["outputs"][0]["agreement"] < 0.99
    assert done["evidence"]["requests"] >= 200 and done["decided_by"]
    flips = done["evidence"]["outputs"][0]["flips"]
    assert flips["classes"] == 10 and flips["changed"], flips
    assert client.get("/v1/models/digits").json()["version"] == 1
    assert _infer(client, X)[0] == 1
    metrics = client.get("/metrics").text
    assert 'morphserve_shadow_runs_total{model="digits",outcome="compared"}' in metrics
    assert 'morphserve_rollout_requests_total{model="digits",role="current"}' in metrics


def test_a_function_preserving_insert_under_canary_is_promoted_and_answers_never_change(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client()
    candidate = _stage(client, {"ops": [identity_insert("relu2", "grown")]})
    gates = {"min_requests": 40, "max_error_rate": 0.0, "max_p99_ratio": 50}
    r = client.put(ROLLOUT, json={"candidate": candidate, "canary": 0.1, "gates": gates}, headers=AUTH)
    assert r.status_code == 201, r.text
    x, _ = digits(300)
    want = reference(x)
    seen: set[int] = set()
    i = 0
    while _state(client)["state"] == "running":
        assert i < 3000, "the canary gates did not decide"
        version, out = _infer(client, x[i % 300 : i % 300 + 1])
        seen.add(version)
        assert np.allclose(out, want[i % 300 : i % 300 + 1], atol=1e-5)
        i += 1
    done = _state(client)
    assert done["state"] == "promoted" and done["promoted_as"] == candidate, done
    assert seen == {1, candidate}  # both sides answered during the canary
    version, out = _infer(client, x[:5])
    assert version == candidate and np.allclose(out, want[:5], atol=1e-5)


@pytest.mark.slow  # 5,000 requests: ~10 s on 2 cores
def test_the_canary_fraction_holds_and_a_sticky_header_never_changes_sides(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client()
    candidate = _stage(client, {"ops": [identity_insert()]})
    spec = {"candidate": candidate, "canary": 0.3, "sticky_header": "X-User-Id"}
    assert client.put(ROLLOUT, json=spec, headers=AUTH).status_code == 201
    x = X[:1].tolist()
    hits = sum(client.post(V1, json={"inputs": x}).json()["model_version"] == candidate for _ in range(5000))
    assert abs(hits / 5000 - 0.3) <= 0.02, hits
    sides: dict[str, set[int]] = {}
    for round_ in range(4):
        for user in range(60):
            r = client.post(V1, json={"inputs": x}, headers={"X-User-Id": f"user-{user}"})
            sides.setdefault(f"user-{user}", set()).add(r.json()["model_version"])
        assert round_ >= 0
    assert all(len(s) == 1 for s in sides.values()), sides
    assert {next(iter(s)) for s in sides.values()} == {1, candidate}  # both sides have users
    r = client.post(ROLLOUT + "/abort", headers=AUTH)
    assert r.status_code == 200 and r.json()["state"] == "aborted" and r.json()["reason"] == "aborted by hand"


def test_an_evaluation_gate_scores_both_versions_before_any_traffic(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    x, y = digits(400, offset=1000)
    body = save_safetensors({"input": torch.from_numpy(x), "labels": torch.from_numpy(y)})
    r = client.put(
        "/v1/models/digits/datasets/heldout", content=body, headers={**AUTH, "Content-Type": "application/octet-stream"}
    )
    assert r.status_code == 201 and r.json()["rows"] == 400 and r.json()["kind"] == "labels", r.text
    listed = client.get("/v1/models/digits/datasets").json()["datasets"]
    assert [d["name"] for d in listed] == ["heldout"]
    broken = _stage(client, {"ops": [{"op": "replace", "node": "fc3", **FRESH_HEAD}]})
    spec = {"candidate": broken, "shadow": 1.0, "eval_dataset": "heldout", "gates": {"min_eval_accuracy": 0.9}}
    assert client.put(ROLLOUT, json=spec, headers=AUTH).status_code == 201
    _until(lambda: _state(client)["state"] == "aborted", "the evaluation gate aborted the broken head")
    done = _state(client)
    assert "eval accuracy" in done["reason"], done
    scores = done["evidence"]["evaluation"]
    assert scores["current"]["accuracy"] > 0.9 > scores["candidate"]["accuracy"], scores
    assert done["evidence"]["requests"] == 0  # it never took a request
    # the score is part of the version's record
    versions = {v["version"]: v for v in client.get("/v1/models/digits/versions").json()["versions"]}
    assert versions[broken]["evaluations"][0]["accuracy"] == scores["candidate"]["accuracy"]
    grown = _stage(client, {"ops": [identity_insert()]})
    spec = {"candidate": grown, "canary": 0.5, "eval_dataset": "heldout", "gates": {"max_eval_regression": 0.0}}
    assert client.put(ROLLOUT, json=spec, headers=AUTH).status_code == 201
    _until(lambda: _state(client)["state"] == "running", "the identity insert passed its evaluation")
    assert _state(client)["gates"]["max_eval_regression"]["ok"] is True


def test_evaluation_gates_alone_decide_a_rollout_that_takes_no_traffic(
    make_client: Callable[..., TestClient],
) -> None:
    """Neither shadow nor canary: no request will ever reach the candidate, so passing the evaluation promotes it
    (and failing it aborts it) instead of leaving it running for evidence that cannot come."""
    client = make_client()
    x, y = digits(400, offset=1000)
    body = save_safetensors({"input": torch.from_numpy(x), "labels": torch.from_numpy(y)})
    headers = {**AUTH, "Content-Type": "application/octet-stream"}
    assert client.put("/v1/models/digits/datasets/heldout", content=body, headers=headers).status_code == 201
    grown = _stage(client, {"ops": [identity_insert()]})
    spec = {"candidate": grown, "eval_dataset": "heldout", "gates": {"min_eval_accuracy": 0.9}}
    assert client.put(ROLLOUT, json=spec, headers=AUTH).status_code == 201
    _until(lambda: _state(client)["state"] not in ("evaluating", "running"), "the evaluation decided")
    done = _state(client)
    assert (done["state"], done["promoted_as"], done["reason"]) == ("promoted", grown, "every evaluation gate passed")
    assert done["evidence"]["requests"] == 0 and client.get("/v1/models/digits").json()["version"] == grown
    broken = _stage(client, {"ops": [{"op": "replace", "node": "fc3", **FRESH_HEAD}]})
    assert client.put(ROLLOUT, json={**spec, "candidate": broken}, headers=AUTH).status_code == 201
    _until(lambda: _state(client)["state"] not in ("evaluating", "running"), "the evaluation decided")
    assert _state(client)["state"] == "aborted" and client.get("/v1/models/digits").json()["version"] == grown


def test_a_rollout_survives_a_restart(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    candidate = _stage(client, {"ops": [identity_insert()]})
    started = client.put(ROLLOUT, json={"candidate": candidate, "canary": 1.0}, headers=AUTH).json()
    assert _infer(client, X)[0] == candidate
    client.__exit__(None, None, None)
    again = make_client()
    state = _state(again)
    assert state["id"] == started["id"] and state["state"] == "running"
    assert candidate in again.get("/v1/models/digits").json()["resident_versions"]
    assert _infer(again, X)[0] == candidate  # it resumed routing
    assert again.post(ROLLOUT + "/promote", headers=AUTH).json()["state"] == "promoted"
    again.__exit__(None, None, None)
    third = make_client()
    assert _state(third)["state"] == "promoted" and _infer(third, X)[0] == candidate


# -- bad input: clear, and changing nothing ---------------------------------------------------------------------------
def test_bad_rollouts_are_refused_and_change_nothing(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    candidate = _stage(client, {"ops": [identity_insert()]})
    before = client.get("/v1/models/digits").json()
    assert_error(client.put(ROLLOUT, json={"candidate": 99}, headers=AUTH), 404, "no version 99")
    assert_error(client.put(ROLLOUT, json={"candidate": 1}, headers=AUTH), 409, "current version")
    for bad in (
        {"candidate": candidate, "shadow": 1.5},
        {"candidate": candidate, "canary": -0.1},
        {"candidate": candidate, "gates": {"min_requests": 10, "foo": 1}},
        {"candidate": candidate, "gates": {"agreement": "cosine"}},
        {"candidate": candidate, "gates": {"min_agreement": 0.9}, "canary": 0.5},  # agreement needs a shadow
        {"candidate": candidate, "eval_dataset": "../etc"},
        {"candidate": candidate, "sticky_header": "X User"},
    ):
        assert_error(client.put(ROLLOUT, json=bad, headers=AUTH), 422)
    assert_error(client.put(ROLLOUT, json={"candidate": candidate, "eval_dataset": "nope"}, headers=AUTH), 404)
    assert_error(client.get(ROLLOUT), 404, "no rollout")
    assert_error(client.post(ROLLOUT + "/promote", headers=AUTH), 404, "no rollout running")
    assert client.get("/v1/models/digits").json() == before
    assert client.put(ROLLOUT, json={"candidate": candidate, "shadow": 0.5}, headers=AUTH).status_code == 201
    body = assert_error(client.put(ROLLOUT, json={"candidate": candidate, "canary": 0.5}, headers=AUTH), 409)
    assert "end it first" in body["error"]
    assert_error(client.post(f"/v1/models/digits/versions/{candidate}/promote", headers=AUTH), 409, "rollout")
    assert client.delete(ROLLOUT, headers=AUTH).json()["state"] == "aborted"
    assert client.get("/v1/models/digits").json()["version"] == 1


def test_datasets_that_do_not_fit_the_signature_are_refused_naming_the_tensor(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client()
    ctype = {**AUTH, "Content-Type": "application/octet-stream"}
    cases = [
        ({"input": torch.rand(4, 63), "labels": torch.zeros(4, dtype=torch.int64)}, "input"),
        ({"input": torch.rand(4, 64), "labels": torch.full((4,), 10)}, "labels"),
        ({"input": torch.rand(4, 64), "labels": torch.zeros(5, dtype=torch.int64)}, "labels"),
        ({"input": torch.rand(4, 64).double(), "labels": torch.zeros(4, dtype=torch.int64)}, "input"),
        ({"pixels": torch.rand(4, 64), "labels": torch.zeros(4, dtype=torch.int64)}, "pixels"),
        ({"input": torch.rand(4, 64)}, "labels"),
        ({"input": torch.rand(4, 64), "targets": torch.rand(4, 3)}, "targets"),
        ({"input": torch.full((4, 64), float("nan")), "targets": torch.rand(4, 10)}, "input"),
    ]
    for tensors, named in cases:
        body = assert_error(
            client.put("/v1/models/digits/datasets/d", content=save_safetensors(tensors), headers=ctype), 422
        )
        assert named in body["error"], body
    assert_error(client.put("/v1/models/digits/datasets/d", content=b"not safetensors", headers=ctype), 422)
    assert_error(
        client.put("/v1/models/digits/datasets/d", content=b"x", headers={**AUTH, "Content-Type": "text/plain"}), 415
    )
    assert client.get("/v1/models/digits/datasets").json()["datasets"] == []
    assert_error(client.delete("/v1/models/digits/datasets/d", headers=AUTH), 404)


def test_a_candidate_costs_only_the_bytes_of_what_its_edit_changed(make_client: Callable[..., TestClient]) -> None:
    client = make_client(models=["resnet"])
    before = client.get("/v1/models/resnet").json()["resident_bytes"]
    graph = client.get("/v1/models/resnet/graph").json()
    head = next(n for n in graph["nodes"] if n["id"] == "fc")
    layer_bytes = head["params"] * 4
    r = client.put(
        "/v1/models/resnet/layers/fc",
        json={"layer": head["layer"], "seed": 3, "stage": True},
        headers=AUTH,
    )
    assert r.status_code == 200, r.text
    after = client.get("/v1/models/resnet").json()
    assert after["resident_versions"] == [1, 2]
    grew = after["resident_bytes"] - before
    assert abs(grew - layer_bytes) <= 0.05 * layer_bytes, (before, after["resident_bytes"], layer_bytes)


def _oip(x: np.ndarray) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}


@pytest.mark.parametrize("route", ["/v1", "oip"])
def test_requests_naming_a_version_bypass_the_rollout(make_client: Callable[..., TestClient], route: str) -> None:
    client = make_client()
    candidate = _stage(client, {"ops": [identity_insert()]})
    assert client.put(ROLLOUT, json={"candidate": candidate, "canary": 1.0}, headers=AUTH).status_code == 201
    r = client.post("/v2/models/digits/versions/1/infer", json=_oip(X))
    assert r.json()["model_version"] == "1"
    unversioned = (
        _infer(client, X)[0]
        if route == "/v1"
        else int(client.post("/v2/models/digits/infer", json=_oip(X)).json()["model_version"])
    )
    assert unversioned == candidate


def test_a_rollout_still_evaluating_when_the_server_restarts_is_evaluated_again(
    make_client: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    import morphserve.serving.rollouts as rollouts_module

    real, go = rollouts_module.evaluate, threading.Event()

    def held(*args: Any, **kwargs: Any) -> Any:
        assert go.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(rollouts_module, "evaluate", held)
    client = make_client()
    x, y = digits(200, offset=1000)
    body = save_safetensors({"input": torch.from_numpy(x), "labels": torch.from_numpy(y)})
    headers = {**AUTH, "Content-Type": "application/octet-stream"}
    assert client.put("/v1/models/digits/datasets/heldout", content=body, headers=headers).status_code == 201
    grown = _stage(client, {"ops": [identity_insert()]})
    spec = {"candidate": grown, "canary": 0.5, "eval_dataset": "heldout", "gates": {"max_eval_regression": 0.0}}
    started = client.put(ROLLOUT, json=spec, headers=AUTH).json()
    assert started["state"] == "evaluating"
    client.__exit__(None, None, None)  # the server stops while the evaluation waits
    again = make_client()
    assert _state(again)["state"] == "evaluating" and _state(again)["id"] == started["id"]
    go.set()  # the old evaluation finds its server gone and gives up; the new one runs
    _until(lambda: _state(again)["state"] == "running", "the restarted server evaluated the candidate")
    assert _state(again)["evidence"]["evaluation"]["candidate"]["accuracy"] > 0.9

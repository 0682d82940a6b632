"""Fit jobs (issue 29): train chosen layers in the server on labelled data, as a staged version; feedback; limits.

The app runs in-process (TestClient); a job trains on the model's device worker in background slices, so the tests
wait for its end with deadlines on what GET .../jobs/{id} reports, and check that serving never failed meanwhile.
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
from tests.integration.helpers import assert_error

OCTET = {**AUTH, "Content-Type": "application/octet-stream"}
FRESH_HEAD = {"op": "replace", "node": "fc3", "layer": {"type": "Linear", "in_features": 64, "out_features": 10}}


def _put(client: TestClient, name: str, x: np.ndarray, y: np.ndarray) -> None:
    body = save_safetensors({"input": torch.from_numpy(x), "labels": torch.from_numpy(y)})
    r = client.put(f"/v1/models/digits/datasets/{name}", content=body, headers=OCTET)
    assert r.status_code == 201, r.text


def _accuracy(client: TestClient, x: np.ndarray, y: np.ndarray, version: int | None = None) -> float:
    path = "/v1/models/digits/infer" if version is None else None
    if path is not None:
        r = client.post(path, json={"inputs": x.tolist()})
        out = np.asarray(r.json()["outputs"])
    else:
        body = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
        r = client.post(f"/v2/models/digits/versions/{version}/infer", json=body)
        out = np.asarray(r.json()["outputs"][0]["data"]).reshape(len(x), 10)
    assert r.status_code == 200, r.text
    return float((out.argmax(1) == y).mean())


def _wait(client: TestClient, job: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        record = client.get(f"/v1/models/digits/jobs/{job}").json()
        if record["state"] != "running":
            return dict(record)
        assert time.monotonic() < deadline, f"job {job} still running: {record}"
        time.sleep(0.05)


class Traffic:
    """A client inferring back to back on the current version while the test runs; every answer must be a 200."""

    def __init__(self, client: TestClient, x: np.ndarray) -> None:
        self.client, self.x = client, x
        self.stop = threading.Event()
        self.count = 0
        self.failures: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self.stop.is_set():
            r = self.client.post("/v1/models/digits/infer", json={"inputs": self.x[i % len(self.x)][None].tolist()})
            if r.status_code != 200:
                self.failures.append(f"{r.status_code} {r.text[:200]}")
            self.count += 1
            i += 1

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


def test_the_loop_a_user_wants_fresh_head_fit_and_roll_out(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    x, y = digits()
    train_x, train_y, held_x, held_y = x[:1000], y[:1000], x[1000:], y[1000:]
    assert _accuracy(client, held_x, held_y) > 0.9
    r = client.post("/v1/models/digits/edits", json={"ops": [FRESH_HEAD]}, headers=AUTH)
    assert r.status_code == 200 and r.json()["version"] == 2, r.text
    assert _accuracy(client, held_x, held_y) < 0.3  # about chance
    _put(client, "train", train_x, train_y)
    _put(client, "heldout", held_x, held_y)
    spec = {"train": ["fc3"], "dataset": "train", "steps": 400, "lr": 0.02, "batch_size": 64, "eval": "heldout"}
    with Traffic(client, held_x) as traffic:
        started = time.monotonic()
        r = client.post("/v1/models/digits/fit", json=spec, headers=AUTH)
        assert r.status_code == 201, r.text
        job = r.json()
        assert job["state"] == "running" and job["base_version"] == 2 and job["train"] == ["fc3"]
        done = _wait(client, job["id"])
        took = time.monotonic() - started
        assert done["state"] == "succeeded", done
        staged = done["version"]
        assert staged == 3 and done["step"] == 400 and len(done["loss_curve"]) >= 300
        assert done["loss_curve"][-1] < done["loss_curve"][0] / 3
        assert done["eval_before"]["accuracy"] < 0.3 and done["eval_after"]["accuracy"] >= 0.95, done
        assert took < 30, took
        # staged: the current version did not move; the staged one answers requests that name it
        info = client.get("/v1/models/digits").json()
        assert (info["version"], info["latest"]) == (2, 3)
        assert _accuracy(client, held_x, held_y, version=staged) >= 0.95
        # the layers not trained are the parent's own tensors: shared, not copied
        registry = client.app.state.registry  # type: ignore[attr-defined]
        parent, child = registry.get("digits").residency.get(2), registry.get("digits").residency.get(3)
        for node in ("fc1", "fc2"):
            assert child.modules[node] is parent.modules[node]
        assert not torch.equal(child.modules["fc3"].weight, parent.modules["fc3"].weight)
        versions = {v["version"]: v for v in client.get("/v1/models/digits/versions").json()["versions"]}
        assert versions[3]["staged"] and versions[3]["ops"][0]["op"] == "fit"
        assert versions[3]["ops"][0]["job"] == job["id"] and versions[3]["parent"] == 2
        # a rollout with an evaluation gate promotes it
        rollout = {
            "candidate": staged,
            "canary": 0.5,
            "eval_dataset": "heldout",
            "gates": {"min_requests": 30, "min_eval_accuracy": 0.95, "max_error_rate": 0.0},
        }
        assert client.put("/v1/models/digits/rollout", json=rollout, headers=AUTH).status_code == 201
        deadline = time.monotonic() + 60
        while client.get("/v1/models/digits/rollout").json()["state"] in ("evaluating", "running"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert client.get("/v1/models/digits/rollout").json()["state"] == "promoted"
    assert traffic.failures == [] and traffic.count > 50
    assert client.get("/v1/models/digits").json()["version"] == 3
    assert _accuracy(client, held_x, held_y) >= 0.95


def test_grow_then_train_only_the_inserted_layer_keeps_the_function(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    x, y = digits()
    _put(client, "train", x[:1000], y[:1000])
    _put(client, "heldout", x[1000:], y[1000:])
    grow = {
        "op": "insert",
        "after": "relu2",
        "name": "grown",
        "init": "identity",
        "layer": {"type": "Linear", "in_features": 64, "out_features": 64},
    }
    assert client.post("/v1/models/digits/edits", json={"ops": [grow]}, headers=AUTH).status_code == 200
    start = _accuracy(client, x[1000:], y[1000:])
    spec = {"train": ["grown"], "dataset": "train", "steps": 120, "lr": 1e-3, "eval": "heldout", "eval_every": 20}
    job = client.post("/v1/models/digits/fit", json=spec, headers=AUTH).json()
    done = _wait(client, job["id"])
    assert done["state"] == "succeeded", done
    assert abs(done["eval_before"]["accuracy"] - start) < 1e-9
    curve = [p["accuracy"] for p in done["eval_curve"]]
    assert len(curve) == 6 and min(curve) >= start - 0.01, (start, curve)
    assert done["eval_after"]["accuracy"] >= start - 0.01


def test_feedback_labels_earlier_requests_by_id_and_a_job_trains_on_them(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(feedback_window=1000)
    x, y = digits()
    ids = []
    for i in range(500):
        r = client.post(
            "/v1/models/digits/infer", json={"inputs": x[i : i + 1].tolist()}, headers={"X-Request-Id": f"q{i}"}
        )
        assert r.status_code == 200 and r.headers["x-request-id"] == f"q{i}"
        ids.append(f"q{i}")
    labels = {rid: int(y[i]) for i, rid in enumerate(ids)}
    labels["never-sent"] = 3
    r = client.post("/v1/models/digits/feedback", json={"dataset": "fb", "labels": labels}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["added"] == 500 and r.json()["rows"] == 500 and r.json()["missing"] == ["never-sent"]
    r = client.post("/v1/models/digits/feedback", json={"dataset": "fb", "labels": {"q0": 0, "q1": 1}}, headers=AUTH)
    assert r.json()["rows"] == 502  # feedback extends the dataset
    assert_error(
        client.post("/v1/models/digits/feedback", json={"dataset": "fb", "labels": {"x": 1}}, headers=AUTH), 404
    )
    job = client.post("/v1/models/digits/fit", json={"train": ["fc3"], "dataset": "fb", "steps": 30}, headers=AUTH)
    assert job.status_code == 201, job.text
    assert _wait(client, job.json()["id"])["state"] == "succeeded"


def test_feedback_is_off_unless_asked_for(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    client.post("/v1/models/digits/infer", json={"inputs": [[0.0] * 64]}, headers={"X-Request-Id": "q"})
    body = assert_error(
        client.post("/v1/models/digits/feedback", json={"dataset": "fb", "labels": {"q": 1}}, headers=AUTH), 400
    )
    assert "--feedback-window" in body["error"]


def test_the_same_seed_data_and_version_give_the_same_weights(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    x, y = digits()
    _put(client, "train", x[:300], y[:300])
    spec = {"train": ["fc3", "fc2"], "dataset": "train", "steps": 25, "seed": 11, "optimizer": "sgd", "lr": 0.05}
    versions = []
    for _ in range(2):
        job = client.post("/v1/models/digits/fit", json=spec, headers=AUTH).json()
        versions.append(_wait(client, job["id"])["version"])
    registry = client.app.state.registry  # type: ignore[attr-defined]
    a, b = (registry.get("digits").residency.get(v) for v in versions)
    for node in ("fc2", "fc3"):
        assert torch.equal(a.modules[node].weight, b.modules[node].weight)
    other = client.post("/v1/models/digits/fit", json={**spec, "seed": 12}, headers=AUTH).json()
    c = registry.get("digits").residency.get(_wait(client, other["id"])["version"])
    assert not torch.equal(a.modules["fc3"].weight, c.modules["fc3"].weight)


def test_cancel_and_one_job_at_a_time(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    x, y = digits()
    _put(client, "train", x[:300], y[:300])
    job = client.post(
        "/v1/models/digits/fit", json={"train": ["fc3"], "dataset": "train", "steps": 100_00}, headers=AUTH
    )
    assert job.status_code == 201
    job_id = job.json()["id"]
    body = assert_error(
        client.post("/v1/models/digits/fit", json={"train": ["fc3"], "dataset": "train", "steps": 5}, headers=AUTH), 409
    )
    assert job_id in body["error"]
    r = client.delete(f"/v1/models/digits/jobs/{job_id}", headers=AUTH)
    assert r.status_code == 200 and r.json()["state"] == "cancelled" and r.json()["version"] is None
    assert client.get("/v1/models/digits").json()["latest"] == 1  # nothing was committed
    listed = client.get("/v1/models/digits/jobs").json()["jobs"]
    assert [j["state"] for j in listed] == ["cancelled"]
    again = client.post("/v1/models/digits/fit", json={"train": ["fc3"], "dataset": "train", "steps": 5}, headers=AUTH)
    assert again.status_code == 201 and _wait(client, again.json()["id"])["state"] == "succeeded"


@pytest.mark.parametrize(
    "spec,status,words",
    [
        ({"train": ["nope"], "dataset": "train", "steps": 5}, 422, ["nope"]),
        ({"train": ["relu1"], "dataset": "train", "steps": 5}, 422, ["relu1", "no parameters"]),
        ({"train": "zzz", "dataset": "train", "steps": 5}, 422, ["zzz"]),
        ({"train": ["fc3"], "dataset": "missing", "steps": 5}, 404, ["missing"]),
        ({"train": ["fc3"], "dataset": "train", "steps": 5, "loss": "mse"}, 422, ["targets"]),
        ({"train": ["fc3"], "dataset": "train", "steps": 5, "epochs": 1}, 422, []),
        ({"train": ["fc3"], "dataset": "train"}, 422, []),
        ({"train": ["fc3"], "dataset": "train", "steps": 50_000}, 422, ["--max-fit-steps"]),
        ({"train": ["fc3"], "dataset": "train", "steps": 5, "optimizer": "lbfgs"}, 422, []),
        ({"train": ["fc3"], "dataset": "train", "steps": 5, "lr": -1}, 422, []),
        ({"train": ["fc3"], "dataset": "train", "steps": 5, "eval_every": 2}, 422, []),
        ({"train": ["fc3"], "dataset": "train", "steps": 5, "version": 9}, 404, []),
    ],
)
def test_bad_jobs_are_refused_naming_the_problem_and_change_nothing(
    make_client: Callable[..., TestClient], spec: dict[str, Any], status: int, words: list[str]
) -> None:
    client = make_client(max_fit_steps=10_000)
    x, y = digits()
    _put(client, "train", x[:50], y[:50])
    assert_error(client.post("/v1/models/digits/fit", json=spec, headers=AUTH), status, *words)
    assert client.get("/v1/models/digits/jobs").json()["jobs"] == []
    assert client.get("/v1/models/digits").json()["latest"] == 1
    assert_error(client.get("/v1/models/digits/jobs/1-00000000"), 404)


def test_a_job_too_large_for_the_memory_budget_is_refused_before_it_starts(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(max_model_bytes=120_000)  # digits is ~69 KB: training fc1 with AdamW needs more
    x, y = digits()
    _put(client, "train", x[:50], y[:50])
    body = assert_error(
        client.post(
            "/v1/models/digits/fit",
            json={"train": ["fc1"], "dataset": "train", "steps": 5, "batch_size": 4096},
            headers=AUTH,
        ),
        422,
        "--max-model-bytes",
    )
    assert body["needed_bytes"] > body["limit_bytes"] == 120_000

"""Server metadata, health and metrics: `GET /v2`, `/v2/health/live`, `/v2/health/ready`, `/metrics`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import AUTH
from tests.integration.helpers import X, assert_error, head_ops, v1_body


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, dict(s.labels), s.value) for fam in text_string_to_metric_families(text) for s in fam.samples]


def _value(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float | None:
    for n, ls, v in samples:
        if n == name and all(ls.get(k) == val for k, val in labels.items()):
            return v
    return None


def test_server_metadata_advertises_binary_extension(client: TestClient) -> None:
    r = client.get("/v2")
    assert r.status_code == 200
    body = r.json()
    assert body["name"] == "morphserve"
    assert isinstance(body["version"], str) and body["version"]
    assert "binary_tensor_data" in body["extensions"]


def test_live_and_ready(client: TestClient) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    r = client.get("/v2/health/ready")
    assert r.status_code == 200 and r.json() == {"ready": True}


def test_an_empty_server_is_ready(make_client: Callable[..., TestClient]) -> None:
    """Readiness is "can serve what it was asked to serve": with nothing asked, a load balancer must keep routing
    to it, or an admin who deleted the last model could never create the next one through the balancer."""
    c = make_client(models=[])
    assert c.get("/v2/health/live").status_code == 200
    assert c.get("/v2/health/ready").json() == {"ready": True}
    assert (
        c.post("/v1/models", json={"name": "m", "zoo": "mlp", "options": {"hidden": 8}}, headers=AUTH).status_code
        == 201
    )
    assert c.delete("/v1/models/m", headers=AUTH).status_code == 200
    assert c.get("/v2/health/ready").json() == {"ready": True}


def test_not_ready_while_a_model_it_was_asked_to_serve_failed(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    state = tmp_path / "state"
    make_client(models=["mlp"], state_dir=state).__exit__(None, None, None)
    for blob in (state / "blobs").glob("*/*.safetensors"):
        blob.write_bytes(b"damaged")
    c = make_client(models=["digits"], state_dir=state)
    body = assert_error(c.get("/v2/health/ready"), 503, "mlp")
    assert body["ready"] is False
    assert c.get("/v1/models/digits").status_code == 200  # what did load serves meanwhile


def test_metrics_exposes_requests_batches_queue_version_and_edits(client: TestClient) -> None:
    for _ in range(3):
        assert client.post("/v1/models/digits/infer", json=v1_body()).status_code == 200
    assert client.post("/v1/models/nope/infer", json=v1_body()).status_code == 404
    assert client.post("/v1/models/digits/edits", json={"ops": head_ops(2.0)}, headers=AUTH).status_code == 200
    bad = {"ops": [{"op": "remove", "node": "fc3"}]}  # changes the output shape: rejected
    assert client.post("/v1/models/digits/edits", json=bad, headers=AUTH).status_code == 422

    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    s = _samples(r.text)

    # request counts by route template and status (templates, not raw paths: bounded labels)
    assert _value(s, "morphserve_requests_total", method="POST", route="/v1/models/{model}/infer", status="200") == 3
    assert _value(s, "morphserve_requests_total", method="POST", route="/v1/models/{model}/infer", status="404") == 1
    assert not any("nope" in str(ls) for _, ls, _ in s)
    assert (
        _value(s, "morphserve_request_duration_seconds_count", method="POST", route="/v1/models/{model}/infer") or 0
    ) >= 4
    # batch-size histogram: three batches of X's rows
    assert _value(s, "morphserve_batch_size_count", model="digits") == 3
    assert _value(s, "morphserve_batch_size_sum", model="digits") == 3 * len(X)
    # queue depth gauge, read at scrape time
    assert _value(s, "morphserve_queue_depth", model="digits") == 0
    # the version now serving
    assert _value(s, "morphserve_model_version", model="digits") == 2
    # edit counters and latency
    assert _value(s, "morphserve_edits_total", model="digits", outcome="committed") == 1
    assert _value(s, "morphserve_edits_total", model="digits", outcome="rejected") == 1
    assert _value(s, "morphserve_edit_duration_seconds_count", model="digits") == 1
    # inferences by model (not by version: that label set would grow with every edit)
    assert _value(s, "morphserve_inferences_total", model="digits") == 3


def test_metrics_model_version_follows_edits_and_rollback(client: TestClient) -> None:
    def version() -> float | None:
        return _value(_samples(client.get("/metrics").text), "morphserve_model_version", model="digits")

    assert version() == 1
    client.post("/v1/models/digits/edits", json={"ops": head_ops(1.0)}, headers=AUTH).raise_for_status()
    assert version() == 2
    client.post("/v1/models/digits/rollback", json={"version": 1}, headers=AUTH).raise_for_status()
    assert version() == 3

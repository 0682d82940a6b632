"""Limits and policy: body size (413), the admin-token rule by listen address, request timeouts, and the one
JSON error shape for anything a client can send (never a 500)."""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save as save_safetensors

from morphserve.main import create_app
from morphserve.settings import Settings
from tests.conftest import AUTH
from tests.integration.helpers import X, assert_error, hold, identity_insert

LIMIT = int(0.01 * 1024 * 1024)  # max_body_mb=0.01


@pytest.fixture
def small(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(max_body_mb=0.01)


# -- 413 ---------------------------------------------------------------------------------------------------------
def _big_infer() -> dict[str, Any]:
    return {"inputs": [[0.123456789] * 64] * 40}  # ~50 KB of JSON


@pytest.mark.parametrize(
    "method,path,kw",
    [
        ("POST", "/v1/models/digits/infer", {"json": _big_infer()}),
        (
            "POST",
            "/v2/models/digits/infer",
            {"content": b"{" + b" " * (LIMIT + 1) + b"}", "headers": {"Content-Type": "application/json"}},
        ),
        ("POST", "/v1/models/digits/edits", {"json": {"ops": [identity_insert()] * 200}, "headers": AUTH}),
        (
            "PUT",
            "/v1/models/digits/layers/fc3/weights",
            {
                "content": save_safetensors({"weight": torch.zeros(10, 64), "bias": torch.zeros(10)}) + b"\0" * LIMIT,
                "headers": {**AUTH, "Content-Type": "application/octet-stream"},
            },
        ),
        ("POST", "/v1/models", {"json": {"name": "x", "spec": {"pad": "x" * LIMIT}}, "headers": AUTH}),
    ],
)
def test_body_over_the_limit_413(small: TestClient, method: str, path: str, kw: dict[str, Any]) -> None:
    body = assert_error(small.request(method, path, **kw), 413, "limit", str(LIMIT))
    assert body["error"]
    assert small.get("/v1/models/digits").json()["version"] == 1
    assert [m["name"] for m in small.get("/v1/models").json()["models"]] == ["digits"]


def test_chunked_body_over_the_limit_413(small: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b" " * 1024

    r = small.post("/v1/models/digits/infer", content=chunks(), headers={"Content-Type": "application/json"})
    assert_error(r, 413, "limit")


def test_chunked_body_under_the_limit_is_served(small: TestClient) -> None:
    import orjson

    payload = orjson.dumps({"inputs": X[:1].tolist()})

    def chunks() -> Iterator[bytes]:
        yield payload[:10]
        yield payload[10:]

    r = small.post("/v1/models/digits/infer", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text


def test_body_under_the_limit_is_served(small: TestClient) -> None:
    assert small.post("/v1/models/digits/infer", json={"inputs": X.tolist()}).status_code == 200
    r = small.post("/v1/models/digits/edits", json={"ops": [identity_insert()]}, headers=AUTH)
    assert r.status_code == 200, r.text


def test_invalid_content_length_400(small: TestClient) -> None:
    r = small.post(
        "/v1/models/digits/infer", content=b"{}", headers={"Content-Length": "abc", "Content-Type": "application/json"}
    )
    assert_error(r, 400, "Content-Length")


# -- the admin-token rule ------------------------------------------------------------------------------------------
def test_loopback_without_token_allows_edits(make_client: Callable[..., TestClient]) -> None:
    c = make_client(admin_token=None, host="127.0.0.1")
    assert c.app.state.admin_token is None  # type: ignore[attr-defined]
    r = c.post("/v1/models/digits/edits", json={"ops": [identity_insert()]})
    assert r.status_code == 200, r.text
    assert c.post("/v1/models/digits/rollback", json={"version": 1}).status_code == 200
    assert c.post("/v1/models", json={"name": "m", "zoo": "mlp", "options": {"hidden": 4}}).status_code == 201
    assert c.delete("/v1/models/m").status_code == 200


@pytest.mark.parametrize("host", ["localhost", "::1", "127.0.0.2"])
def test_other_loopback_hosts_need_no_token(tmp_path: Path, host: str) -> None:
    app = create_app(Settings(models=["digits"], admin_token=None, host=host, state_dir=tmp_path / "s"))
    assert app.state.admin_token is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com"])
def test_non_loopback_without_token_generates_one(tmp_path: Path, host: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="morphserve"):
        app = create_app(Settings(models=["digits"], admin_token=None, host=host, state_dir=tmp_path / "s"))
    token = app.state.admin_token
    assert isinstance(token, str) and len(token) >= 32
    assert sum(token in rec.getMessage() for rec in caplog.records) == 1  # logged once
    with TestClient(app) as c:
        assert_error(c.post("/v1/models/digits/edits", json={"ops": [identity_insert()]}), 401)
        assert_error(
            c.post(
                "/v1/models/digits/edits",
                json={"ops": [identity_insert()]},
                headers={"Authorization": "Bearer guessed"},
            ),
            403,
        )
        assert c.post("/v1/models/digits/infer", json={"inputs": X.tolist()}).status_code == 200  # inference open
        r = c.post(
            "/v1/models/digits/edits", json={"ops": [identity_insert()]}, headers={"Authorization": f"Bearer {token}"}
        )
        assert r.status_code == 200, r.text
    other = create_app(Settings(models=["digits"], admin_token=None, host=host, state_dir=tmp_path / "s2"))
    assert other.state.admin_token != token  # fresh per start


def test_configured_token_wins_on_any_host(tmp_path: Path) -> None:
    app = create_app(Settings(models=["digits"], admin_token="given", host="0.0.0.0", state_dir=tmp_path / "s"))
    assert app.state.admin_token == "given"


# -- timeouts ----------------------------------------------------------------------------------------------------
def test_inference_timeout_is_a_json_504(make_client: Callable[..., TestClient]) -> None:
    c = make_client(request_timeout_s=0.05)
    gate = hold(c.app.state.registry)  # type: ignore[attr-defined]
    try:
        assert_error(c.post("/v1/models/digits/infer", json={"inputs": X[:1].tolist()}), 504, "longer than 0.05 s")
        assert gate.batches == [1]  # it timed out inside the model
    finally:
        gate.release()


# -- one error shape, never a 500 -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "method,path,status",
    [
        ("GET", "/nope", 404),
        ("GET", "/v1/models/digits/nothing", 404),
        ("DELETE", "/v2", 405),
        ("GET", "/v1/models/digits/edits", 405),
        ("PATCH", "/v1/models/digits", 405),
    ],
)
def test_routing_errors_are_json(client: TestClient, method: str, path: str, status: int) -> None:
    assert_error(client.request(method, path), status)


_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5)
)
_json = st.recursive(
    _scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4),
    max_leaves=12,
)
_PATHS = [
    "/v1/models/digits/infer",
    "/v2/models/digits/infer",
    "/v1/models/digits/edits",
    "/v1/models",
    "/v1/models/digits/layers",
    "/v1/models/digits/rollback",
]


def test_arbitrary_json_never_500(client: TestClient) -> None:
    """Arbitrary JSON to every route that takes a body: never a 5xx, every refusal in the one error shape, and
    nothing changes but what a 2xx says it changed (an accepted edit is one more version, an accepted create one
    more model)."""
    seen: dict[str, collections.Counter[int]] = collections.defaultdict(collections.Counter)

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(
        path=st.sampled_from(_PATHS),
        body=_json | st.fixed_dictionaries({"inputs": _json}, optional={"ops": _json, "id": _json, "outputs": _json}),
    )
    def check(path: str, body: Any) -> None:
        r = client.post(path, json=body, headers=AUTH)
        seen[path][r.status_code] += 1
        assert r.status_code < 500, (path, body, r.status_code, r.text)
        if r.status_code >= 400:
            assert_error(r, r.status_code)

    check()
    statuses = collections.Counter[int]()
    for counts in seen.values():
        statuses.update(counts)
    # the bodies reached the validation of the routes, not only the JSON parser: both kinds of refusal were seen
    assert {400, 422} <= set(statuses), dict(seen)
    changing = ("/v1/models/digits/edits", "/v1/models/digits/layers", "/v1/models/digits/rollback")
    accepted_edits = sum(seen[p][200] for p in changing)
    assert client.get("/v1/models/digits").json()["version"] == 1 + accepted_edits, dict(seen)
    models = [m["name"] for m in client.get("/v1/models").json()["models"]]
    assert len(models) == 1 + seen["/v1/models"][201] and "digits" in models, (models, dict(seen))


def test_arbitrary_bytes_never_500(client: TestClient) -> None:
    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(path=st.sampled_from(_PATHS), body=st.binary(max_size=64), hlen=st.none() | st.integers(-5, 80))
    def check(path: str, body: bytes, hlen: int | None) -> None:
        headers = {**AUTH, "Content-Type": "application/json"}
        if hlen is not None:
            headers["Inference-Header-Content-Length"] = str(hlen)
        r = client.post(path, content=body, headers=headers)
        assert r.status_code < 500, (path, body, r.status_code, r.text)
        assert_error(r, r.status_code)

    check()


# -- memory budget (--max-model-bytes) -----------------------------------------------------------------------------
def _maxrss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_an_edit_over_the_memory_budget_is_refused_before_allocating(client: TestClient) -> None:
    """26 inserted Linear(16384, 16384) are 26 GiB: each layer is within the catalogue's bounds, the model is not.
    The edit is sized on the meta device and refused before one of those tensors exists."""
    huge = {"op": "insert", "after": "fc2", "layer": {"type": "Linear", "in_features": 16384, "out_features": 16384}}
    before = _maxrss_mib()
    r = client.post("/v1/models/digits/edits", headers=AUTH, json={"ops": [huge] * 26})
    body = assert_error(r, 422, "bytes", "--max-model-bytes")
    assert body["needed_bytes"] > 26 * 2**30 and body["limit_bytes"] < body["needed_bytes"]
    assert _maxrss_mib() - before < 512  # nothing of the 26 GiB was allocated
    assert client.get("/v1/models/digits").json()["version"] == 1
    assert client.post("/v1/models/digits/infer", json={"inputs": X[:1].tolist()}).json()["model_version"] == 1


def test_the_budget_counts_what_an_edit_removes_and_replaces(make_client: Callable[..., TestClient]) -> None:
    """digits holds 8,320 + 8,256 + 650 parameters (68,904 bytes: fc1 64->128, fc2 128->64, fc3 64->10); a budget that
    fits it allows replacing fc3 by an equal layer but not growing fc1 past the limit."""
    c = make_client(max_model_bytes=120_000)
    same = {"op": "replace", "node": "fc3", "layer": {"type": "Linear", "in_features": 64, "out_features": 10}}
    assert c.post("/v1/models/digits/edits", headers=AUTH, json={"ops": [same]}).status_code == 200
    grow = {
        "op": "replace",
        "node": "fc1",
        "layer": {"type": "Linear", "in_features": 64, "out_features": 512},
        "keep_weights": False,
    }
    assert_error(c.post("/v1/models/digits/edits", headers=AUTH, json={"ops": [grow]}), 422, "120,000")


def test_a_model_over_the_budget_is_not_created(make_client: Callable[..., TestClient]) -> None:
    c = make_client(max_model_bytes=1_000_000)
    r = c.post("/v1/models", headers=AUTH, json={"name": "big", "zoo": "mlp", "options": {"hidden": 4096}})
    assert_error(r, 422, "bytes", "1,000,000")
    assert c.get("/v1/models/big").status_code == 404

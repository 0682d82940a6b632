"""Auth (issue 7, item 6): every mutating route needs the bearer token (none: 401 with WWW-Authenticate; a wrong
one: 403) and does nothing without it; tokens are compared in constant time; no route reflects a token back;
a server on a non-loopback address without a token generates one (logged once), a loopback one needs none."""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import re
import uuid
from collections.abc import Callable, Iterator
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from safetensors.torch import save as save_safetensors

from morphserve.main import create_app
from morphserve.settings import Settings
from tests.conftest import AUTH, TOKEN
from tests.integration.helpers import X, assert_error, identity_insert

MUTATING = {"POST", "PUT", "DELETE", "PATCH"}
FC3_WEIGHTS = save_safetensors({"weight": torch.zeros(10, 64), "bias": torch.full((10,), 0.5)})
DATASET = save_safetensors({"input": torch.rand(8, 64), "labels": torch.arange(8) % 10})
#: A POSIX shared memory object the shared memory registration can name (created for this module, below).
SHM_KEY = f"/morphserve-test-auth-{os.getpid()}"

#: One request per mutating route that the token-holder gets a 2xx for (after `_setup`), so that "does nothing
#: without the token" is about a request that would have done something. Keyed by (method, route template).
REQUESTS: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {
    ("POST", "/v1/models"): (
        "/v1/models",
        {"json": {"name": "intruder", "zoo": "mlp", "options": {"hidden": 8, "depth": 1, "in_features": 4}}},
    ),
    ("DELETE", "/v1/models/{model}"): ("/v1/models/digits", {}),
    ("POST", "/v1/models/{model}/versions/{version}/pin"): ("/v1/models/digits/versions/2/pin", {}),
    ("DELETE", "/v1/models/{model}/versions/{version}/pin"): ("/v1/models/digits/versions/1/pin", {}),
    ("POST", "/v1/models/{model}/gc"): ("/v1/models/digits/gc", {"json": {"keep": 1}}),
    ("POST", "/v1/models/{model}/edits"): ("/v1/models/digits/edits", {"json": {"ops": [identity_insert("relu2")]}}),
    ("POST", "/v1/models/{model}/layers"): (
        "/v1/models/digits/layers",
        {"json": {"after": "relu2", "layer": {"type": "Identity"}}},
    ),
    ("PUT", "/v1/models/{model}/layers/{node}"): (
        "/v1/models/digits/layers/fc3",
        {"json": {"layer": {"type": "Linear", "in_features": 64, "out_features": 10}, "allow_output_change": True}},
    ),
    ("DELETE", "/v1/models/{model}/layers/{node}"): ("/v1/models/digits/layers/spare", {}),
    ("PUT", "/v1/models/{model}/layers/{node}/weights"): (
        "/v1/models/digits/layers/fc3/weights",
        {"content": FC3_WEIGHTS, "headers": {"Content-Type": "application/octet-stream"}},
    ),
    ("POST", "/v1/models/{model}/rollback"): ("/v1/models/digits/rollback", {"json": {"version": 1}}),
    ("POST", "/v1/models/{model}/versions/{version}/promote"): ("/v1/models/digits/versions/3/promote", {}),
    ("PUT", "/v1/models/{model}/rollout"): ("/v1/models/digits/rollout", {"json": {"candidate": 3, "shadow": 0.5}}),
    ("POST", "/v1/models/{model}/rollout/promote"): ("/v1/models/digits/rollout/promote", {}),
    ("POST", "/v1/models/{model}/rollout/abort"): ("/v1/models/digits/rollout/abort", {}),
    ("DELETE", "/v1/models/{model}/rollout"): ("/v1/models/digits/rollout", {}),
    ("PUT", "/v1/models/{model}/datasets/{name}"): (
        "/v1/models/digits/datasets/extra",
        {"content": DATASET, "headers": {"Content-Type": "application/octet-stream"}},
    ),
    ("DELETE", "/v1/models/{model}/datasets/{name}"): ("/v1/models/digits/datasets/eval", {}),
    # Triton's extensions (issue 26): the repository's load and unload, shared memory registration.
    ("POST", "/v2/repository/models/{model}/load"): ("/v2/repository/models/mlp/load", {}),
    ("POST", "/v2/repository/models/{model}/unload"): ("/v2/repository/models/digits/unload", {}),
    ("POST", "/v2/systemsharedmemory/region/{name}/register"): (
        "/v2/systemsharedmemory/region/r/register",
        {"json": {"key": SHM_KEY, "offset": 0, "byte_size": 64}},
    ),
    ("POST", "/v2/systemsharedmemory/region/{name}/unregister"): ("/v2/systemsharedmemory/region/r/unregister", {}),
    ("POST", "/v2/systemsharedmemory/unregister"): ("/v2/systemsharedmemory/unregister", {}),
    ("POST", "/v2/cudasharedmemory/region/{name}/register"): (
        "/v2/cudasharedmemory/region/g/register",
        {"json": {"raw_handle": {"b64": "AAAA"}, "device_id": 0, "byte_size": 64}},
    ),
    ("POST", "/v2/cudasharedmemory/region/{name}/unregister"): ("/v2/cudasharedmemory/region/g/unregister", {}),
    ("POST", "/v2/cudasharedmemory/unregister"): ("/v2/cudasharedmemory/unregister", {}),
    ("POST", "/v1/models/{model}/fit"): (
        "/v1/models/digits/fit",
        {"json": {"train": ["fc3"], "dataset": "eval", "steps": 3}},
    ),
    ("DELETE", "/v1/models/{model}/jobs/{job}"): ("/v1/models/digits/jobs/{job}", {}),
    ("POST", "/v1/models/{model}/feedback"): (
        "/v1/models/digits/feedback",
        {"json": {"dataset": "fb", "labels": {"fb-1": 3}}},
    ),
}
#: Server settings a route needs to do something at all.
CLIENT_OPTIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/v1/models/{model}/feedback"): {"feedback_window": 100}
}
#: Routes the token-holder is refused for another reason on this (GPU-less) machine: the refusal without the token
#: still comes first, and the token-holder gets this status and message instead of a 2xx.
REFUSED_HERE = {("POST", "/v2/cudasharedmemory/region/{name}/register"): (400, "needs a GPU")}
#: POSTs that only read (Triton's protocol makes the repository's index a POST): open, as inference is.
OPEN_POSTS = {("POST", "/v2/repository/index")}
#: Routes that act on a running rollout get one in their set-up.
NEEDS_ROLLOUT = {
    ("POST", "/v1/models/{model}/rollout/promote"),
    ("POST", "/v1/models/{model}/rollout/abort"),
    ("DELETE", "/v1/models/{model}/rollout"),
}


def _walk(routes: list[Any], prefix: str = "", *, in_schema: bool = True) -> list[tuple[str, str]]:
    """(method, template) of every APIRoute whose `include_in_schema` is `in_schema`, descending into included
    routers (FastAPI >= 0.16x keeps an `include_router` as one lazy `_IncludedRouter` entry in app.routes)."""
    found = []
    for r in routes:
        if isinstance(r, APIRoute):
            if r.include_in_schema == in_schema:
                found += [(m, prefix + r.path) for m in r.methods or ()]
        elif hasattr(r, "original_router"):  # an included router
            context = getattr(r, "include_context", None)
            found += _walk(
                r.original_router.routes, prefix + (getattr(context, "prefix", "") or ""), in_schema=in_schema
            )
    return found


def _routes(app: Any) -> list[tuple[str, str]]:
    """Every (method, template) the app serves, from app.routes. Routes left out of the schema (the web page's
    static files; the bundle upload, which shares POST /v1/models with the JSON form and is tested for its token
    in test_upload.py) count too, so that none can hide a mutating route from the table below."""
    routes = sorted(set(_walk(app.routes)))
    documented = {(m.upper(), p) for p, ops in app.openapi()["paths"].items() for m in ops}
    assert set(routes) == documented, "app.routes and the OpenAPI schema disagree on the routes"
    hidden = set(_walk(app.routes, in_schema=False)) - set(routes)
    return routes + sorted(hidden)


def mutating_routes(app: Any) -> list[tuple[str, str]]:
    """The mutating routes: POST/PUT/DELETE/PATCH, except inference (which is open by design)."""
    return [(m, p) for m, p in _routes(app) if m in MUTATING and not p.endswith("/infer") and (m, p) not in OPEN_POSTS]


@pytest.fixture(scope="module", autouse=True)
def _shm_object() -> Iterator[None]:
    """The shared memory object SHM_KEY names, for the registration's request."""
    seg = shared_memory.SharedMemory(name=SHM_KEY.lstrip("/"), create=True, size=4096)
    yield
    seg.close()
    with contextlib.suppress(FileNotFoundError):
        seg.unlink()


def _setup(client: TestClient, key: tuple[str, str] | None = None) -> dict[str, str]:
    """Version 2 with a removable `spare` node; version 1 pinned (so unpinning it does something); version 3
    staged (to promote, or to roll out); a dataset `eval`; for the routes of `key` that need one, a rollout of
    version 3 running, a fit job running, or a request the feedback window holds. The values of the path's
    placeholders (`{job}`)."""
    rollout = key in NEEDS_ROLLOUT
    r = client.post("/v1/models/digits/edits", json={"ops": [identity_insert("relu1", "spare")]}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert client.post("/v1/models/digits/versions/1/pin", headers=AUTH).status_code == 200
    r = client.post("/v1/models/digits/edits", json={"ops": [identity_insert("relu2")], "stage": True}, headers=AUTH)
    assert r.status_code == 200 and r.json()["staged"], r.text
    r = client.put(
        "/v1/models/digits/datasets/eval",
        content=DATASET,
        headers={**AUTH, "Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 201, r.text
    if rollout:
        r = client.put("/v1/models/digits/rollout", json={"candidate": 3, "shadow": 0.5}, headers=AUTH)
        assert r.status_code == 201, r.text
    subs: dict[str, str] = {}
    if key == ("DELETE", "/v1/models/{model}/jobs/{job}"):
        r = client.post(
            "/v1/models/digits/fit", json={"train": ["fc3"], "dataset": "eval", "steps": 9999}, headers=AUTH
        )
        assert r.status_code == 201, r.text
        subs["job"] = r.json()["id"]
    if key == ("POST", "/v1/models/{model}/feedback"):
        r = client.post("/v1/models/digits/infer", json={"inputs": X[:1].tolist()}, headers={"X-Request-Id": "fb-1"})
        assert r.status_code == 200, r.text
    return subs


def request_path(key: tuple[str, str], subs: dict[str, str]) -> tuple[str, dict[str, Any]]:
    path, request = REQUESTS[key]
    return path.format(**subs) if "{" in path else path, request


def _state(client: TestClient) -> dict[str, Any]:
    """Everything a mutating route could change: models, versions (pins included), graphs, outputs."""
    out: dict[str, Any] = {}
    for m in client.get("/v1/models").json()["models"]:
        name = m["name"]
        out[name] = {
            "info": {k: v for k, v in m.items() if k != "queue_depth"},
            "versions": client.get(f"/v1/models/{name}/versions").json(),
            "graph": client.get(f"/v1/models/{name}/graph").json(),
        }
    out["outputs"] = client.post("/v1/models/digits/infer", json={"inputs": X.tolist()}).json()
    rollout = client.get("/v1/models/digits/rollout")
    out["rollout"] = (rollout.status_code, rollout.json().get("state"), rollout.json().get("id"))
    out["datasets"] = client.get("/v1/models/digits/datasets").json()
    out["jobs"] = [(j["id"], j["state"]) for j in client.get("/v1/models/digits/jobs").json()["jobs"]]
    return out


def test_mutating_routes_are_enumerated() -> None:
    """The table above covers exactly the app's mutating routes: a new one must be added here (and guarded)."""
    app = create_app(Settings(admin_token=TOKEN, state_dir=Path("/nonexistent")))
    found = mutating_routes(app)
    assert len(found) >= 11
    assert set(found) == set(REQUESTS), {"untested": set(found) - set(REQUESTS), "gone": set(REQUESTS) - set(found)}


@pytest.mark.parametrize("method,template", sorted(REQUESTS), ids=[f"{m} {p}" for m, p in sorted(REQUESTS)])
def test_mutating_route_needs_the_token_and_does_nothing_without_it(
    make_client: Callable[..., TestClient], method: str, template: str
) -> None:
    key = (method, template)
    client = make_client(**CLIENT_OPTIONS.get(key, {}))
    path, request = request_path(key, _setup(client, key))
    kw = dict(request)
    headers = kw.pop("headers", {})
    before = _state(client)

    refusals = [
        ({}, 401),  # no Authorization header
        ({"Authorization": ""}, 401),  # an empty one
        ({"Authorization": "Bearer wrong-token"}, 403),
        ({"Authorization": f"Bearer {TOKEN}x"}, 403),  # one character longer
        ({"Authorization": f"Bearer {TOKEN[:-1]}"}, 403),  # a prefix
        ({"Authorization": "Bearer "}, 403),
        ({"Authorization": f"Basic {TOKEN}"}, 403),  # the right secret, the wrong scheme
        ({"Authorization": TOKEN}, 403),  # no scheme
    ]
    for auth, status in refusals:
        r = client.request(method, path, **kw, headers={**headers, **auth})
        body = assert_error(r, status)
        if status == 401:
            assert r.headers.get("www-authenticate", "").startswith("Bearer"), r.headers
            assert "Authorization: Bearer" in body["error"]
        assert _state(client) == before, f"{method} {path} with {auth or 'no token'} changed the server"

    # the same request with the token is accepted: the refusals above were about the token, not the request
    r = client.request(method, path, **kw, headers={**headers, **AUTH})
    if (method, template) in REFUSED_HERE:
        status, words = REFUSED_HERE[(method, template)]
        assert r.status_code == status and words in r.text, (r.status_code, r.text)
    else:
        assert 200 <= r.status_code < 300, (r.status_code, r.text)


def test_inference_and_read_routes_stay_open(client: TestClient) -> None:
    app = client.app
    open_routes = [(m, p) for m, p in _routes(app) if (m, p) not in set(mutating_routes(app))]
    assert ("POST", "/v2/models/{model}/infer") in open_routes and ("GET", "/v1/models") in open_routes
    assert ("POST", "/v2/repository/index") in open_routes and client.post("/v2/repository/index").status_code == 200
    assert client.post("/v1/models/digits/infer", json={"inputs": X.tolist()}).status_code == 200
    assert (
        client.post(
            "/v2/models/digits/infer",
            json={"inputs": [{"name": "input", "shape": [3, 64], "datatype": "FP32", "data": X.ravel().tolist()}]},
        ).status_code
        == 200
    )
    for path in ("/v2", "/v2/health/ready", "/v1/models", "/v1/models/digits/graph", "/metrics"):
        assert client.get(path).status_code == 200, path


# -- constant time --------------------------------------------------------------------------------------------------
class _Spy:
    def __init__(self, verdict: bool | None = None) -> None:
        self.calls: list[tuple[Any, Any]] = []
        self.verdict = verdict
        self.real = hmac.compare_digest

    def __call__(self, a: Any, b: Any) -> bool:
        self.calls.append((a, b))
        return self.real(a, b) if self.verdict is None else self.verdict


def test_tokens_are_compared_with_hmac_compare_digest(
    make_client: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client()
    spy = _Spy()
    monkeypatch.setattr(hmac, "compare_digest", spy)
    edit = {"ops": [identity_insert()], "dry_run": True}
    for given in ("wrong-token", "x", TOKEN + "-and-more", TOKEN[:-1], "é" * 5):
        assert_error(
            client.post("/v1/models/digits/edits", json=edit, headers={"Authorization": f"Bearer {given}".encode()}),
            403,
        )
    assert client.post("/v1/models/digits/edits", json=edit, headers=AUTH).status_code == 200
    # every check, whatever the length of the guess, went through compare_digest, with bytes on both sides
    assert len(spy.calls) == 6, spy.calls
    assert all(isinstance(a, bytes) and isinstance(b, bytes) for a, b in spy.calls)
    assert all(b == TOKEN.encode() for _, b in spy.calls)


@pytest.mark.parametrize("verdict", [True, False])
def test_compare_digest_alone_decides(
    make_client: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch, verdict: bool
) -> None:
    """No other comparison (==, a length check) stands beside it: what compare_digest says, goes."""
    client = make_client()
    monkeypatch.setattr(hmac, "compare_digest", _Spy(verdict))
    edit = {"ops": [identity_insert()], "dry_run": True}
    r = client.post(
        "/v1/models/digits/edits",
        json=edit,
        headers={"Authorization": "Bearer wrong" if verdict else f"Bearer {TOKEN}"},
    )
    assert r.status_code == (200 if verdict else 403), r.text


# -- no reflection --------------------------------------------------------------------------------------------------
def _concrete(template: str) -> str:
    return template.replace("{model}", "digits").replace("{node}", "fc3").replace("{version}", "1")


def test_no_route_reflects_a_token(make_client: Callable[..., TestClient], caplog: pytest.LogCaptureFixture) -> None:
    secret = f"s3cret-{uuid.uuid4().hex}"
    wrong = f"wr0ng-{uuid.uuid4().hex}"
    client = make_client(admin_token=secret)
    caplog.set_level(logging.DEBUG)
    seen = 0

    def check(r: Any) -> None:
        nonlocal seen
        seen += 1
        blob = r.content + b"".join(k.encode() + b":" + v.encode() for k, v in r.headers.multi_items())
        for token in (secret, wrong):
            assert token.encode() not in blob, (r.request.method, r.request.url, r.status_code, r.text[:300])

    bodies = {
        "/v1/models": {"json": {"name": "x", "zoo": "nope"}},
        "/v1/models/{model}/gc": {"json": {"keep": 1}},
        "/v1/models/{model}/rollback": {"json": {"version": 99}},
        "/v1/models/{model}/edits": {"json": {"ops": [{"op": "remove", "node": "nope"}]}},
        "/v1/models/{model}/infer": {"json": {"inputs": X.tolist()}},
    }
    # The event streams never end, which an in-process client cannot read incrementally: the unknown model's
    # 404 is checked here, and a live stream opened with a token in tests/e2e/test_events.py.
    paths = [
        (m, _concrete(p).replace("digits/events", "nope/events"), bodies.get(p, {"json": {}}))
        for m, p in _routes(client.app)
        if p != "/v1/events"
    ]
    json_ct, octet = {"Content-Type": "application/json"}, {"Content-Type": "application/octet-stream"}
    paths += [
        ("GET", "/nope", {}),
        ("DELETE", "/v2", {}),
        ("GET", "/v1/models/nope/graph", {}),
        ("POST", "/v1/models/digits/edits", {"content": b"{not json", "headers": json_ct}),
        ("PUT", "/v1/models/digits/layers/fc3/weights", {"content": b"junk", "headers": octet}),
    ]
    auths = [
        {"Authorization": f"Bearer {wrong}"},
        {"Authorization": f"Basic {wrong}"},
        {"Authorization": wrong},
        {"Authorization": f"Bearer {secret}"},
        {"X-Api-Key": wrong},
    ]
    for method, path, kw in paths:
        if method == "DELETE" and path == "/v1/models/digits":
            continue  # with the right token it would remove the model the other requests need; tried last
        for auth in auths:
            extra = dict(kw)
            headers = {**extra.pop("headers", {}), **auth}
            check(client.request(method, path, headers=headers, **extra))
            check(
                client.request(method, path, params={"token": wrong, "access_token": wrong}, headers=headers, **extra)
            )
    for auth in auths:
        check(client.delete("/v1/models/digits", headers=auth))
    check(client.get("/metrics"))
    check(client.get("/openapi.json"))
    assert seen > 300
    # nor does the server log it (the client's own httpx log of its URLs aside)
    logged = "\n".join(rec.getMessage() for rec in caplog.records if not rec.name.startswith(("httpx", "httpcore")))
    assert "request_id=" in logged  # the server's request log was captured
    assert secret not in logged and wrong not in logged


# -- no token configured: generated off loopback, none needed on loopback -------------------------------------------
@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "server.example.com"])
def test_non_loopback_without_a_token_generates_one_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, host: str
) -> None:
    caplog.set_level(logging.DEBUG)
    app = create_app(Settings(host=host, admin_token=None, state_dir=tmp_path / "state"))
    token = app.state.admin_token
    assert isinstance(token, str) and len(token) >= 32
    edit = {"ops": [identity_insert()]}
    with TestClient(app) as c:
        assert_error(c.post("/v1/models/digits/edits", json=edit), 401)
        assert_error(c.post("/v1/models/digits/edits", json=edit, headers={"Authorization": "Bearer guess"}), 403)
        for _ in range(3):
            assert c.get("/v1/models").status_code == 200
        r = c.post("/v1/models/digits/edits", json=edit, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        assert token.encode() not in r.content
    mentions = [rec for rec in caplog.records if token in rec.getMessage()]
    assert len(mentions) == 1, [rec.getMessage() for rec in mentions]
    assert mentions[0].levelno >= logging.WARNING and host in mentions[0].getMessage()
    # a second server gets a token of its own
    other = create_app(Settings(host=host, admin_token=None, state_dir=tmp_path / "other"))
    assert other.state.admin_token and other.state.admin_token != token
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_without_a_token_needs_none(tmp_path: Path, caplog: pytest.LogCaptureFixture, host: str) -> None:
    caplog.set_level(logging.DEBUG)
    app = create_app(Settings(host=host, admin_token=None, state_dir=tmp_path / "state"))
    assert app.state.admin_token is None
    with TestClient(app, base_url="http://127.0.0.1:8000") as c:  # a loopback Host, as local clients send
        r = c.post("/v1/models/digits/edits", json={"ops": [identity_insert()]})
        assert r.status_code == 200, r.text
        r = c.put(
            "/v1/models/digits/layers/fc3/weights",
            content=FC3_WEIGHTS,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert r.status_code == 200, r.text
        assert c.get("/v1/models/digits").json()["version"] == 3
    assert not [rec for rec in caplog.records if "token" in rec.getMessage().lower()]


def test_configured_token_is_never_replaced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    app = create_app(Settings(host="0.0.0.0", admin_token=TOKEN, state_dir=tmp_path / "state"))
    assert app.state.admin_token == TOKEN
    assert not [rec for rec in caplog.records if "generated" in rec.getMessage()]

"""DNS rebinding and cross-site requests (issue 11, item 1): a tokenless server changes nothing for a request whose
Host is not loopback (or allowed), and no server changes anything for a browser request from another origin unless
--cors-origins names it. Each refusal is a 403 that says why and leaves the server as it was."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.conftest import AUTH, ServerProcess
from tests.integration.helpers import assert_error
from tests.integration.test_auth import (  # noqa: F401 - _shm_object: the module's shared memory object, autouse
    NEEDS_ROLLOUT,
    REFUSED_HERE,
    REQUESTS,
    _setup,
    _shm_object,
    _state,
)


def _request(client: TestClient, key: tuple[str, str], headers: dict[str, str]) -> httpx.Response:
    path, request = REQUESTS[key]
    kw: dict[str, Any] = dict(request)
    merged = {**kw.pop("headers", {}), **headers}
    return client.request(key[0], path, **kw, headers=merged)


@pytest.mark.parametrize("key", sorted(REQUESTS), ids=[f"{m} {p}" for m, p in sorted(REQUESTS)])
def test_a_rebound_host_changes_nothing_on_a_tokenless_server(
    make_client: Callable[..., TestClient], key: tuple[str, str]
) -> None:
    client = make_client(admin_token=None, host="127.0.0.1")
    _setup(client, rollout=key in NEEDS_ROLLOUT)
    before = _state(client)
    for host in ("rebind.example:8000", "rebind.example", "127.0.0.1.rebind.example"):
        body = assert_error(_request(client, key, {"Host": host}), 403, "no admin token", "loopback", host)
        assert "--allowed-hosts" in body["error"]
        assert _state(client) == before
    r = _request(client, key, {"Host": "localhost:8000"})  # the same request from a local client is served
    if key in REFUSED_HERE:  # or refused for what this machine lacks, past the Host check
        assert r.status_code == REFUSED_HERE[key][0] and REFUSED_HERE[key][1] in r.text, r.text
    else:
        assert 200 <= r.status_code < 300, r.text


def test_allowed_hosts_extend_the_loopback_names(make_client: Callable[..., TestClient]) -> None:
    client = make_client(admin_token=None, host="127.0.0.1", allowed_hosts=["models.internal"])
    r = client.post("/v1/models/digits/versions/1/pin", headers={"Host": "models.internal:8000"})
    assert r.status_code == 200, r.text
    assert_error(client.post("/v1/models/digits/versions/1/pin", headers={"Host": "other.internal:8000"}), 403)


def test_reads_and_inference_stay_open_for_any_host(make_client: Callable[..., TestClient]) -> None:
    client = make_client(admin_token=None, host="127.0.0.1")
    assert client.get("/v1/models", headers={"Host": "rebind.example"}).status_code == 200
    r = client.post("/v1/models/digits/infer", json={"inputs": [[0.0] * 64]}, headers={"Host": "rebind.example"})
    assert r.status_code == 200


@pytest.mark.parametrize("token", [None, "t0ken"])
def test_a_cross_origin_browser_request_changes_nothing(
    make_client: Callable[..., TestClient], token: str | None
) -> None:
    client = make_client(admin_token=token, host="127.0.0.1")
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    before = _state(client)
    for origin in ("http://evil.example", "null", "http://127.0.0.1:9999"):
        r = client.delete("/v1/models/digits", headers={**auth, "Origin": origin})
        assert_error(r, 403, "cross-origin", origin)
    assert _state(client) == before
    same = client.post("/v1/models/digits/versions/1/pin", headers={**auth, "Origin": "http://127.0.0.1:8000"})
    assert same.status_code == 200, same.text  # the page the server serves itself (/ui/) is same-origin


def test_cors_origins_allow_a_named_page(make_client: Callable[..., TestClient]) -> None:
    client = make_client(cors_origins=["https://dash.example"])
    pre = client.options(
        "/v1/models/digits/versions/1/pin",
        headers={
            "Origin": "https://dash.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "https://dash.example"
    r = client.post("/v1/models/digits/versions/1/pin", headers={**AUTH, "Origin": "https://dash.example"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://dash.example"
    assert_error(
        client.post("/v1/models/digits/versions/1/pin", headers={**AUTH, "Origin": "https://x.example"}),
        403,
        "cross-origin",
    )


def test_the_outside_run_rebinding_attack_on_a_real_server(start_server: Callable[..., ServerProcess]) -> None:
    """What an outside run did: DELETE /v1/models/digits with a rebound Host on a tokenless loopback server."""
    server = start_server("--model", "digits")
    port = server.port
    r = httpx.delete(f"{server.url}/v1/models/digits", headers={"Host": f"rebind.example:{port}"})
    assert_error(r, 403, "no admin token")
    assert httpx.get(f"{server.url}/v1/models/digits").status_code == 200  # still there
    assert httpx.delete(f"{server.url}/v1/models/digits").status_code == 200  # a local client may

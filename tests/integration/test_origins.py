"""DNS rebinding and cross-site requests (issue 11, item 1; issue 24, item 5): a tokenless server answers nothing
but its health checks for a request whose Host is not loopback (or allowed), so a rebinding page can neither read
model data nor change anything; no server changes anything for a browser request from another origin unless
--cors-origins names it, and `--cors-origins '*'` needs a token. Each refusal is a 403 that says why and leaves the
server as it was."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from typer.testing import CliRunner

from morphserve.cli import cli
from morphserve.settings import Settings
from tests.conftest import AUTH, ServerProcess
from tests.integration.helpers import assert_error
from tests.integration.test_auth import (  # noqa: F401 - _shm_object: the module's shared memory object, autouse
    CLIENT_OPTIONS,
    REFUSED_HERE,
    REQUESTS,
    _setup,
    _shm_object,
    _state,
    request_path,
)


def _request(client: TestClient, key: tuple[str, str], headers: dict[str, str], subs: dict[str, str]) -> httpx.Response:
    path, request = request_path(key, subs)
    kw: dict[str, Any] = dict(request)
    merged = {**kw.pop("headers", {}), **headers}
    return client.request(key[0], path, **kw, headers=merged)


@pytest.mark.parametrize("key", sorted(REQUESTS), ids=[f"{m} {p}" for m, p in sorted(REQUESTS)])
def test_a_rebound_host_changes_nothing_on_a_tokenless_server(
    make_client: Callable[..., TestClient], key: tuple[str, str]
) -> None:
    client = make_client(admin_token=None, host="127.0.0.1", **CLIENT_OPTIONS.get(key, {}))
    subs = _setup(client, key)
    before = _state(client)
    for host in ("rebind.example:8000", "rebind.example", "127.0.0.1.rebind.example"):
        body = assert_error(_request(client, key, {"Host": host}, subs), 403, "no admin token", "loopback", host)
        assert "--allowed-hosts" in body["error"]
        assert _state(client) == before
    r = _request(client, key, {"Host": "localhost:8000"}, subs)  # the same request from a local client is served
    if key in REFUSED_HERE:  # or refused for what this machine lacks, past the Host check
        assert r.status_code == REFUSED_HERE[key][0] and REFUSED_HERE[key][1] in r.text, r.text
    else:
        assert 200 <= r.status_code < 300, r.text


def test_allowed_hosts_extend_the_loopback_names(make_client: Callable[..., TestClient]) -> None:
    client = make_client(admin_token=None, host="127.0.0.1", allowed_hosts=["models.internal"])
    r = client.post("/v1/models/digits/versions/1/pin", headers={"Host": "models.internal:8000"})
    assert r.status_code == 200, r.text
    assert_error(client.post("/v1/models/digits/versions/1/pin", headers={"Host": "other.internal:8000"}), 403)


#: Every read that hands out model data (issue 24, item 5: a rebinding page read the weights export, the graph,
#: metrics and replicas of a tokenless server), and inference, which computes with the model.
READS: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/v1/models/digits/versions/1/export", {}),
    ("GET", "/v1/models/digits/graph", {}),
    ("GET", "/v1/models/digits/graph?format=dot", {}),
    ("GET", "/v1/models/digits/graph?format=svg", {}),
    ("GET", "/v1/models", {}),
    ("GET", "/v1/models/digits", {}),
    ("GET", "/v1/models/digits/versions", {}),
    ("GET", "/v1/models/digits/nodes/fc3/weights", {}),
    ("GET", "/metrics", {}),
    ("GET", "/v1/replicas", {}),
    ("GET", "/v2/models/digits", {}),
    ("GET", "/v1/catalogue", {}),
    ("GET", "/ui/", {}),
    ("GET", "/openapi.json", {}),
    ("POST", "/v1/models/digits/infer", {"json": {"inputs": [[0.0] * 64]}}),
    (
        "POST",
        "/v2/models/digits/infer",
        {"json": {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]}},
    ),
]


@pytest.mark.parametrize("method,path,kw", READS, ids=[f"{m} {p}" for m, p, _ in READS])
def test_a_rebound_host_reads_nothing_of_a_tokenless_server(
    make_client: Callable[..., TestClient], method: str, path: str, kw: dict[str, Any]
) -> None:
    client = make_client(admin_token=None, host="127.0.0.1")
    r = client.request(method, path, **kw, headers={"Host": "rebind.example:8000"})
    body = assert_error(r, 403, "no admin token", "loopback", "rebind.example:8000", "--allowed-hosts")
    assert "digits" not in r.text.replace(path, "") or "fc3" not in r.text, body  # nothing of the model in it
    local = client.request(method, path, **kw, headers={"Host": "localhost:8000"})
    assert local.status_code == 200, local.text[:300]  # the same request from a local client is answered


def test_health_and_a_server_with_a_token_stay_open_to_any_host(make_client: Callable[..., TestClient]) -> None:
    """The health checks say only that the server is up; a server with a token takes its reads from anyone who
    reaches it (it may listen behind any name), and guards its changes with the token."""
    tokenless = make_client(admin_token=None, host="127.0.0.1")
    for path in ("/v2/health/live", "/v2/health/ready"):
        assert tokenless.get(path, headers={"Host": "rebind.example"}).status_code == 200
    tokened = make_client()
    assert tokened.get("/v1/models/digits/graph", headers={"Host": "rebind.example"}).status_code == 200
    r = tokened.post("/v1/models/digits/infer", json={"inputs": [[0.0] * 64]}, headers={"Host": "rebind.example"})
    assert r.status_code == 200


def test_a_rebinding_page_reads_nothing_of_a_real_tokenless_server(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--model", "digits")
    rebound = {"Host": f"rebind.example:{server.port}"}
    for path in ("/v1/models/digits/versions/1/export", "/v1/models/digits/graph", "/metrics", "/v1/replicas"):
        r = httpx.get(f"{server.url}{path}", headers=rebound)
        assert_error(r, 403, "no admin token")
        assert httpx.get(f"{server.url}{path}").status_code == 200


def test_cors_any_origin_without_a_token_refuses_to_start(tmp_path: Path) -> None:
    """`--cors-origins '*'` on a tokenless server would let any page a user visits delete its models (issue 24)."""
    with pytest.raises(ValidationError, match="--admin-token"):
        Settings(cors_origins=["*"], admin_token=None, host="127.0.0.1", state_dir=tmp_path / "s")
    r = CliRunner().invoke(cli, ["serve", "--cors-origins", "*", "--state-dir", str(tmp_path / "s")])
    assert r.exit_code == 1 and "--cors-origins '*'" in r.output and "--admin-token" in r.output, r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
    Settings(cors_origins=["*"], admin_token="t", host="127.0.0.1", state_dir=tmp_path / "s")  # with a token: fine


def test_cors_any_origin_with_a_token_still_needs_the_token(make_client: Callable[..., TestClient]) -> None:
    client = make_client(cors_origins=["*"])
    before = _state(client)
    assert_error(client.delete("/v1/models/digits", headers={"Origin": "http://evil.example"}), 401)
    assert _state(client) == before


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


# -- what a browser may do with an answer ----------------------------------------------------------------------------
def test_every_api_answer_says_nosniff_and_runs_nothing(make_client: Callable[..., TestClient]) -> None:
    """SVG, DOT, JSON, the export and errors carry `nosniff` and a CSP under which nothing in them can run, load or
    be framed, even if a browser is led to render one as a page; the web page keeps its own policy."""
    client = make_client(max_body_mb=0.01)
    answers = [
        client.get("/v1/models/digits/graph"),
        client.get("/v1/models/digits/graph?format=svg"),
        client.get("/v1/models/digits/graph?format=dot"),
        client.get("/v1/models/digits/versions/1/export"),
        client.get("/metrics"),
        client.get("/openapi.json"),
        client.get("/v1/models/nope"),
        client.post("/v1/models/digits/infer", content=b"{" + b" " * 20_000 + b"}"),
        client.post("/v1/models/digits/edits", json={"ops": []}),
    ]
    for r in answers:
        assert r.headers.get("x-content-type-options") == "nosniff", (r.request.url, r.headers)
        csp = r.headers.get("content-security-policy", "")
        assert "default-src 'none'" in csp and "sandbox" in csp and "frame-ancestors 'none'" in csp, r.request.url
    page = client.get("/ui/")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"


def test_the_interactive_docs_are_off_unless_asked(make_client: Callable[..., TestClient]) -> None:
    """/docs and /redoc load scripts from a CDN on the origin that keeps the admin token: off by default; with
    --docs, under a policy that allows that CDN's scripts (and the page's one inline script, by hash) only."""
    off = make_client()
    for path in ("/docs", "/redoc"):
        assert_error(off.get(path), 404)
    assert off.get("/openapi.json").status_code == 200  # the schema itself is data, always there
    on = make_client(docs=True)
    for path in ("/docs", "/redoc"):
        r = on.get(path)
        assert r.status_code == 200 and "text/html" in r.headers["content-type"]
        policy = dict(p.strip().split(" ", 1) for p in r.headers["content-security-policy"].split(";") if p.strip())
        assert policy["default-src"] == "'none'" and policy["connect-src"] == "'self'"
        scripts = policy["script-src"].split()
        assert "'unsafe-inline'" not in scripts and "'unsafe-eval'" not in scripts
        assert all(s == "https://cdn.jsdelivr.net" or s.startswith("'sha256-") for s in scripts), scripts
        assert "cdn.jsdelivr.net" in r.text
        assert on.get(path, params={"body": "<script>alert(1)</script>"}).text == r.text  # nothing reflected

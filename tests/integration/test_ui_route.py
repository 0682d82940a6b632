"""The web page's route: the shipped bundle at /ui/, deep links, caching, compression and a strict CSP."""

from __future__ import annotations

import gzip
import json
import re

import pytest
from fastapi.testclient import TestClient

from morphserve.api.routes import ui
from tests.integration.helpers import assert_error


def _assets() -> list[str]:
    info = json.loads((ui.STATIC_DIR / "build-info.json").read_text())
    return sorted(info["outputs"])


@pytest.mark.parametrize(
    "path",
    [
        "/ui/",
        "/ui/index.html",
        "/ui/models/digits",
        "/ui/models/digits/",
        "/ui/models/digits?version=2&diff=1",
        "/ui/models/some-other.model_1",
    ],
)
def test_index_for_the_page_and_its_deep_links(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html")
    assert r.content == (ui.STATIC_DIR / "index.html").read_bytes()
    assert r.headers["cache-control"] == "no-cache"
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
    assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"


def test_index_references_only_shipped_same_origin_assets(client: TestClient) -> None:
    html = client.get("/ui/").text
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert refs and all(ref.startswith("/ui/") for ref in refs), refs
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "an inline script would need 'unsafe-inline'"
    for ref in refs:
        assert client.get(ref).status_code == 200, ref


def test_assets_are_served_immutable_and_gzipped(client: TestClient) -> None:
    names = [n for n in _assets() if n.startswith("assets/")]
    assert any(n.endswith(".js") for n in names) and any(n.endswith(".css") for n in names)
    for name in names:
        body = (ui.STATIC_DIR / name).read_bytes()
        plain = client.get(f"/ui/{name}", headers={"accept-encoding": "identity"})
        assert plain.status_code == 200 and plain.content == body
        assert plain.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert "content-security-policy" in plain.headers
        if name.endswith(".js"):
            assert plain.headers["content-type"].split(";")[0] in ("text/javascript", "application/javascript")
        packed = client.get(f"/ui/{name}", headers={"accept-encoding": "gzip"})
        assert packed.headers.get("content-encoding") == "gzip" and packed.headers["vary"] == "Accept-Encoding"
        assert packed.content == body  # httpx decodes; the wire bytes were smaller:
        assert int(packed.headers["content-length"]) < len(body)
        assert gzip.decompress(gzip.compress(body)) == body


def test_etag_revalidation(client: TestClient) -> None:
    first = client.get("/ui/")
    again = client.get("/ui/", headers={"if-none-match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


def test_head_and_redirect(client: TestClient) -> None:
    assert client.head("/ui/").status_code == 200
    r = client.get("/ui", follow_redirects=False)
    assert r.status_code == 308 and r.headers["location"] == "/ui/"


@pytest.mark.parametrize(
    "path",
    [
        "/ui/nope.js",
        "/ui/assets/nope.js",
        "/ui/models",
        "/ui/models/a/b",
        "/ui/../app/main.py",
        "/ui/%2e%2e/app/main.py",
        "/ui/build-info.json/x",
    ],
)
def test_anything_else_is_a_json_404(client: TestClient, path: str) -> None:
    assert_error(client.get(path), 404)


def test_reading_the_page_needs_no_token(client: TestClient) -> None:
    # `client` has an admin token configured; the page, like the graph routes, is open.
    assert client.get("/ui/models/digits").status_code == 200

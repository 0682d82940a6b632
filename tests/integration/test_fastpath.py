"""The inference fast path answers exactly as the router does: the same request, sent once through the fast path
and once with the fast path switched off, gets the same status, body and headers, for good and bad input alike."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from morphserve.api import fastpath
from tests.integration.helpers import X

RAW = np.ascontiguousarray(X[:2], dtype="<f4").tobytes()
HEADER = json.dumps(
    {
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": [2, 64], "parameters": {"binary_data_size": len(RAW)}}
        ],
        "parameters": {"binary_data_output": True},
    }
).encode()
JSON = {"content-type": "application/json"}
OIP_JSON = json.dumps(
    {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 64], "data": X[:2].reshape(-1).tolist()}]}
).encode()

CASES: list[tuple[str, str, bytes, dict[str, str]]] = [
    ("v1 ok", "/v1/models/digits/infer", json.dumps({"inputs": X[:2].tolist()}).encode(), JSON),
    ("v1 by name", "/v1/models/digits/infer", json.dumps({"inputs": {"input": X[:1].tolist()}}).encode(), JSON),
    ("v1 not json", "/v1/models/digits/infer", b"{inputs: 1", JSON),
    ("v1 empty", "/v1/models/digits/infer", b"", JSON),
    ("v1 no content type", "/v1/models/digits/infer", b"{}", {}),
    ("v1 text", "/v1/models/digits/infer", b"{}", {"content-type": "text/plain"}),
    ("v1 a list", "/v1/models/digits/infer", b"[1, 2]", JSON),
    ("v1 extra field", "/v1/models/digits/infer", b'{"inputs": [[1.0]], "x": 1}', JSON),
    ("v1 no inputs", "/v1/models/digits/infer", b"{}", JSON),
    ("v1 wrong width", "/v1/models/digits/infer", b'{"inputs": [[1.0, 2.0]]}', JSON),
    ("v1 ragged", "/v1/models/digits/infer", b'{"inputs": [[1.0, 2.0], [1.0]]}', JSON),
    ("v1 nan", "/v1/models/digits/infer", b'{"inputs": [[NaN]]}', JSON),
    ("v1 unknown model", "/v1/models/nope/infer", b'{"inputs": [[1.0]]}', JSON),
    ("oip json", "/v2/models/digits/infer", OIP_JSON, JSON),
    (
        "oip binary",
        "/v2/models/digits/infer",
        HEADER + RAW,
        {"content-type": "application/octet-stream", "inference-header-content-length": str(len(HEADER))},
    ),
    (
        "oip short binary",
        "/v2/models/digits/infer",
        HEADER + RAW[:-4],
        {"content-type": "application/octet-stream", "inference-header-content-length": str(len(HEADER))},
    ),
    (
        "oip bad header length",
        "/v2/models/digits/infer",
        HEADER + RAW,
        {"content-type": "application/octet-stream", "inference-header-content-length": "x"},
    ),
    (
        "oip binary without header length",
        "/v2/models/digits/infer",
        HEADER + RAW,
        {"content-type": "application/octet-stream"},
    ),
    ("oip unknown input", "/v2/models/digits/infer", OIP_JSON.replace(b'"input"', b'"other"'), JSON),
    ("oip not json", "/v2/models/digits/infer", b"{", JSON),
    ("oip unknown model", "/v2/models/nope/infer", OIP_JSON, JSON),
]


def _answer(c: TestClient, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    r = c.post(path, content=body, headers=headers)
    kept = {k: v for k, v in r.headers.items() if k not in ("x-request-id", "date")}
    return r.status_code, kept, r.content


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How often each fast-path handler ran."""
    calls = {"v1": 0, "oip": 0}
    handlers = dict(fastpath._HANDLERS)

    def counting(kind: str) -> Callable[..., Any]:
        async def run(request: Any, model: str) -> Any:
            calls[kind] += 1
            return await handlers[kind](request, model)

        return run

    for kind in handlers:
        monkeypatch.setitem(fastpath._HANDLERS, kind, counting(kind))
    return calls


@pytest.mark.parametrize(("path", "body", "headers"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_fast_path_answers_as_the_router(
    client: TestClient,
    counted: dict[str, int],
    path: str,
    body: bytes,
    headers: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fast = _answer(client, path, body, headers)
    assert sum(counted.values()) == 1  # it took the fast path
    monkeypatch.setattr(fastpath.InferenceFastPath, "__call__", lambda self, *args: self.app(*args))
    slow = _answer(client, path, body, headers)
    assert sum(counted.values()) == 1  # and this one the router
    assert fast == slow
    assert fast[0] != 500, fast


def test_other_routes_take_the_router(client: TestClient, counted: dict[str, int]) -> None:
    body, headers = json.dumps({"inputs": X[:1].tolist()}).encode(), JSON
    oip_body = OIP_JSON
    assert client.post("/v2/models/digits/versions/1/infer", content=oip_body, headers=headers).status_code == 200
    assert client.post("/v1/models/digits/infer?min_version=1", content=body, headers=headers).status_code == 200
    slash = client.post("/v1/models/digits/infer/", content=body, headers=headers, follow_redirects=False)
    assert slash.status_code == 307  # the router's redirect, as before
    assert client.get("/v1/models/digits/infer").status_code == 405
    assert counted == {"v1": 0, "oip": 0}


def test_metrics_label_fast_requests_by_their_route(client: TestClient) -> None:
    client.post("/v1/models/digits/infer", json={"inputs": X[:1].tolist()}).raise_for_status()
    metrics = client.get("/metrics").text
    assert 'path="/v1/models/{model}/infer"' in metrics or 'route="/v1/models/{model}/infer"' in metrics, metrics[:500]


def test_a_page_allowed_by_cors_reads_fast_answers(
    make_client: Callable[..., TestClient], counted: dict[str, int]
) -> None:
    """CORS wraps the fast path: a page named by --cors-origins gets its Access-Control-Allow-Origin."""
    client = make_client(cors_origins=["https://dash.example"])
    for path, body in (
        ("/v1/models/digits/infer", json.dumps({"inputs": X[:1].tolist()}).encode()),
        ("/v2/models/digits/infer", OIP_JSON),
    ):
        r = client.post(path, content=body, headers={**JSON, "Origin": "https://dash.example"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://dash.example"
    assert counted == {"v1": 1, "oip": 1}

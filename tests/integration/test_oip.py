"""Open Inference Protocol v2 routes: model metadata and readiness, inference in JSON and Triton binary,
version-addressed routes, and their errors (404 unknown model/version, 400 naming expected and got)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from tests.conftest import AUTH
from tests.integration.helpers import X, assert_error, head_ops, reference

INFER = "/v2/models/digits/infer"


def _req(x: np.ndarray = X, nested: bool = False, datatype: str = "FP32", **extra: Any) -> dict[str, Any]:
    data = x.tolist() if nested else x.reshape(-1).tolist()
    return {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": datatype, "data": data}], **extra}


def _binary_request(x: np.ndarray, binary_output: bool) -> tuple[bytes, dict[str, str]]:
    raw = x.astype("<f4").tobytes()
    header = orjson.dumps(
        {
            "id": "bin-1",
            "inputs": [
                {
                    "name": "input",
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": "output", "parameters": {"binary_data": binary_output}}],
        }
    )
    return header + raw, {
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream",
    }


def _edit(client: TestClient, ops: list[dict[str, Any]]) -> int:
    r = client.post("/v1/models/digits/edits", json={"ops": ops}, headers=AUTH)
    assert r.status_code == 200, r.text
    return int(r.json()["version"])


# -- metadata and readiness ------------------------------------------------------------------------------
def test_model_metadata(client: TestClient) -> None:
    r = client.get("/v2/models/digits")
    assert r.status_code == 200
    md = r.json()
    assert md["name"] == "digits"
    assert md["versions"] == ["1"]
    assert md["platform"]
    assert md["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
    assert md["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 10]}]


def test_version_metadata_and_ready(client: TestClient) -> None:
    _edit(client, [{"op": "insert", "after": "fc3", "layer": {"type": "Identity"}}])
    assert client.get("/v2/models/digits").json()["versions"] == ["1", "2"]
    for v in ("1", "2"):
        r = client.get(f"/v2/models/digits/versions/{v}")
        assert r.status_code == 200 and r.json()["name"] == "digits", r.text
        assert client.get(f"/v2/models/digits/versions/{v}/ready").json() == {"name": "digits", "ready": True}
    assert client.get("/v2/models/digits/ready").json() == {"name": "digits", "ready": True}


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/nope",
        "/v2/models/nope/ready",
        "/v2/models/nope/versions/1",
        "/v2/models/nope/versions/1/ready",
        "/v2/models/digits/versions/9",
        "/v2/models/digits/versions/9/ready",
    ],
)
def test_metadata_unknown_model_or_version_404(client: TestClient, path: str) -> None:
    body = assert_error(client.get(path), 404)
    assert "nope" in body["error"] or "9" in body["error"]


@pytest.mark.parametrize("path", ["/v2/models/digits/versions/abc", "/v2/models/digits/versions/-1/ready"])
def test_metadata_bad_version_400(client: TestClient, path: str) -> None:
    assert_error(client.get(path), 400, "version")


# -- inference: JSON ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
def test_infer_json(client: TestClient, nested: bool) -> None:
    r = client.post(INFER, json=_req(nested=nested, id="abc-123"))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["model_name"] == "digits"
    assert body["model_version"] == "1"  # a string, per the protocol
    assert body["id"] == "abc-123"
    (out,) = body["outputs"]
    assert out["name"] == "output" and out["datatype"] == "FP32" and out["shape"] == [3, 10]
    np.testing.assert_allclose(
        np.array(out["data"], dtype=np.float32).reshape(3, 10), reference(), rtol=1e-5, atol=1e-5
    )


def test_infer_without_id_has_no_id(client: TestClient) -> None:
    body = client.post(INFER, json=_req()).json()
    assert "id" not in body or body["id"] is None


def test_infer_requested_output(client: TestClient) -> None:
    r = client.post(INFER, json=_req(outputs=[{"name": "output"}]))
    assert r.status_code == 200 and [o["name"] for o in r.json()["outputs"]] == ["output"]
    assert_error(client.post(INFER, json=_req(outputs=[{"name": "logits"}])), 400, "logits")


# -- inference: Triton binary extension ------------------------------------------------------------------------
def test_infer_binary_in_binary_out(client: TestClient) -> None:
    body, headers = _binary_request(X, binary_output=True)
    r = client.post(INFER, content=body, headers=headers)
    assert r.status_code == 200, r.text
    n = int(r.headers["inference-header-content-length"])
    doc = orjson.loads(r.content[:n])
    assert doc["model_version"] == "1" and doc["id"] == "bin-1"
    (out,) = doc["outputs"]
    assert out["shape"] == [3, 10] and out["parameters"]["binary_data_size"] == 3 * 10 * 4
    got = np.frombuffer(r.content[n:], dtype="<f4").reshape(3, 10)
    np.testing.assert_allclose(got, reference(), rtol=1e-5, atol=1e-5)


def test_infer_binary_in_json_out(client: TestClient) -> None:
    body, headers = _binary_request(X, binary_output=False)
    r = client.post(INFER, content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert "inference-header-content-length" not in r.headers
    out = r.json()["outputs"][0]
    np.testing.assert_allclose(
        np.array(out["data"], dtype=np.float32).reshape(3, 10), reference(), rtol=1e-5, atol=1e-5
    )


def test_infer_json_in_binary_out(client: TestClient) -> None:
    r = client.post(INFER, json=_req(parameters={"binary_data_output": True}))
    assert r.status_code == 200, r.text
    n = int(r.headers["inference-header-content-length"])
    got = np.frombuffer(r.content[n:], dtype="<f4").reshape(3, 10)
    np.testing.assert_allclose(got, reference(), rtol=1e-5, atol=1e-5)


def test_infer_binary_truncated_400(client: TestClient) -> None:
    body, headers = _binary_request(X, binary_output=True)
    assert_error(client.post(INFER, content=body[:-4], headers=headers), 400, "truncated")
    headers["Inference-Header-Content-Length"] = "x1"
    assert_error(client.post(INFER, content=body, headers=headers), 400, "Inference-Header-Content-Length")


BIG = np.random.default_rng(5).random((1024, 64), dtype=np.float32)  # 256 KiB of tensor bytes


@pytest.mark.parametrize(
    "delta", [-4, 4, -128 * 1024, 1 << 20], ids=["4 bytes short", "4 bytes over", "half", "a MiB over"]
)
def test_a_wrong_binary_data_size_on_a_large_body_is_400(client: TestClient, delta: int) -> None:
    """The declared size of a large binary tensor disagrees with its shape and with the bytes sent: a 400 naming
    `binary_data_size`, whichever way it is wrong; the same body with the right size computes every row."""
    raw = BIG.astype("<f4").tobytes()
    ok, headers = _binary_request(BIG, binary_output=True)
    header = ok[: int(headers["Inference-Header-Content-Length"])]
    wrong = header.replace(f'"binary_data_size":{len(raw)}'.encode(), f'"binary_data_size":{len(raw) + delta}'.encode())
    assert wrong != header
    fixed = {**headers, "Inference-Header-Content-Length": str(len(wrong))}
    assert_error(client.post(INFER, content=wrong + raw, headers=fixed), 400, "binary_data_size", str(len(raw) + delta))
    r = client.post(INFER, content=ok, headers=headers)
    assert r.status_code == 200, r.text
    n = int(r.headers["inference-header-content-length"])
    got = np.frombuffer(r.content[n:], dtype="<f4").reshape(1024, 10)
    np.testing.assert_allclose(got, reference(BIG), rtol=1e-5, atol=1e-5)


# -- versions -------------------------------------------------------------------------------------------------
def test_infer_on_older_version_while_resident(client: TestClient) -> None:
    v2 = _edit(client, head_ops(7.0))
    cur = client.post(INFER, json=_req()).json()
    assert cur["model_version"] == str(v2)
    np.testing.assert_allclose(cur["outputs"][0]["data"], [7.0] * 30)
    old = client.post("/v2/models/digits/versions/1/infer", json=_req())
    assert old.status_code == 200, old.text
    assert old.json()["model_version"] == "1"
    np.testing.assert_allclose(
        np.array(old.json()["outputs"][0]["data"]).reshape(3, 10), reference(), rtol=1e-5, atol=1e-5
    )
    new = client.post(f"/v2/models/digits/versions/{v2}/infer", json=_req()).json()
    assert new["model_version"] == str(v2)


@pytest.mark.parametrize("resident", [1, 2])
def test_infer_on_evicted_version_is_brought_back(make_client: Callable[..., TestClient], resident: int) -> None:
    """Two edits evict version 1 from the device; with a state dir it is reloaded on demand and still computes
    what it computed before, while the current version stays resident and serving."""
    c = make_client(resident_versions=resident)
    _edit(c, head_ops(3.0))
    _edit(c, head_ops(4.0))
    assert c.get("/v2/models/digits").json()["versions"] == ["2", "3"][-resident:]
    for _ in range(2):
        r = c.post("/v2/models/digits/versions/1/infer", json=_req())
        assert r.status_code == 200, r.text
        assert r.json()["model_version"] == "1"
        got = np.array(r.json()["outputs"][0]["data"]).reshape(3, 10)
        np.testing.assert_allclose(got, reference(), rtol=1e-5, atol=1e-5)
    resident_now = c.get("/v2/models/digits").json()["versions"]
    assert "3" in resident_now and len(resident_now) <= resident
    cur = c.post(INFER, json=_req()).json()
    assert cur["model_version"] == "3"
    np.testing.assert_allclose(cur["outputs"][0]["data"], [4.0] * 30)


def test_infer_unknown_version_404(client: TestClient) -> None:
    body = assert_error(client.post("/v2/models/digits/versions/5/infer", json=_req()), 404, "version 5")
    assert body.get("version") == 5
    assert_error(client.post("/v2/models/digits/versions/x/infer", json=_req()), 400, "version")


# -- errors ---------------------------------------------------------------------------------------------------
def test_infer_unknown_model_404(client: TestClient) -> None:
    assert_error(client.post("/v2/models/nope/infer", json=_req()), 404, "nope")


def test_infer_wrong_shape_400_names_expected_and_got(client: TestClient) -> None:
    x = np.zeros((2, 63), dtype=np.float32)
    body = assert_error(client.post(INFER, json=_req(x)), 400, "shape", "[-1, 64]", "[2, 63]")
    assert body["expected"] == [-1, 64] and body["got"] == [2, 63]


def test_infer_wrong_dtype_400_names_expected_and_got(client: TestClient) -> None:
    x = np.zeros((2, 64), dtype=np.float64)
    body = assert_error(client.post(INFER, json=_req(x, datatype="FP64")), 400, "FP32", "float64")
    assert body["expected"] == "FP32" and body["got"] == "float64"


def test_infer_wrong_input_name_400(client: TestClient) -> None:
    req = _req()
    req["inputs"][0]["name"] = "image"
    body = assert_error(client.post(INFER, json=req), 400, "image")
    assert body["expected"] == ["input"] and body["got"] == ["image"]


@pytest.mark.parametrize(
    "req,words",
    [
        ({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 63}]}, ["64", "63"]),
        ({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP99", "data": [0.0] * 64}]}, ["FP99"]),
        ({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": ["a"] * 64}]}, ["string"]),
        ({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32"}]}, ["data"]),
        ({"inputs": "x"}, ["inputs"]),
        ({}, ["inputs"]),
        ([1, 2], ["object"]),
    ],
)
def test_infer_malformed_json_400(client: TestClient, req: Any, words: list[str]) -> None:
    assert_error(client.post(INFER, json=req), 400, *words)


def test_infer_invalid_json_and_content_type(client: TestClient) -> None:
    assert_error(client.post(INFER, content=b"{not json", headers={"Content-Type": "application/json"}), 400, "JSON")
    assert_error(client.post(INFER, content=b"abc", headers={"Content-Type": "text/plain"}), 415)

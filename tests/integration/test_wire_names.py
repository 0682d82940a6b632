"""Inputs and outputs named as users name them, and outputs of any layout (issue 23).

A model whose inputs are called `input.1` and `meta` (a name GraphModule owns) and whose output `output:0` is a
permutation (not contiguous) serves on every route and encoding: /v1 JSON, OIP JSON, OIP binary in and out, and
the Python client. Before, such names were refused at creation and a permuted output answered 500 ("numpy array is
not C contiguous"). A variable dimension the model bounds answers a 400 naming the bound beyond it. Node ids with
a trailing newline (which `^...$` let through into fx's generated source: a 500) are refused, dry runs included.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import torch
from fastapi.testclient import TestClient

from morphserve.client import AsyncClient
from tests.conftest import AUTH, TOKEN
from tests.integration.helpers import assert_error

SPEC: dict[str, Any] = {
    "name": "wired",
    "inputs": [
        {"name": "input.1", "shape": [-1, -1, 4], "max_shape": [-1, 6, 4]},
        {"name": "meta", "shape": [-1, 4]},
    ],
    "outputs": [{"name": "output:0", "node": "perm"}],
    "nodes": [
        {"id": "fc", "layer": {"type": "Linear", "in_features": 4, "out_features": 4}, "inputs": ["input.1"]},
        {"id": "m", "function": "aten.unsqueeze.default", "inputs": ["meta"], "args": {"self": {"input": 0}, "dim": 1}},
        {
            "id": "add",
            "function": "aten.add.Tensor",
            "inputs": ["fc", "m"],
            "args": {"self": {"input": 0}, "other": {"input": 1}},
        },
        {
            "id": "perm",
            "function": "aten.permute.default",
            "inputs": ["add"],
            "args": {"self": {"input": 0}, "dims": [0, 2, 1]},
        },
    ],
}
X = np.random.default_rng(0).random((2, 5, 4), dtype=np.float32)
META = np.random.default_rng(1).random((2, 4), dtype=np.float32)
W = np.random.default_rng(2).random((4, 4), dtype=np.float32)
B = np.random.default_rng(3).random(4, dtype=np.float32)


@pytest.fixture
def wired(make_client: Callable[..., TestClient]) -> TestClient:
    client = make_client(models=[])
    r = client.post("/v1/models", json={"name": "wired", "spec": SPEC}, headers=AUTH)
    assert r.status_code == 201, r.text
    tensors = {"weight": {"shape": [4, 4], "data": W.reshape(-1).tolist()}, "bias": {"shape": [4], "data": B.tolist()}}
    r = client.post(
        "/v1/models/wired/edits", json={"ops": [{"op": "set_weights", "node": "fc", "tensors": tensors}]}, headers=AUTH
    )
    assert r.status_code == 200, r.text
    return client


def test_metadata_names_inputs_and_outputs_as_given(wired: TestClient) -> None:
    meta = wired.get("/v2/models/wired").json()
    assert [i["name"] for i in meta["inputs"]] == ["input.1", "meta"]
    assert [o["name"] for o in meta["outputs"]] == ["output:0"]
    assert meta["outputs"][0]["shape"] == [-1, 4, -1]


def test_v1_json(wired: TestClient) -> None:
    r = wired.post("/v1/models/wired/infer", json={"inputs": {"input.1": X.tolist(), "meta": META.tolist()}})
    assert r.status_code == 200, r.text
    got = np.asarray(r.json()["outputs"], dtype=np.float32)
    assert got.shape == (2, 4, 5)
    np.testing.assert_allclose(got, _torch_reference(wired), rtol=1e-6, atol=1e-6)


def _torch_reference(client: TestClient) -> np.ndarray:
    """What the model computes with the weights the fixture set, straight through torch."""
    y = torch.nn.functional.linear(torch.from_numpy(X), torch.from_numpy(W), torch.from_numpy(B))
    return (y + torch.from_numpy(META)[:, None, :]).permute(0, 2, 1).numpy()


def _oip_json() -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "input.1", "shape": list(X.shape), "datatype": "FP32", "data": X.reshape(-1).tolist()},
            {"name": "meta", "shape": list(META.shape), "datatype": "FP32", "data": META.reshape(-1).tolist()},
        ]
    }


def test_oip_json(wired: TestClient) -> None:
    r = wired.post("/v2/models/wired/infer", json=_oip_json())
    assert r.status_code == 200, r.text
    (out,) = r.json()["outputs"]
    assert out["name"] == "output:0" and out["shape"] == [2, 4, 5]
    np.testing.assert_allclose(np.asarray(out["data"], dtype=np.float32).reshape(2, 4, 5), _torch_reference(wired))


@pytest.mark.parametrize("binary_in", [True, False])
def test_oip_binary_out(wired: TestClient, binary_in: bool) -> None:
    if binary_in:
        raws = [X.astype("<f4").tobytes(), META.astype("<f4").tobytes()]
        header = orjson.dumps(
            {
                "inputs": [
                    {
                        "name": n,
                        "shape": list(a.shape),
                        "datatype": "FP32",
                        "parameters": {"binary_data_size": len(raw)},
                    }
                    for n, a, raw in zip(("input.1", "meta"), (X, META), raws, strict=True)
                ],
                "outputs": [{"name": "output:0", "parameters": {"binary_data": True}}],
            }
        )
        r = wired.post(
            "/v2/models/wired/infer",
            content=header + b"".join(raws),
            headers={"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"},
        )
    else:
        r = wired.post("/v2/models/wired/infer", json={**_oip_json(), "parameters": {"binary_data_output": True}})
    assert r.status_code == 200, r.text[:300]
    n = int(r.headers["Inference-Header-Content-Length"])
    header_doc = orjson.loads(r.content[:n])
    (out,) = header_doc["outputs"]
    assert out["name"] == "output:0" and out["parameters"]["binary_data_size"] == 2 * 4 * 5 * 4
    got = np.frombuffer(r.content[n:], dtype="<f4").reshape(2, 4, 5)
    np.testing.assert_allclose(got, _torch_reference(wired))


def test_python_client(wired: TestClient) -> None:
    async def go() -> Any:
        transport = httpx.ASGITransport(app=wired.app)
        async with AsyncClient("http://127.0.0.1:8000", token=TOKEN, transport=transport) as c:
            return await c.infer("wired", {"input.1": X, "meta": META})

    result = asyncio.run(go())
    assert list(result.outputs) == ["output:0"]
    np.testing.assert_allclose(result.outputs["output:0"], _torch_reference(wired))


def test_a_dimension_beyond_the_models_bound_is_a_clear_400(wired: TestClient) -> None:
    x = np.zeros((1, 7, 4), dtype=np.float32)
    r = wired.post("/v1/models/wired/infer", json={"inputs": {"input.1": x.tolist(), "meta": META[:1].tolist()}})
    assert_error(r, 400, "input 'input.1'", "dimension 1 is 7", "at most 6")


@pytest.mark.parametrize("name", ["input\n", "x" * 129, "tab\there", ""])
def test_wire_names_are_printable_and_short(make_client: Callable[..., TestClient], name: str) -> None:
    client = make_client(models=[])
    spec = {**SPEC, "inputs": [{**SPEC["inputs"][0], "name": name}, SPEC["inputs"][1]]}
    r = client.post("/v1/models", json={"name": "bad", "spec": spec}, headers=AUTH)
    assert_error(r, 422, "printable")


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_node_id_with_a_trailing_newline_is_refused(wired: TestClient, dry_run: bool) -> None:
    op = {"op": "insert", "after": "fc", "layer": {"type": "ReLU"}, "name": "fc2\n"}
    r = wired.post("/v1/models/wired/edits", json={"ops": [op], "dry_run": dry_run}, headers=AUTH)
    assert_error(r, 422, "must be a Python identifier")
    spec = {**SPEC, "nodes": [{**SPEC["nodes"][0], "id": "fc\n"}, *SPEC["nodes"][1:]]}
    r = wired.post("/v1/models", json={"name": "nl", "spec": spec}, headers=AUTH)
    assert r.status_code == 422, r.text

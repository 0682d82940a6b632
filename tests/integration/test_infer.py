"""`POST /v1/models/{m}/infer`: nested lists in and out (list for single-input models, object by name)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.conftest import AUTH
from tests.integration.helpers import X, assert_error, reference

INFER = "/v1/models/digits/infer"

TWO_INPUTS = {
    "name": "pair",
    "inputs": [
        {"name": "a", "datatype": "FP32", "shape": [-1, 4]},
        {"name": "b", "datatype": "FP32", "shape": [-1, 4]},
    ],
    "outputs": [{"name": "total", "node": "plus"}, {"name": "diff", "node": "minus"}],
    "nodes": [
        {"id": "plus", "function": "add", "inputs": ["a", "b"]},
        {"id": "minus", "function": "sub", "inputs": ["a", "b"]},
    ],
}


@pytest.fixture
def pair_client(make_client: Callable[..., TestClient]) -> TestClient:
    c = make_client()
    r = c.post("/v1/models", json={"name": "pair", "spec": TWO_INPUTS}, headers=AUTH)
    assert r.status_code == 201, r.text
    return c


def test_infer_list_input(client: TestClient) -> None:
    r = client.post(INFER, json={"inputs": X.tolist()})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "digits" and body["model_version"] == 1
    np.testing.assert_allclose(np.array(body["outputs"], dtype=np.float32), reference(), rtol=1e-5, atol=1e-5)


def test_infer_dict_input_single_input_model(client: TestClient) -> None:
    r = client.post(INFER, json={"inputs": {"input": X.tolist()}})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(np.array(r.json()["outputs"], dtype=np.float32), reference(), rtol=1e-5, atol=1e-5)


def test_infer_one_row(client: TestClient) -> None:
    r = client.post(INFER, json={"inputs": X[:1].tolist()})
    assert np.array(r.json()["outputs"]).shape == (1, 10)


def test_infer_dict_inputs_and_dict_outputs(pair_client: TestClient) -> None:
    a, b = [[1, 2, 3, 4], [5, 6, 7, 8]], [[1, 1, 1, 1], [2, 2, 2, 2]]
    r = pair_client.post("/v1/models/pair/infer", json={"inputs": {"a": a, "b": b}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "pair" and body["model_version"] == 1
    assert body["outputs"] == {"total": [[2, 3, 4, 5], [7, 8, 9, 10]], "diff": [[0, 1, 2, 3], [3, 4, 5, 6]]}


def test_infer_list_on_multi_input_model_400(pair_client: TestClient) -> None:
    assert_error(pair_client.post("/v1/models/pair/infer", json={"inputs": [[1, 2, 3, 4]]}), 400, "'a'", "'b'")


def test_infer_missing_input_400(pair_client: TestClient) -> None:
    body = assert_error(pair_client.post("/v1/models/pair/infer", json={"inputs": {"a": [[1, 2, 3, 4]]}}), 400, "b")
    assert body["expected"] == ["a", "b"] and body["got"] == ["a"]


def test_infer_batch_size_disagreement_400(pair_client: TestClient) -> None:
    r = pair_client.post("/v1/models/pair/infer", json={"inputs": {"a": [[1, 2, 3, 4]], "b": [[1, 2, 3, 4]] * 2}})
    assert_error(r, 400, "batch")


def test_infer_unknown_model_404(client: TestClient) -> None:
    body = assert_error(client.post("/v1/models/nope/infer", json={"inputs": X.tolist()}), 404, "nope")
    assert body["model"] == "nope"


def test_infer_wrong_shape_400_names_expected_and_got(client: TestClient) -> None:
    body = assert_error(client.post(INFER, json={"inputs": [[0.0] * 10]}), 400, "[-1, 64]", "[1, 10]")
    assert body["expected"] == [-1, 64] and body["got"] == [1, 10]
    body = assert_error(client.post(INFER, json={"inputs": [0.0] * 64}), 400, "shape")
    assert body["got"] == [64]


def test_infer_unknown_input_name_400(client: TestClient) -> None:
    body = assert_error(client.post(INFER, json={"inputs": {"image": X.tolist()}}), 400, "image")
    assert body["expected"] == ["input"] and body["got"] == ["image"]


def test_infer_wrong_dtype_400_names_expected_and_got(make_client: Callable[..., TestClient]) -> None:
    """An INT64 input fed through /v1: values that are not integers are refused, naming the datatype."""
    c = make_client()
    spec = {
        "name": "emb",
        "inputs": [{"name": "ids", "datatype": "INT64", "shape": [-1, 3]}],
        "outputs": [{"name": "vec", "node": "e"}],
        "nodes": [
            {"id": "e", "layer": {"type": "Embedding", "num_embeddings": 10, "embedding_dim": 2}, "inputs": ["ids"]}
        ],
    }
    assert c.post("/v1/models", json={"name": "emb", "spec": spec}, headers=AUTH).status_code == 201
    ok = c.post("/v1/models/emb/infer", json={"inputs": [[1, 2, 3]]})
    assert ok.status_code == 200, ok.text
    assert np.array(ok.json()["outputs"]).shape == (1, 3, 2)
    body = assert_error(c.post("/v1/models/emb/infer", json={"inputs": [[1.5, 2, 3]]}), 400, "ids", "INT64")
    assert body["expected"] == "INT64" and body["got"] == "numbers"  # no silent truncation of 1.5 to 1
    body = assert_error(c.post("/v1/models/emb/infer", json={"inputs": [["1", "2", "3"]]}), 400, "INT64")
    assert body["got"] == "strings"
    assert_error(c.post("/v1/models/emb/infer", json={"inputs": [[1, 2, 2**64]]}), 400, "ids")


def test_infer_strings_into_float_input_400(client: TestClient) -> None:
    body = assert_error(client.post(INFER, json={"inputs": [["0.5"] * 64]}), 400, "FP32")
    assert body["expected"] == "FP32" and body["got"] == "strings"
    body = assert_error(client.post(INFER, json={"inputs": [[True] * 64]}), 400, "FP32")
    assert body["got"] == "booleans"


@pytest.mark.parametrize(
    "body",
    [
        {"inputs": [[1.0, 2.0], [3.0]]},  # ragged
        {"inputs": [["x"] * 64]},
        {"inputs": 3},
        {"inputs": [[0.0] * 64], "extra": 1},
        {},
        {"inputs": {"input": "x"}},
    ],
)
def test_infer_malformed_bodies_are_4xx_json(client: TestClient, body: Any) -> None:
    r = client.post(INFER, json=body)
    assert r.status_code in (400, 422), r.text
    assert_error(r, r.status_code)


def test_infer_invalid_json_400(client: TestClient) -> None:
    r = client.post(INFER, content=b'{"inputs": [[1,2', headers={"Content-Type": "application/json"})
    assert_error(r, 400)


def test_infer_out_of_range_number_400(client: TestClient) -> None:
    r = client.post(
        INFER,
        content=b'{"inputs": [[' + b",".join([b"1e400"] * 64) + b"]]}",
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400, r.text
    assert_error(r, 400)

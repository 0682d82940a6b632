"""The official tritonclient.http client against a real `morphserve serve` process: JSON and binary tensors."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.conftest import AUTH, serve_module


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    yield from serve_module(tmp_path_factory, "--model", "digits", "--model", "resnet")


@pytest.fixture
def triton(server) -> httpclient.InferenceServerClient:  # type: ignore[no-untyped-def]
    return httpclient.InferenceServerClient(url=server.url.removeprefix("http://"))


def _infer(
    client: httpclient.InferenceServerClient, model: str, x: np.ndarray, binary: bool, version: str = ""
) -> httpclient.InferResult:
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = httpclient.InferRequestedOutput("output", binary_data=binary)
    return client.infer(model, [inp], model_version=version, outputs=[out], request_id="req-1")


def test_server_health_and_metadata(triton: httpclient.InferenceServerClient) -> None:
    assert triton.is_server_live()
    assert triton.is_server_ready()
    assert triton.is_model_ready("digits")
    meta = triton.get_server_metadata()
    assert "binary_tensor_data" in meta["extensions"]
    md = triton.get_model_metadata("digits")
    assert md["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
    assert md["outputs"][0]["shape"] == [-1, 10]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer_matches_reference(triton: httpclient.InferenceServerClient, binary: bool) -> None:
    from morphserve.graph import load_zoo

    x = np.random.default_rng(0).random((5, 64), dtype=np.float32)
    result = _infer(triton, "digits", x, binary)
    got = result.as_numpy("output")
    import torch

    want = load_zoo("digits").run(torch.from_numpy(x))[0].numpy()
    assert got is not None and got.shape == (5, 10)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    response = result.get_response()
    assert response["model_name"] == "digits" and response["id"] == "req-1"
    assert int(response["model_version"]) >= 1


def test_binary_image_model(triton: httpclient.InferenceServerClient) -> None:
    x = np.random.default_rng(1).random((3, 3, 32, 32), dtype=np.float32)
    assert _infer(triton, "resnet", x, True).as_numpy("output").shape == (3, 10)  # type: ignore[union-attr]


def test_bad_shape_is_a_client_error(triton: httpclient.InferenceServerClient) -> None:
    x = np.zeros((2, 63), dtype=np.float32)
    with pytest.raises(InferenceServerException) as e:
        _infer(triton, "digits", x, True)
    assert e.value.status() == "400" and "expected shape [-1, 64]" in e.value.message()


def test_version_reported_and_old_version_served(server, triton: httpclient.InferenceServerClient) -> None:  # type: ignore[no-untyped-def]
    x = np.random.default_rng(2).random((2, 64), dtype=np.float32)
    before = _infer(triton, "digits", x, True)
    v_before = int(before.get_response()["model_version"])
    r = httpx.post(
        f"{server.url}/v1/models/digits/layers",
        headers=AUTH,
        json={"after": "fc1", "layer": {"type": "Linear", "in_features": 128, "out_features": 128}, "init": "identity"},
    )
    assert r.status_code == 200, r.text
    after = _infer(triton, "digits", x, True)
    assert int(after.get_response()["model_version"]) == v_before + 1
    np.testing.assert_allclose(after.as_numpy("output"), before.as_numpy("output"), atol=1e-5)
    old = _infer(triton, "digits", x, False, version=str(v_before))
    assert old.get_response()["model_version"] == str(v_before)

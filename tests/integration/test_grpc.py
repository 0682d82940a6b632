"""The gRPC service in process (the app's lifespan starts it on --grpc-port 0) with the real tritonclient.grpc: health,
metadata, raw and typed tensors, versions, min_version, errors as status codes, auth, and the extensions."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.utils.shared_memory as tshm
from fastapi.testclient import TestClient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.conftest import AUTH, TOKEN
from tests.integration.helpers import X, reference

GRPC_AUTH = {"authorization": f"Bearer {TOKEN}"}
SHIFT = {"after": "fc1", "layer": {"type": "Linear", "in_features": 128, "out_features": 128}, "init": "identity"}


@pytest.fixture
def app(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(grpc_port=0)


@pytest.fixture
def triton(app: TestClient) -> Iterator[tgrpc.InferenceServerClient]:
    c = tgrpc.InferenceServerClient(f"127.0.0.1:{app.app.state.grpc_port}")  # type: ignore[attr-defined]
    yield c
    c.close()


def _infer(c: tgrpc.InferenceServerClient, x: np.ndarray = X, version: str = "", **kw: object) -> tgrpc.InferResult:
    inp = tgrpc.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return c.infer("digits", [inp], model_version=version, **kw)  # type: ignore[arg-type]


def test_health_and_metadata(triton: tgrpc.InferenceServerClient) -> None:
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready("digits") and not triton.is_model_ready("nope")
    meta = triton.get_server_metadata(as_json=True)
    assert meta["name"] == "morphserve" and {"model_configuration", "statistics"} <= set(meta["extensions"])
    md = triton.get_model_metadata("digits", as_json=True)
    assert md["inputs"] == [{"name": "input", "datatype": "FP32", "shape": ["-1", "64"]}]
    assert md["versions"] == ["1"]


def test_raw_inference_matches_the_reference_and_reports_id_and_version(triton: tgrpc.InferenceServerClient) -> None:
    r = _infer(triton, request_id="req-7")
    np.testing.assert_allclose(r.as_numpy("output"), reference(), rtol=1e-5, atol=1e-6)
    response = r.get_response()
    assert response.id == "req-7" and response.model_version == "1" and response.model_name == "digits"


def test_typed_contents_are_accepted(app: TestClient) -> None:
    """A client that sends `contents` instead of raw bytes (KServe's v2 proto allows either)."""
    with grpc.insecure_channel(f"127.0.0.1:{app.app.state.grpc_port}") as channel:  # type: ignore[attr-defined]
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        req = service_pb2.ModelInferRequest(model_name="digits")
        t = req.inputs.add(name="input", datatype="FP32", shape=[3, 64])
        t.contents.fp32_contents.extend(X.ravel().tolist())
        resp = stub.ModelInfer(req)
    out = np.frombuffer(resp.raw_output_contents[0], dtype=np.float32).reshape(3, 10)
    np.testing.assert_allclose(out, reference(), rtol=1e-5, atol=1e-6)


def test_versions_and_min_version(app: TestClient, triton: tgrpc.InferenceServerClient) -> None:
    before = _infer(triton).as_numpy("output")
    assert app.post("/v1/models/digits/layers", json=SHIFT, headers=AUTH).status_code == 200
    after = _infer(triton, parameters={"min_version": 2})
    assert after.get_response().model_version == "2"
    np.testing.assert_allclose(after.as_numpy("output"), before, atol=1e-5)
    old = _infer(triton, version="1")
    assert old.get_response().model_version == "1"
    with pytest.raises(InferenceServerException) as e:
        _infer(triton, parameters={"min_version": 0})
    assert "min_version" in e.value.message()
    with pytest.raises(InferenceServerException) as e:
        _infer(triton, version="9")
    assert e.value.status() == "StatusCode.NOT_FOUND" and "no version 9" in e.value.message()


@pytest.mark.parametrize(
    ("model", "x", "status", "words"),
    [
        ("digits", np.zeros((2, 63), np.float32), "INVALID_ARGUMENT", "expected shape [-1, 64]"),
        ("nope", X, "NOT_FOUND", "'nope'"),
        ("digits", np.zeros((2, 64), np.float64), "INVALID_ARGUMENT", "expected datatype FP32"),
    ],
)
def test_errors_are_status_codes_with_the_https_messages(
    triton: tgrpc.InferenceServerClient, model: str, x: np.ndarray, status: str, words: str
) -> None:
    inp = tgrpc.InferInput("input", list(x.shape), "FP64" if x.dtype == np.float64 else "FP32")
    inp.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException) as e:
        triton.infer(model, [inp])
    assert e.value.status() == f"StatusCode.{status}" and words in e.value.message()


def test_config_statistics_and_repository(triton: tgrpc.InferenceServerClient) -> None:
    cfg = triton.get_model_config("digits").config
    assert (cfg.name, cfg.max_batch_size, list(cfg.input[0].dims)) == ("digits", 32, [64])
    assert cfg.input[0].data_type == tgrpc.model_config_pb2.TYPE_FP32
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 2000
    _infer(triton)
    (s,) = triton.get_inference_statistics("digits").model_stats
    assert (s.name, s.version, s.inference_count) == ("digits", "1", 3)
    assert s.inference_stats.success.count == 1 and s.inference_stats.compute_infer.ns > 0
    index = {m.name: m for m in triton.get_model_repository_index().models}
    assert index["digits"].state == "READY" and index["mlp"].state == "UNAVAILABLE"


def test_repository_load_and_unload_need_the_token(triton: tgrpc.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as e:
        triton.load_model("mlp")
    assert e.value.status() == "StatusCode.UNAUTHENTICATED"
    with pytest.raises(InferenceServerException) as e:
        triton.load_model("mlp", headers={"authorization": "Bearer wrong"})
    assert e.value.status() == "StatusCode.PERMISSION_DENIED"
    triton.load_model("mlp", headers=GRPC_AUTH)
    assert triton.is_model_ready("mlp")
    triton.unload_model("mlp", headers=GRPC_AUTH)
    assert not triton.is_model_ready("mlp")
    with pytest.raises(InferenceServerException) as e:
        triton.load_model("nothing", headers=GRPC_AUTH)
    assert e.value.status() == "StatusCode.NOT_FOUND"


@pytest.fixture
def regions() -> Iterator[tuple[object, object]]:
    key = f"/ms-test-{id(object())}"
    inp = tshm.create_shared_memory_region("in", key + "-in", X.nbytes)
    out = tshm.create_shared_memory_region("out", key + "-out", 3 * 10 * 4)
    yield inp, out
    for handle in (inp, out):
        with contextlib.suppress(Exception):
            tshm.destroy_shared_memory_region(handle)


def test_system_shared_memory_with_tritonclients_helpers(
    triton: tgrpc.InferenceServerClient, regions: tuple[object, object]
) -> None:
    inp_handle, out_handle = regions
    tshm.set_shared_memory_region(inp_handle, [X])
    in_key, out_key = inp_handle._shm_key, out_handle._shm_key  # type: ignore[attr-defined]
    with pytest.raises(InferenceServerException) as e:
        triton.register_system_shared_memory("in", in_key, X.nbytes)
    assert e.value.status() == "StatusCode.UNAUTHENTICATED"
    triton.register_system_shared_memory("in", in_key, X.nbytes, headers=GRPC_AUTH)
    triton.register_system_shared_memory("out", out_key, 120, headers=GRPC_AUTH)
    status = triton.get_system_shared_memory_status(as_json=True)["regions"]
    assert {status["in"]["key"], status["out"]["key"]} == {in_key, out_key}
    inp = tgrpc.InferInput("input", [3, 64], "FP32")
    inp.set_shared_memory("in", X.nbytes)
    out = tgrpc.InferRequestedOutput("output")
    out.set_shared_memory("out", 120)
    result = triton.infer("digits", [inp], outputs=[out])
    assert result.get_output("output").parameters["shared_memory_region"].string_param == "out"
    got = tshm.get_contents_as_numpy(out_handle, np.float32, [3, 10])
    np.testing.assert_allclose(got, reference(), rtol=1e-5, atol=1e-6)
    out.set_shared_memory("out", 120, offset=8)  # 8 + 120 > the 120-byte region
    with pytest.raises(InferenceServerException) as e:
        triton.infer("digits", [inp], outputs=[out])
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "outside shared memory region 'out'" in e.value.message()
    triton.unregister_system_shared_memory(headers=GRPC_AUTH)
    assert triton.get_system_shared_memory_status(as_json=True) == {}
    with pytest.raises(InferenceServerException) as e:
        triton.register_cuda_shared_memory("g", b"\0" * 64, 0, 64, headers=GRPC_AUTH)
    assert "needs a GPU" in e.value.message()

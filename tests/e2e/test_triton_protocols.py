"""Triton's clients against a real `morphserve serve --grpc-port`: the same scenario through tritonclient.http and
tritonclient.grpc, core protocol and extensions alike (configuration, statistics, repository, shared memory).

KServe's gRPC client runs the core scenario in tests/e2e/test_kserve_grpc.py (its module and tritonclient's cannot
share a process: both register the protocol's messages in protobuf's default pool)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import torch
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
import tritonclient.utils.shared_memory as tshm
from tritonclient.utils import InferenceServerException

from morphserve.graph import load_zoo
from tests.conftest import AUTH, TOKEN, free_port, serve_module

GRPC_PORT = free_port()
SHIFT = {"after": "fc1", "layer": {"type": "Linear", "in_features": 128, "out_features": 128}, "init": "identity"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    yield from serve_module(tmp_path_factory, "--model", "digits", "--model", "resnet", "--grpc-port", str(GRPC_PORT))


class Client:
    """One of Triton's two clients, behind the calls the scenario makes (their signatures differ slightly)."""

    def __init__(self, kind: str, server: Any) -> None:
        self.kind = kind
        self.mod: Any = thttp if kind == "http" else tgrpc
        url = server.url.removeprefix("http://") if kind == "http" else f"127.0.0.1:{GRPC_PORT}"
        self.c = self.mod.InferenceServerClient(url=url)
        self.auth = AUTH if kind == "http" else {"authorization": f"Bearer {TOKEN}"}

    def infer(self, model: str, x: np.ndarray, version: str = "", shm: tuple[str, str] | None = None) -> Any:
        inp = self.mod.InferInput("input", list(x.shape), "FP32")
        out = self.mod.InferRequestedOutput("output")
        if shm is None:
            inp.set_data_from_numpy(x)
        else:
            inp.set_shared_memory(shm[0], x.nbytes)
            out.set_shared_memory(shm[1], x.shape[0] * 10 * 4)
        return self.c.infer(model, [inp], model_version=version, outputs=[out], request_id="req-1")

    def version_of(self, result: Any) -> str:
        response = result.get_response()
        return response["model_version"] if self.kind == "http" else response.model_version

    def config(self, model: str) -> dict[str, Any]:
        if self.kind == "http":
            return dict(self.c.get_model_config(model))
        cfg = self.c.get_model_config(model, as_json=True)["config"]
        cfg["input"] = [{**t, "dims": [int(d) for d in t["dims"]]} for t in cfg["input"]]
        return dict(cfg)

    def stats(self, model: str) -> list[dict[str, Any]]:
        grpc_json = {"as_json": True} if self.kind == "grpc" else {}
        doc = self.c.get_inference_statistics(model, **grpc_json)
        return [
            {
                **s,
                "inference_count": int(s.get("inference_count", 0)),
                "success": int(s["inference_stats"].get("success", {}).get("count", 0)),
            }
            for s in doc["model_stats"]
        ]

    def index(self) -> dict[str, str]:
        if self.kind == "http":
            return {m["name"]: m["state"] for m in self.c.get_model_repository_index()}
        return {m.name: m.state for m in self.c.get_model_repository_index().models}

    def status(self, e: InferenceServerException) -> str:
        return str(e.status())


@pytest.fixture(params=["http", "grpc"])
def client(request: pytest.FixtureRequest, server: Any) -> Iterator[Client]:
    c = Client(request.param, server)
    yield c
    c.c.close()


def _ref(model: str, x: np.ndarray) -> np.ndarray:
    return load_zoo(model).run(torch.from_numpy(x))[0].numpy()


def test_health_and_metadata(client: Client) -> None:
    assert client.c.is_server_live() and client.c.is_server_ready()
    assert client.c.is_model_ready("digits")
    meta = client.c.get_server_metadata(**({"as_json": True} if client.kind == "grpc" else {}))
    assert meta["name"] == "morphserve"
    assert {"binary_tensor_data", "model_configuration", "statistics", "model_repository"} <= set(meta["extensions"])


def test_infer_matches_reference_and_reports_id_and_version(client: Client) -> None:
    x = np.random.default_rng(0).random((5, 64), dtype=np.float32)
    result = client.infer("digits", x)
    np.testing.assert_allclose(result.as_numpy("output"), _ref("digits", x), rtol=1e-5, atol=1e-5)
    assert int(client.version_of(result)) >= 1
    images = np.random.default_rng(1).random((3, 3, 32, 32), dtype=np.float32)
    assert client.infer("resnet", images).as_numpy("output").shape == (3, 10)


def test_bad_shape_is_a_client_error(client: Client) -> None:
    with pytest.raises(InferenceServerException) as e:
        client.infer("digits", np.zeros((2, 63), dtype=np.float32))
    assert client.status(e.value) in ("400", "StatusCode.INVALID_ARGUMENT")
    assert "expected shape [-1, 64]" in e.value.message()


def test_version_reported_and_old_version_served(server: Any, client: Client) -> None:
    x = np.random.default_rng(2).random((2, 64), dtype=np.float32)
    before = client.infer("digits", x)
    v_before = int(client.version_of(before))
    r = httpx.post(f"{server.url}/v1/models/digits/layers", headers=AUTH, json=SHIFT)
    assert r.status_code == 200, r.text
    after = client.infer("digits", x)
    assert int(client.version_of(after)) == v_before + 1
    np.testing.assert_allclose(after.as_numpy("output"), before.as_numpy("output"), atol=1e-5)
    old = client.infer("digits", x, version=str(v_before))
    assert client.version_of(old) == str(v_before)


def test_model_config(client: Client) -> None:
    cfg = client.config("resnet")
    assert cfg["name"] == "resnet" and cfg["max_batch_size"] == 32
    assert cfg["input"][0]["data_type"] == "TYPE_FP32" and cfg["input"][0]["dims"] == [3, 32, 32]
    assert cfg["dynamic_batching"]["max_queue_delay_microseconds"] in (2000, "2000")


def test_inference_statistics(client: Client) -> None:
    x = np.ones((4, 3, 32, 32), dtype=np.float32)
    before = sum(s["inference_count"] for s in client.stats("resnet"))
    client.infer("resnet", x)
    after = client.stats("resnet")
    assert sum(s["inference_count"] for s in after) == before + 4
    assert all(s["name"] == "resnet" for s in after) and sum(s["success"] for s in after) >= 1


def test_repository_index_load_and_unload(client: Client) -> None:
    name = "mlp"
    assert client.index()[name] == "UNAVAILABLE"
    with pytest.raises(InferenceServerException):
        client.c.load_model(name)  # no token
    client.c.load_model(name, headers=client.auth)
    assert client.index()[name] == "READY" and client.c.is_model_ready(name)
    client.c.unload_model(name, headers=client.auth)
    assert client.index()[name] == "UNAVAILABLE"


@pytest.fixture
def regions(client: Client) -> Iterator[tuple[Any, Any]]:
    base = f"/ms-e2e-{client.kind}"
    handles = [
        tshm.create_shared_memory_region("in", base + "-in", 4 * 64 * 4),
        tshm.create_shared_memory_region("out", base + "-out", 4 * 10 * 4),
    ]
    yield handles[0], handles[1]
    with contextlib.suppress(InferenceServerException):
        client.c.unregister_system_shared_memory(headers=client.auth)
    for h in handles:
        with contextlib.suppress(Exception):
            tshm.destroy_shared_memory_region(h)


def test_system_shared_memory(client: Client, regions: tuple[Any, Any]) -> None:
    inp, out = regions
    x = np.random.default_rng(3).random((4, 64), dtype=np.float32)
    tshm.set_shared_memory_region(inp, [x])
    client.c.register_system_shared_memory("in", inp._shm_key, x.nbytes, headers=client.auth)
    client.c.register_system_shared_memory("out", out._shm_key, 160, headers=client.auth)
    client.infer("digits", x, shm=("in", "out"))
    np.testing.assert_allclose(
        tshm.get_contents_as_numpy(out, np.float32, [4, 10]), _ref_current(client, x), rtol=1e-5, atol=1e-5
    )
    client.c.unregister_system_shared_memory("in", headers=client.auth)
    with pytest.raises(InferenceServerException) as e:
        client.infer("digits", x, shm=("in", "out"))
    assert "unknown shared memory region 'in'" in e.value.message()


def _ref_current(client: Client, x: np.ndarray) -> np.ndarray:
    """What the model serves now (an earlier test edited it): the same request, sent by value."""
    return np.asarray(client.infer("digits", x).as_numpy("output"))

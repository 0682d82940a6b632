"""Triton's extensions over HTTP, in process: model configuration, statistics, the model repository (load from the
model repository, --model-dir, or the zoo; unload = delete; both with the token) and system shared memory."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from morphserve.graph import load_zoo
from morphserve.graph.bundle import write_bundle
from morphserve.main import create_app
from morphserve.settings import Settings
from tests.conftest import AUTH, TOKEN
from tests.integration.helpers import X, assert_error, reference


def _infer(client: TestClient, model: str = "digits", x: np.ndarray = X) -> dict[str, object]:
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
    r = client.post(f"/v2/models/{model}/infer", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_model_config_in_tritons_shape(client: TestClient) -> None:
    r = client.get("/v2/models/digits/config")
    assert r.status_code == 200
    cfg = r.json()
    assert cfg["name"] == "digits" and cfg["max_batch_size"] == 32
    assert cfg["input"] == [{"name": "input", "data_type": "TYPE_FP32", "format": "FORMAT_NONE", "dims": [64]}]
    assert cfg["output"] == [{"name": "output", "data_type": "TYPE_FP32", "dims": [10]}]
    assert cfg["dynamic_batching"]["max_queue_delay_microseconds"] == 2000
    assert cfg["instance_group"][0]["kind"] == "KIND_CPU"
    assert client.get("/v2/models/digits/versions/1/config").json()["parameters"]["version"] == {"string_value": "1"}
    assert_error(client.get("/v2/models/nope/config"), 404, "nope")
    assert_error(client.get("/v2/models/digits/versions/9/config"), 404, "no version 9")


def test_statistics_count_requests_rows_and_batches_per_version(client: TestClient) -> None:
    empty = client.get("/v2/models/digits/stats").json()["model_stats"]
    assert [(s["name"], s["version"], s["inference_count"]) for s in empty] == [("digits", "1", 0)]
    for _ in range(3):
        _infer(client)
    bad = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 63], "data": [0.0] * 63}]}
    assert client.post("/v2/models/digits/infer", json=bad).status_code == 400
    (s,) = client.get("/v2/models/digits/stats").json()["model_stats"]
    stats = s["inference_stats"]
    assert s["inference_count"] == 9 and s["execution_count"] >= 1  # three requests of three rows
    assert stats["success"]["count"] == 3 and stats["success"]["ns"] > 0
    assert stats["fail"]["count"] == 1
    assert stats["queue"]["count"] == stats["compute_infer"]["count"] == 3
    assert sum(b["compute_infer"]["count"] for b in s["batch_stats"]) == s["execution_count"]
    assert s["last_inference"] > 0
    everything = client.get("/v2/models/stats").json()["model_stats"]
    assert [m["name"] for m in everything] == ["digits"]
    (one,) = client.get("/v2/models/digits/versions/1/stats").json()["model_stats"]
    assert one["inference_count"] == 9
    assert_error(client.get("/v2/models/nope/stats"), 404)


@pytest.fixture
def repository(tmp_path: Path) -> Iterator[TestClient]:
    root = tmp_path / "repo"
    root.mkdir()
    write_bundle(load_zoo("digits", as_name="tiny"), root / "tiny.zip")
    settings = Settings(models=["digits"], admin_token=TOKEN, state_dir=tmp_path / "state", model_dir=root)
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8000") as client:
        yield client


def test_repository_index_load_and_unload(repository: TestClient) -> None:
    client = repository
    index = {m["name"]: m for m in client.post("/v2/repository/index").json()}
    assert index["digits"] == {"name": "digits", "version": "1", "state": "READY", "reason": ""}
    # the repository's bundles are served from the start (Triton's default model control mode), the zoo's on a load
    assert index["tiny"] == {"name": "tiny", "version": "1", "state": "READY", "reason": ""}
    assert index["mlp"] == {
        "name": "mlp",
        "version": "",
        "state": "UNAVAILABLE",
        "reason": "unloaded (zoo)",
    }
    assert "mlp" not in [m["name"] for m in client.post("/v2/repository/index", json={"ready": True}).json()]

    assert_error(client.post("/v2/repository/models/tiny/load"), 401)
    assert client.post("/v2/repository/models/tiny/load", headers=AUTH).status_code == 200
    np.testing.assert_allclose(np.array(_infer(client, "tiny")["outputs"][0]["data"]), reference().ravel(), rtol=1e-5)
    assert client.post("/v2/repository/models/tiny/load", headers=AUTH).status_code == 200  # served: stays as it is
    r = client.post("/v2/repository/models/mlp/load", headers=AUTH, json={"parameters": {"compile": "off"}})
    assert r.status_code == 200, r.text
    assert client.get("/v2/models/mlp/ready").status_code == 200
    assert_error(client.post("/v2/repository/models/nothing/load", headers=AUTH), 404, "no model 'nothing'", "zoo")
    assert_error(
        client.post("/v2/repository/models/convnet/load", headers=AUTH, json={"parameters": {"config": "{}"}}),
        400,
        "not supported",
    )

    assert_error(client.post("/v2/repository/models/tiny/unload"), 401)
    assert client.post("/v2/repository/models/tiny/unload", headers=AUTH, json={"parameters": {}}).status_code == 200
    assert_error(client.get("/v2/models/tiny/ready"), 404)
    after = {m["name"]: m for m in client.post("/v2/repository/index").json()}["tiny"]
    assert (after["state"], after["reason"]) == ("UNAVAILABLE", "unloaded")  # still in the repository
    assert_error(client.post("/v2/repository/models/tiny/unload", headers=AUTH), 404)
    assert client.post("/v2/repository/models/tiny/load", headers=AUTH).status_code == 200  # and loaded again
    assert _infer(client, "tiny")["model_version"] == "1"


@pytest.fixture
def segment() -> Iterator[shared_memory.SharedMemory]:
    seg = shared_memory.SharedMemory(create=True, size=1 << 16)
    yield seg
    seg.close()
    with contextlib.suppress(FileNotFoundError):
        seg.unlink()


def test_system_shared_memory_registration_inference_and_unregistration(
    client: TestClient, segment: shared_memory.SharedMemory
) -> None:
    key = "/" + segment.name.lstrip("/")
    segment.buf[: X.nbytes] = X.tobytes()
    register = {"key": key, "offset": 0, "byte_size": 4096}
    assert_error(client.post("/v2/systemsharedmemory/region/io/register", json=register), 401)
    assert client.post("/v2/systemsharedmemory/region/io/register", json=register, headers=AUTH).status_code == 200
    assert client.get("/v2/systemsharedmemory/status").json() == [{"name": "io", **register}]
    assert client.get("/v2/systemsharedmemory/region/io/status").json()[0]["key"] == key
    body = {
        "inputs": [
            {
                "name": "input",
                "datatype": "FP32",
                "shape": [3, 64],
                "parameters": {"shared_memory_region": "io", "shared_memory_byte_size": X.nbytes},
            }
        ],
        "outputs": [
            {
                "name": "output",
                "parameters": {
                    "shared_memory_region": "io",
                    "shared_memory_offset": 2048,
                    "shared_memory_byte_size": 120,
                },
            }
        ],
    }
    r = client.post("/v2/models/digits/infer", json=body)
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert out["shape"] == [3, 10] and "data" not in out
    got = np.frombuffer(bytes(segment.buf[2048 : 2048 + 120]), dtype=np.float32).reshape(3, 10)
    np.testing.assert_allclose(got, reference(), rtol=1e-5, atol=1e-6)
    body["outputs"][0]["parameters"]["shared_memory_offset"] = 4000  # 4000 + 120 > 4096
    assert_error(client.post("/v2/models/digits/infer", json=body), 400, "outside shared memory region 'io'")
    assert client.post("/v2/systemsharedmemory/region/io/unregister", headers=AUTH).status_code == 200
    assert client.get("/v2/systemsharedmemory/status").json() == []
    assert_error(client.post("/v2/models/digits/infer", json=body), 400, "unknown shared memory region 'io'")


def test_cuda_shared_memory_is_refused_clearly_on_a_cpu_server(client: TestClient) -> None:
    body = {"raw_handle": {"b64": "AAAA"}, "device_id": 0, "byte_size": 64}
    assert_error(client.post("/v2/cudasharedmemory/region/g/register", json=body, headers=AUTH), 400, "needs a GPU")
    assert client.get("/v2/cudasharedmemory/status").json() == []
    assert "cuda_shared_memory" not in client.get("/v2").json()["extensions"]


def test_a_worker_of_several_refuses_shared_memory_registration(
    make_client: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch, segment: shared_memory.SharedMemory
) -> None:
    """Each worker of `serve --workers N` holds its own regions, and a request may reach another worker."""
    monkeypatch.setenv("MORPHSERVE_WORKER_INDEX", "1")  # as the supervisor starts its workers
    client = make_client()
    body = {"key": "/" + segment.name.lstrip("/"), "offset": 0, "byte_size": 64}
    r = client.post("/v2/systemsharedmemory/region/r/register", json=body, headers=AUTH)
    assert_error(r, 400, "several worker processes")

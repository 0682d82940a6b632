"""On a GPU: CUDA shared memory (Triton's extension) against a real `morphserve serve --device cuda`: a client's CUDA
IPC handle registered, inputs read from and outputs written into device memory, every reference bounds-checked,
regions unregistered; and the compile path on the device (inductor, dynamic batch, checked against eager)."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import torch

from morphserve.graph import load_zoo
from morphserve.serving.compile import batch_sizes, compile_version
from morphserve.serving.placement import Placement
from tests.conftest import AUTH, ServerProcess

pytestmark = pytest.mark.cuda
X = np.random.default_rng(0).random((4, 64), dtype=np.float32)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    state = tmp_path_factory.mktemp("state")
    s = ServerProcess(
        ["--model", "digits", "--device", "cuda", "--admin-token", "test-token", "--state-dir", str(state)],
        log=tmp_path_factory.mktemp("log") / "server.log",
    )
    try:
        yield s.wait_ready(120)
    finally:
        s.stop()


def _handle(t: torch.Tensor) -> tuple[str, int]:
    """The CUDA IPC handle of the allocation holding `t` (base64) and `t`'s offset in it, as a client exports them."""
    shared = t.untyped_storage()._share_cuda_()
    handle, offset = shared[1], shared[3]
    assert isinstance(handle, bytes) and len(handle) == 64
    return base64.b64encode(handle).decode(), int(offset)


def test_inputs_and_outputs_through_cuda_shared_memory(server: ServerProcess) -> None:
    inp = torch.from_numpy(X).cuda()
    out = torch.zeros((4, 10), device="cuda")
    torch.cuda.synchronize()
    (h_in, off_in), (h_out, off_out) = _handle(inp), _handle(out)
    for name, h, off, t in (("gin", h_in, off_in, inp), ("gout", h_out, off_out, out)):
        body = {"raw_handle": {"b64": h}, "device_id": 0, "byte_size": off + t.numel() * 4}
        assert httpx.post(f"{server.url}/v2/cudasharedmemory/region/{name}/register", json=body).status_code == 401
        r = httpx.post(f"{server.url}/v2/cudasharedmemory/region/{name}/register", json=body, headers=AUTH)
        assert r.status_code == 200, r.text
    assert {r["name"] for r in httpx.get(f"{server.url}/v2/cudasharedmemory/status").json()} == {"gin", "gout"}
    assert "cuda_shared_memory" in httpx.get(f"{server.url}/v2").json()["extensions"]
    request = {
        "inputs": [
            {
                "name": "input",
                "datatype": "FP32",
                "shape": [4, 64],
                "parameters": {
                    "shared_memory_region": "gin",
                    "shared_memory_offset": off_in,
                    "shared_memory_byte_size": X.nbytes,
                },
            }
        ],
        "outputs": [
            {
                "name": "output",
                "parameters": {
                    "shared_memory_region": "gout",
                    "shared_memory_offset": off_out,
                    "shared_memory_byte_size": 160,
                },
            }
        ],
    }
    r = httpx.post(f"{server.url}/v2/models/digits/infer", json=request, timeout=30)
    assert r.status_code == 200, r.text
    want = load_zoo("digits").run(torch.from_numpy(X))[0].numpy()
    np.testing.assert_allclose(out.cpu().numpy(), want, rtol=1e-3, atol=1e-3)
    request["outputs"][0]["parameters"]["shared_memory_offset"] = off_out + 8  # past the window's end
    r = httpx.post(f"{server.url}/v2/models/digits/infer", json=request, timeout=30)
    assert r.status_code == 400 and "outside CUDA shared memory region 'gout'" in r.json()["error"]
    assert httpx.post(f"{server.url}/v2/cudasharedmemory/unregister", headers=AUTH).status_code == 200
    assert httpx.get(f"{server.url}/v2/cudasharedmemory/status").json() == []


def test_a_bad_handle_is_refused_with_the_cuda_error(server: ServerProcess) -> None:
    body = {"raw_handle": {"b64": base64.b64encode(b"\1" * 64).decode()}, "device_id": 0, "byte_size": 64}
    r = httpx.post(f"{server.url}/v2/cudasharedmemory/region/bad/register", json=body, headers=AUTH)
    assert r.status_code == 400 and "CUDA error" in r.json()["error"]


def test_inductor_compiles_a_placed_version_on_the_device_and_matches_eager() -> None:
    v = load_zoo("resnet")
    placed = Placement(torch.device("cuda")).prepare(v)
    runnable = compile_version(v, placed, "default", sizes=batch_sizes(32))
    with torch.inference_mode():
        for rows in (1, 7, 32):
            x = torch.randn(rows, 3, 32, 32, device="cuda")
            torch.testing.assert_close(runnable(x)[0], placed(x)[0], rtol=1e-3, atol=1e-3)

"""`morphserve.client.Client` / `AsyncClient` against a real `morphserve serve` subprocess.

One server per module (start-up dominates the run time); each test that edits works on its own copy of `digits`
(`fresh` fixture, created through the client's `add_model`), so tests stay independent in any order.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import socket
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

import morphserve.client.wire as client_module
from morphserve.client import (
    AsyncClient,
    Client,
    Conflict,
    InferResult,
    InvalidRequest,
    MorphserveError,
    NotFound,
    Unauthorized,
    Unreachable,
)
from tests.conftest import TOKEN, ServerProcess, free_port, serve_module

LINEAR_128 = {"type": "Linear", "in_features": 128, "out_features": 128}
_names = itertools.count()

# Two inputs, two outputs: exercises dict inputs and multi-output results.
TWO_IO_SPEC = {
    "name": "two_io",
    "inputs": [{"name": n, "datatype": "FP32", "shape": [-1, 4]} for n in ("a", "b")],
    "outputs": [{"name": "total", "node": "s"}, {"name": "logits", "node": "head"}],
    "nodes": [
        {"id": "s", "function": "add", "inputs": ["a", "b"]},
        {"id": "head", "layer": {"type": "Linear", "in_features": 4, "out_features": 2}, "inputs": ["s"]},
    ],
}


#: The module server's body limit: far above any body the tests here send (at most tens of KiB), low enough that
#: the limit test needs no second server (a server start is most of this file's time).
BODY_LIMIT_MB = 1


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from serve_module(tmp_path_factory, "--model", "digits", "--max-body-mb", str(BODY_LIMIT_MB))


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[Client]:
    with Client(server.url, token=TOKEN) as c:
        yield c


@pytest.fixture
def fresh(client: Client) -> Iterator[str]:
    """A private copy of `digits` (trained weights, version 1) that the test may edit freely."""
    name = f"digits_{next(_names)}"
    info = client.add_model(name, zoo="digits")
    assert info["name"] == name and info["version"] == 1
    yield name
    with contextlib.suppress(NotFound):
        client.delete_model(name)


def reference(x: np.ndarray) -> np.ndarray:
    from morphserve.graph import load_zoo

    return load_zoo("digits").run(torch.from_numpy(x))[0].numpy()


# -- models and inference ----------------------------------------------------------------------------------------
def test_models_and_model_info(client: Client) -> None:
    listing = {m["name"]: m for m in client.models()}
    assert listing["digits"]["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
    info = client.model("digits")
    assert info["outputs"][0]["shape"] == [-1, 10] and info["params"] == 17226


def test_infer_numpy_torch_lists_and_dicts_match_the_reference(client: Client) -> None:
    x = np.random.default_rng(0).random((5, 64), dtype=np.float32)
    want = reference(x)
    for given in (x, torch.from_numpy(x), x.astype(np.float64), x.tolist(), {"input": x}):
        r = client.infer("digits", given)
        assert isinstance(r, InferResult) and r.model == "digits" and r.version >= 1
        assert list(r.outputs) == ["output"] and r.output.dtype == np.float32 and r.output.shape == (5, 10)
        np.testing.assert_allclose(r.output, want, rtol=1e-5, atol=1e-5)


def test_infer_uses_the_binary_tensor_extension(server: ServerProcess) -> None:
    seen: list[httpx.Request] = []
    with Client(server.url) as c:
        c._http.event_hooks["request"].append(seen.append)
        x = np.arange(128, dtype=np.float32).reshape(2, 64) / 128
        np.testing.assert_allclose(c.infer("digits", x).output, reference(x), rtol=1e-5, atol=1e-5)
        c.infer("digits", x)  # the signature is cached: one metadata request for both calls
    posts = [r for r in seen if r.method == "POST"]
    assert [r.method for r in seen] == ["GET", "POST", "POST"]
    header_len = int(posts[0].headers["inference-header-content-length"])
    assert posts[0].headers["content-type"] == "application/octet-stream"
    assert len(posts[0].content) == header_len + x.nbytes  # raw float32 bytes after the JSON header


def test_multi_input_multi_output_model(client: Client) -> None:
    name = f"two_io_{next(_names)}"
    client.add_model(name, spec=TWO_IO_SPEC)
    try:
        a, b = np.ones((3, 4), np.float32), np.full((3, 4), 2, np.float32)
        r = client.infer(name, {"a": a, "b": torch.from_numpy(b)})
        assert set(r.outputs) == {"total", "logits"}
        np.testing.assert_array_equal(r.outputs["total"], a + b)
        assert r.outputs["logits"].shape == (3, 2)
        with pytest.raises(ValueError, match="has 2 outputs"):
            _ = r.output
        with pytest.raises(InvalidRequest, match="pass a dict") as e:  # refused before anything is sent
            client.infer(name, a)
        assert e.value.fields == {"expected": ["a", "b"]}
        with pytest.raises(InvalidRequest, match="missing input 'b'") as e2:
            client.infer(name, {"a": a})
        assert e2.value.status == 400 and e2.value.fields["expected"] == ["a", "b"]
    finally:
        assert client.delete_model(name) == {"deleted": name}
    with pytest.raises(NotFound) as e3:
        client.infer(name, {"a": a, "b": b})
    assert e3.value.fields == {"model": name}


def test_infer_errors_carry_the_server_fields(client: Client) -> None:
    with pytest.raises(InvalidRequest) as e:
        client.infer("digits", np.zeros((2, 63), np.float32))
    assert e.value.status == 400 and e.value.fields == {"expected": [-1, 64], "got": [2, 63]}
    assert "expected shape [-1, 64]" in str(e.value)
    with pytest.raises(NotFound) as nf:
        client.infer("no_such_model", np.zeros((1, 64), np.float32))
    assert nf.value.status == 404 and "no_such_model" in nf.value.message
    with pytest.raises(NotFound) as nv:
        client.infer("digits", np.zeros((1, 64), np.float32), version=999)
    assert nv.value.fields == {"version": 999}


# -- graphs and history --------------------------------------------------------------------------------------------
def test_graph_json_dot_svg(client: Client) -> None:
    g = client.graph("digits")
    assert g["model"] == "digits" and [n["id"] for n in g["nodes"]][:3] == ["input", "fc1", "relu1"]
    assert g["totals"]["params"] == 17226
    assert client.graph("digits", version=1)["version"] == 1
    dot = client.graph("digits", format="dot")
    assert isinstance(dot, str) and dot.startswith("digraph") and "fc1" in dot
    svg = client.graph("digits", format="svg")
    assert isinstance(svg, bytes) and b"<svg" in svg
    with pytest.raises(NotFound):
        client.graph("digits", version=999)


def test_edit_flow_insert_diff_versions_replace_remove_rollback(client: Client, fresh: str) -> None:
    x = np.random.default_rng(1).random((4, 64), dtype=np.float32)
    before = client.infer(fresh, x)
    r = client.insert(fresh, LINEAR_128, after="fc1", init="identity", name="extra")
    assert (r["model"], r["previous_version"], r["version"]) == (fresh, 1, 2)
    assert r["diff"]["added"] == ["extra"] and set(r["timings_ms"]) >= {"validate", "build", "swap", "total"}
    after = client.infer(fresh, x)
    assert after.version == 2
    np.testing.assert_allclose(after.output, before.output, atol=1e-5)  # identity init: function preserved

    d = client.diff(fresh, 1, 2)
    assert d["added"] == ["extra"] and d["removed"] == [] and not d["outputs_changed"]
    assert client.diff(fresh, 1)["to_version"] == 2  # b defaults to the current version
    hist = client.versions(fresh)
    assert hist["current"] == 2 and [v["version"] for v in hist["versions"]] == [1, 2]
    assert hist["versions"][1]["ops"][0]["op"] == "insert"

    r = client.replace(fresh, "fc3", {"type": "Linear", "in_features": 64, "out_features": 10}, keep_weights=True)
    assert r["version"] == 3
    np.testing.assert_allclose(client.infer(fresh, x).output, before.output, atol=1e-5)  # same weights kept
    r = client.replace(
        fresh, "fc3", {"type": "Linear", "in_features": 64, "out_features": 3}, allow_output_change=True, seed=7
    )
    assert client.infer(fresh, x).output.shape == (4, 3) and r["diff"]["outputs_changed"]

    r = client.remove(fresh, "extra", if_version=4)
    assert r["version"] == 5 and r["diff"]["removed"] == ["extra"]
    r = client.rollback(fresh, 1)
    assert r["version"] == 6
    back = client.infer(fresh, x)
    assert back.version == 6
    np.testing.assert_allclose(back.output, before.output, atol=1e-6)
    # an older, still resident version can be asked for explicitly
    assert client.infer(fresh, x, version=4).output.shape == (4, 3)


def test_edit_dry_run_and_if_version_conflict(client: Client, fresh: str) -> None:
    op = {"op": "insert", "after": "fc1", "layer": LINEAR_128, "init": "identity"}
    dry = client.edit(fresh, [op], dry_run=True)
    assert dry["dry_run"] and dry["version"] == 2 and dry["graph"]["version"] == 2
    assert client.versions(fresh)["current"] == 1  # nothing committed
    with pytest.raises(Conflict) as e:
        client.edit(fresh, [op], if_version=7)
    assert e.value.status == 409 and e.value.fields == {"expected": 7, "got": 1}
    with pytest.raises(Conflict):
        client.insert(fresh, LINEAR_128, after="fc1", if_version=3)
    assert client.edit(fresh, [op], if_version=1)["version"] == 2


def test_edit_errors_name_the_op_and_node(client: Client, fresh: str) -> None:
    with pytest.raises(NotFound) as e:
        client.insert(fresh, LINEAR_128, after="nope")
    assert e.value.fields == {"op": 0, "node": "nope"}
    with pytest.raises(InvalidRequest) as e2:
        client.insert(fresh, {"type": "Linear", "in_features": 12, "out_features": 128}, after="fc1")
    assert e2.value.status == 422 and e2.value.fields["op"] == 0 and "does not fit" in e2.value.message
    with pytest.raises(InvalidRequest) as e3:
        client.replace(fresh, "fc3", {"type": "Linear", "in_features": 64, "out_features": 5})
    assert e3.value.fields == {"node": "fc3", "expected": [-1, 10], "got": [-1, 5]}
    with pytest.raises(InvalidRequest) as e4:
        client.remove(fresh, "fc1")
    assert e4.value.fields["node"] == "fc2"
    with pytest.raises(NotFound):
        client.rollback(fresh, 50)
    assert client.versions(fresh)["current"] == 1  # refused edits change nothing


def test_model_management_errors(client: Client, fresh: str) -> None:
    with pytest.raises(Conflict, match="already exists"):
        client.add_model(fresh, zoo="digits")
    with pytest.raises(NotFound, match="no zoo model"):
        client.add_model("other", zoo="no_such_zoo")
    with pytest.raises(InvalidRequest):
        client.add_model("bad name!", zoo="digits")
    info = client.add_model(f"mlp_{next(_names)}", zoo="mlp", options={"hidden": 8, "depth": 1, "in_features": 4})
    assert info["inputs"][0]["shape"] == [-1, 4] and info["params"] == 4 * 8 + 8 + 8 * 10 + 10
    client.delete_model(info["name"])


def test_auth_errors(server: ServerProcess, fresh: str) -> None:
    with Client(server.url) as anonymous, pytest.raises(Unauthorized) as e:
        anonymous.remove(fresh, "relu1")
    assert e.value.status == 401
    with Client(server.url, token="wrong") as wrong, pytest.raises(Unauthorized) as e2:
        wrong.rollback(fresh, 1)
    assert e2.value.status == 403
    with Client(server.url) as anonymous:  # reads stay open
        assert anonymous.versions(fresh)["current"] == 1


def test_url_and_token_from_the_environment(server: ServerProcess, fresh: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MORPHSERVE_URL", server.url + "/")
    monkeypatch.setenv("MORPHSERVE_TOKEN", TOKEN)
    with Client() as c:
        assert c.base_url == server.url
        assert c.insert(fresh, LINEAR_128, after="fc1", init="identity")["version"] == 2


def test_unreachable_server() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with Client(url, timeout=5) as c, pytest.raises(Unreachable) as e:
        c.models()
    assert isinstance(e.value, MorphserveError) and e.value.status == 0 and url in e.value.message


def test_a_server_that_never_answers_times_out() -> None:
    """A socket that accepts connections (the kernel's backlog) and never answers: both clients give up after their
    timeout with Unreachable saying so, not an httpx exception or a hang."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with Client(url, timeout=0.3) as c, pytest.raises(Unreachable) as e:
            c.models()
        assert e.value.status == 0 and e.value.message == f"cannot reach morphserve at {url}: timed out"

        async def aio() -> None:
            async with AsyncClient(url, timeout=0.3) as c:
                with pytest.raises(Unreachable) as e:
                    await c.infer("digits", np.zeros((1, 64), np.float32))
                assert e.value.status == 0 and e.value.message.endswith(": timed out")

        asyncio.run(aio())


# -- weights -------------------------------------------------------------------------------------------------------
def test_set_weights_from_arrays_tensors_and_a_file(
    client: Client, fresh: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = np.random.default_rng(2).random((3, 64), dtype=np.float32)
    # zero weights and bias k: the output is exactly k everywhere, whatever the input
    r = client.set_weights(fresh, "fc3", {"weight": np.zeros((10, 64), np.float32), "bias": np.full(10, 2, np.float32)})
    assert r["version"] == 2 and r["diff"]["changed"][0]["changes"] == ["weights"]
    np.testing.assert_array_equal(client.infer(fresh, x).output, np.full((3, 10), 2, np.float32))

    client.set_weights(fresh, "fc3", {"bias": torch.full((10,), 3.0)})
    np.testing.assert_array_equal(client.infer(fresh, x).output, np.full((3, 10), 3, np.float32))

    # a file, streamed in small chunks (patched down from 1 MiB) with progress reported after each
    monkeypatch.setattr(client_module, "CHUNK_BYTES", 1024)
    path = tmp_path / "fc3.safetensors"
    save_file({"fc3.weight": np.zeros((10, 64), np.float32), "fc3.bias": np.arange(10, dtype=np.float32)}, path)
    calls: list[tuple[int, int]] = []
    r = client.set_weights(fresh, "fc3", path, progress=lambda sent, total: calls.append((sent, total)))
    size = path.stat().st_size
    assert r["version"] == 4
    assert calls[0] == (0, size) and calls[-1] == (size, size) and len(calls) == 2 + size // 1024
    assert [s for s, _ in calls] == sorted(s for s, _ in calls)
    np.testing.assert_array_equal(client.infer(fresh, x).output, np.tile(np.arange(10, dtype=np.float32), (3, 1)))
    client.set_weights(fresh, "fc3", str(path))  # str paths work too
    client.set_weights(fresh, "fc3", path.read_bytes())  # and raw bytes


def test_set_weights_errors(client: Client, fresh: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        client.set_weights(fresh, "fc3", {"weight": np.zeros((10, 64))})  # float64 for an FP32 layer
    assert e.value.fields == {"node": "fc3", "expected": "FP32", "got": "FP64", "op": 0}
    with pytest.raises(InvalidRequest) as e2:
        client.set_weights(fresh, "fc3", {"weight": np.zeros((10, 63), np.float32)})
    assert e2.value.fields["expected"] == [10, 64] and e2.value.fields["got"] == [10, 63]
    with pytest.raises(InvalidRequest, match="not a valid safetensors") as e3:
        client.set_weights(fresh, "fc3", b"not safetensors")
    assert e3.value.status == 400
    with pytest.raises(NotFound):
        client.set_weights(fresh, "nope", {"weight": np.zeros((10, 64), np.float32)})
    assert client.versions(fresh)["current"] == 1


def test_body_over_the_limit_is_invalid_request(client: Client, fresh: str, tmp_path: Path) -> None:
    over = BODY_LIMIT_MB * 1024 * 1024 // 4 // 64 + 16  # rows of 64 float32: just over the limit
    path = tmp_path / "fc1.safetensors"
    save_file({"weight": np.zeros((over, 64), np.float32)}, path)
    with pytest.raises(InvalidRequest, match="exceeds the limit") as e:
        client.set_weights(fresh, "fc1", path)
    assert e.value.status == 413
    with pytest.raises(InvalidRequest, match="exceeds the limit"):
        client.infer(fresh, np.zeros((over, 64), np.float32))
    assert client.versions(fresh)["current"] == 1
    assert client.infer(fresh, np.zeros((over // 2, 64), np.float32)).output.shape == (over // 2, 10)  # under it


# -- durability ----------------------------------------------------------------------------------------------------
def test_export_pin_gc(server: ServerProcess, client: Client, fresh: str) -> None:
    client.insert(fresh, LINEAR_128, after="fc1", init="identity")
    client.insert(fresh, LINEAR_128, after="fc1", init="identity")
    data = client.export(fresh, 2)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert {"spec.json", "weights.safetensors"} <= set(z.namelist())
    assert client.pin(fresh, 1) == {"model": fresh, "version": 1, "pinned": True}
    assert client.versions(fresh)["versions"][0]["pinned"]
    r = client.gc(fresh, keep=1)
    assert r["model"] == fresh and r["removed_versions"] == [2]  # 1 is pinned, 3 is current
    assert client.unpin(fresh, 1)["pinned"] is False
    assert client.gc(fresh, keep=1)["removed_versions"] == [1]
    with pytest.raises(NotFound):
        client.export(fresh, 2)
    with pytest.raises(InvalidRequest):
        client.gc(fresh, keep=0)


# -- the async client ----------------------------------------------------------------------------------------------
def test_async_client(server: ServerProcess, fresh: str) -> None:
    async def scenario() -> None:
        async with AsyncClient(server.url, token=TOKEN) as c:
            x = np.random.default_rng(3).random((2, 64), dtype=np.float32)
            results = await asyncio.gather(*(c.infer(fresh, x) for _ in range(8)))
            for r in results:
                np.testing.assert_allclose(r.output, reference(x), rtol=1e-5, atol=1e-5)
            assert [m["name"] for m in await c.models()].count(fresh) == 1
            assert (await c.model(fresh))["version"] == 1
            assert (await c.graph(fresh))["totals"]["nodes"] == 7
            assert (await c.graph(fresh, format="dot")).startswith("digraph")
            r = await c.insert(fresh, LINEAR_128, after="fc1", init="identity")
            assert r["version"] == 2
            assert (await c.diff(fresh, 1, 2))["added"] == r["diff"]["added"]
            calls: list[tuple[int, int]] = []
            head = {"weight": np.zeros((10, 64), np.float32), "bias": np.ones(10, np.float32)}
            await c.set_weights(fresh, "fc3", head, progress=lambda *a: calls.append(a))
            assert calls[-1][0] == calls[-1][1] > 0
            assert (await c.infer(fresh, x)).output.tolist() == [[1.0] * 10] * 2
            edited = await c.edit(fresh, [{"op": "remove", "node": r["diff"]["added"][0]}], if_version=3)
            assert edited["version"] == 4
            assert (await c.remove(fresh, "relu2", allow_output_change=False))["version"] == 5
            await c.replace(fresh, "fc3", {"type": "Linear", "in_features": 64, "out_features": 10})
            assert (await c.rollback(fresh, 1))["version"] == 7
            assert (await c.versions(fresh))["current"] == 7
            with pytest.raises(Conflict) as e:
                await c.rollback(fresh, 1, if_version=1)
            assert e.value.fields == {"expected": 1, "got": 7}
            with pytest.raises(InvalidRequest) as e2:
                await c.infer(fresh, np.zeros((1, 3), np.float32))
            assert e2.value.fields == {"expected": [-1, 64], "got": [1, 3]}
            name = f"async_{next(_names)}"
            await c.add_model(name, zoo="digits")
            await c.delete_model(name)
            with pytest.raises(NotFound):
                await c.model(name)
        async with AsyncClient(server.url) as anonymous:
            with pytest.raises(Unauthorized):
                await anonymous.rollback(fresh, 1)
        async with AsyncClient(f"http://127.0.0.1:{free_port()}") as nowhere:
            with pytest.raises(Unreachable):
                await nowhere.models()

    asyncio.run(scenario())

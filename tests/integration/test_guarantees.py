"""The five guarantees of the device worker, under real concurrency:

1. no batch mixes versions, and every response names the version that computed it;
2. after an edit's response, every later request is served by that version or a newer one;
3. in-flight inference never fails because of an edit, and a failed edit changes nothing;
4. edits are serialised, and concurrent edits with the same if_version give exactly one 200, the rest 409;
5. a full queue answers 503 with Retry-After.

Edits that change outputs recognisably make this observable: `set_weights` on fc3 with a zero weight and a
bias of constant c makes every logit of every row equal c, and each version gets its own c (its number).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from morphserve.graph.errors import EditError
from morphserve.serving.registry import Registry
from morphserve.store import StorageFullError
from tests.conftest import AUTH
from tests.integration.helpers import WAIT, X, assert_error, head_ops, hold, identity_insert, reference, served

EDITS = "/v1/models/digits/edits"
V1 = "/v1/models/digits/infer"


def _rows(i: int) -> list[list[float]]:
    return X[: 1 + i % 3].tolist()


def _oip(i: int) -> dict[str, Any]:
    x = X[: 1 + i % 3]
    return {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.reshape(-1).tolist()}]}


async def _infer(client: httpx.AsyncClient, i: int, version: int | None = None) -> tuple[int, np.ndarray]:
    """One inference through /v1 or OIP (alternating), or OIP on an explicit version; (version, outputs)."""
    if version is not None:
        r = await client.post(f"/v2/models/digits/versions/{version}/infer", json=_oip(i))
    elif i % 2:
        r = await client.post("/v2/models/digits/infer", json=_oip(i))
    else:
        r = await client.post(V1, json={"inputs": _rows(i)})
    assert r.status_code == 200, (r.status_code, r.text)
    body = r.json()
    if (
        "outputs" in body
        and isinstance(body["outputs"], list)
        and body["outputs"]
        and isinstance(body["outputs"][0], dict)
    ):
        out = np.array(body["outputs"][0]["data"], dtype=np.float32).reshape(body["outputs"][0]["shape"])
        v = body["model_version"]
        assert isinstance(v, str), body  # OIP: the version as a string
        return int(v), out
    assert isinstance(body["model_version"], int), body
    return body["model_version"], np.array(body["outputs"], dtype=np.float32)


def _expected(version: int, rows: int) -> np.ndarray:
    """What version `version` computes: v1 is the trained model, every later version the constant `version`."""
    if version == 1:
        return reference(X[:rows])
    return np.full((rows, 10), float(version), dtype=np.float32)


def _check(version: int, out: np.ndarray) -> None:
    np.testing.assert_allclose(
        out,
        _expected(version, out.shape[0]),
        rtol=1e-5,
        atol=1e-5,
        err_msg=f"response says version {version} but another version computed it",
    )


async def _edit_to_own_constant(client: httpx.AsyncClient, registry: Registry, **extra: Any) -> int:
    """Commit the next version with outputs equal to its own number; returns that number."""
    nxt = registry.current("digits").version + 1
    r = await client.post(EDITS, json={"ops": head_ops(float(nxt)), **extra})
    assert r.status_code == 200, r.text
    assert r.json()["version"] == nxt
    return nxt


def _batch_stats(registry: Registry) -> tuple[float, float]:
    """(number of batches, rows in them) from the batch-size histogram."""
    count = total = 0.0
    for fam in registry.metrics.registry.collect():
        for s in fam.samples:
            if s.name == "morphserve_batch_size_count":
                count += s.value
            elif s.name == "morphserve_batch_size_sum":
                total += s.value
    return count, total


# -- 1 -----------------------------------------------------------------------------------------------------------
def test_1_no_batch_mixes_versions_and_responses_name_their_version(tmp_path: Path) -> None:
    async def main() -> None:
        async with served(tmp_path, max_batch_size=64, max_batch_delay_ms=5, batch_wait="full") as (client, registry):
            await _edit_to_own_constant(client, registry)  # from now on every version's output is its number
            done = asyncio.Event()
            seen: list[tuple[int, np.ndarray]] = []
            pinned: list[tuple[int, int, np.ndarray]] = []

            async def stream(worker: int) -> None:
                i = worker
                while not done.is_set():
                    seen.append(await _infer(client, i))
                    i += 7

            async def old_versions(worker: int) -> None:
                """Requests for an explicit older version, batched beside requests for the current one."""
                i = worker
                while not done.is_set():
                    cur = registry.current("digits").version
                    want = max(2, cur - 1)
                    v, out = await _infer(client, i, version=want)
                    pinned.append((want, v, out))
                    i += 1

            async def editor() -> None:
                for _ in range(12):
                    await asyncio.sleep(0.02)
                    await _edit_to_own_constant(client, registry)
                await asyncio.sleep(0.02)
                done.set()

            await asyncio.gather(editor(), *(stream(w) for w in range(12)), *(old_versions(w) for w in range(3)))
            count, rows = _batch_stats(registry)

        for v, out in seen:
            _check(v, out)
        for want, v, out in pinned:
            assert v == want
            _check(v, out)
        versions = {v for v, _ in seen}
        assert len(versions) >= 4, versions  # the stream really straddled many edits
        assert versions <= set(range(2, 15))
        assert count < len(seen) + len(pinned) and rows > count, "requests were never batched together"

    asyncio.run(main())


# -- 2 -----------------------------------------------------------------------------------------------------------
def test_2_after_an_edit_response_later_requests_see_that_version_or_newer(tmp_path: Path) -> None:
    async def main() -> None:
        async with served(tmp_path, max_batch_size=32, max_batch_delay_ms=20, batch_wait="full") as (client, registry):
            # sequentially: the very next request after each edit response sees the edit
            for i in range(5):
                v = await _edit_to_own_constant(client, registry)
                got, out = await _infer(client, i)
                assert got == v
                _check(got, out)

            # concurrently: each request remembers the newest edit acknowledged before it was sent
            acked = registry.current("digits").version
            done = asyncio.Event()
            checks: list[tuple[int, int, np.ndarray]] = []

            async def stream(worker: int) -> None:
                nonlocal acked
                i = worker
                while not done.is_set():
                    floor = acked
                    got, out = await _infer(client, i)
                    checks.append((floor, got, out))
                    i += 1

            async def editor() -> None:
                nonlocal acked
                for _ in range(10):
                    await asyncio.sleep(0.015)
                    acked = await _edit_to_own_constant(client, registry)
                await asyncio.sleep(0.03)
                done.set()

            await asyncio.gather(editor(), *(stream(w) for w in range(8)))

        assert len(checks) > 20
        for floor, got, out in checks:
            assert got >= floor, f"a request sent after version {floor} was acknowledged ran on {got}"
            _check(got, out)
        assert {floor for floor, _, _ in checks} != {checks[0][0]}  # edits were acknowledged mid-stream

    asyncio.run(main())


# -- 3 -----------------------------------------------------------------------------------------------------------
STRUCTURAL: list[list[dict[str, Any]]] = [
    [identity_insert(name="ident")],
    [{"op": "replace", "node": "relu1", "layer": {"type": "Tanh"}}],
    [{"op": "remove", "node": "ident"}],
    [
        {
            "op": "insert",
            "before": "fc3",
            "layer": {"type": "Linear", "in_features": 64, "out_features": 64},
            "init": "identity",
            "name": "lin",
        }
    ],
    [{"op": "replace", "node": "relu1", "layer": {"type": "ReLU"}}],
    [{"op": "remove", "node": "lin"}],
]
INVALID: list[list[dict[str, Any]]] = [
    [{"op": "insert", "after": "relu1", "layer": {"type": "Linear", "in_features": 3, "out_features": 3}}],
    [{"op": "remove", "node": "fc3"}],
    [{"op": "set_weights", "node": "fc1", "tensors": {"bias": {"shape": [2], "data": [0.0, 0.0]}}}],
]


def test_3_inference_never_fails_during_edits(tmp_path: Path) -> None:
    """Structural edits, rollbacks and refused edits while requests fly: every request is a 200, and its outputs are
    exactly what the version it names computes on the rows it sent (checked afterwards against each version rebuilt
    from the store, run in-process)."""

    async def main() -> None:
        async with served(tmp_path, max_batch_size=16, max_batch_delay_ms=10, batch_wait="full") as (client, registry):
            done = asyncio.Event()
            results: list[tuple[int, int, np.ndarray]] = []  # (version, rows sent, outputs)
            failures: list[str] = []

            async def stream(worker: int) -> None:
                i = worker
                while not done.is_set():
                    if i % 2:
                        r = await client.post("/v2/models/digits/infer", json=_oip(i))
                    else:
                        r = await client.post(V1, json={"inputs": _rows(i)})
                    if r.status_code == 200:
                        body = r.json()
                        out = body["outputs"][0] if i % 2 else {"data": body["outputs"], "shape": [1 + i % 3, 10]}
                        data = np.asarray(out["data"], np.float32).reshape(out["shape"])
                        results.append((int(body["model_version"]), 1 + i % 3, data))
                    else:
                        failures.append(f"{r.request.url.path} -> {r.status_code} {r.text[:300]}")
                    i += 1

            async def editor() -> None:
                for k in range(3):  # structural edits, rollbacks and refused edits, while requests fly
                    for ops in STRUCTURAL:
                        r = await client.post(EDITS, json={"ops": ops})
                        assert r.status_code == 200, r.text
                        bad = await client.post(EDITS, json={"ops": INVALID[k]})
                        assert bad.status_code == 422, bad.text
                    r = await client.post("/v1/models/digits/rollback", json={"version": 1})
                    assert r.status_code == 200, r.text
                done.set()

            await asyncio.gather(editor(), *(stream(w) for w in range(10)))
            final = registry.current("digits").version
            versions = {v for v, _, _ in results}
            expected = {}
            for v in versions:  # what each version computes, rebuilt from the store (evicted ones are reloaded)
                version = await registry.version("digits", v)
                expected[v] = version.run(torch.from_numpy(X))[0].numpy()

        assert results and not failures, failures[:5]
        assert len(versions) >= 5
        assert final == 1 + 3 * (len(STRUCTURAL) + 1)  # refused edits took no version numbers
        for v, rows, out in results:
            what = f"a response names version {v} but v{v} computes other outputs"
            np.testing.assert_allclose(out, expected[v][:rows], rtol=1e-5, atol=1e-5, err_msg=what)
        # the edits changed what the model computes (Tanh for ReLU), so a mislabelled response would be caught
        assert any(not np.allclose(expected[v], expected[1], atol=1e-4) for v in versions)

    asyncio.run(main())


def test_3_results_from_a_version_still_being_recorded_are_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new version is recorded in the model's history (`Residency.saw`) before the worker swaps it in, so
    that a result never names a version the server does not know; once the edit pipeline let the worker swap first,
    and a result computed in between was a 500. Widen the window around the record: inference must still be 200."""
    from morphserve.serving.residency import Residency

    record = Residency.saw

    def slow_record(self: Residency[Any], number: int) -> None:
        time.sleep(0.02)
        record(self, number)
        time.sleep(0.02)

    monkeypatch.setattr(Residency, "saw", slow_record)

    async def main() -> None:
        async with served(tmp_path) as (client, registry):

            async def stream() -> list[tuple[int, np.ndarray]]:
                got = []
                for i in range(30):
                    got.append(await _infer(client, i))
                    await asyncio.sleep(0.005)
                return got

            async def editor() -> None:
                for _ in range(3):
                    await _edit_to_own_constant(client, registry)

            results, _ = await asyncio.gather(stream(), editor())
        for v, out in results:
            _check(v, out)
        assert len({v for v, _ in results}) >= 2

    asyncio.run(main())


async def _snapshot(client: httpx.AsyncClient) -> tuple[Any, ...]:
    graph = await client.get("/v1/models/digits/graph")
    hist = await client.get("/v1/models/digits/versions")
    meta = await client.get("/v2/models/digits")
    info = (await client.get("/v1/models/digits")).json()
    out = await client.post(V1, json={"inputs": X.tolist()})
    return (graph.text, graph.headers["etag"], hist.json(), meta.json(), info["version"], info["params"], out.json())


@pytest.mark.parametrize(
    "ops,status",
    [
        (INVALID[0], 422),
        (INVALID[1], 422),
        (INVALID[2], 422),
        ([identity_insert(name="ok"), {"op": "remove", "node": "ghost"}], 404),
        (
            [
                {
                    "op": "insert",
                    "after": "fc1",
                    "layer": {"type": "Linear", "in_features": 128, "out_features": 128},
                    "init": "identity",
                },
                {"op": "remove", "node": "fc3"},
            ],
            422,
        ),
    ],
)
def test_3_a_failed_edit_changes_nothing(tmp_path: Path, ops: list[dict[str, Any]], status: int) -> None:
    async def main() -> None:
        async with served(tmp_path) as (client, registry):
            await _edit_to_own_constant(client, registry)
            before = await _snapshot(client)
            r = await client.post(EDITS, json={"ops": ops})
            assert_error(r, status)
            assert await _snapshot(client) == before
            # the next edit gets the next number: the failed one left no trace in the history
            assert await _edit_to_own_constant(client, registry) == 3

    asyncio.run(main())


def test_3_an_edit_failing_its_warm_up_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The last check before the swap (a forward on the device) failing leaves the old version serving,
    nothing journaled, and no version number taken."""
    import morphserve.serving.placement as placement_module

    async def main() -> None:
        async with served(tmp_path) as (client, registry):
            before = await _snapshot(client)

            def failing_warm_up(*_: Any) -> None:
                raise EditError("the new version failed its warm-up forward: simulated device error")

            monkeypatch.setattr(placement_module, "warm_up", failing_warm_up)
            assert_error(await client.post(EDITS, json={"ops": [identity_insert()]}), 422, "warm-up")
            monkeypatch.undo()
            assert await _snapshot(client) == before
            assert await _edit_to_own_constant(client, registry) == 2

    asyncio.run(main())


def test_3_an_edit_failing_to_persist_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Commit order (docs/ARCHITECTURE.md): the journal row is written before the version is published and swapped
    in. When writing it fails (a full disk, injected at the journal's append), the live version, the history, the
    graph and the outputs are as before, no version number is taken, and the worker never saw the candidate."""

    async def main() -> None:
        async with served(tmp_path) as (client, registry):
            await _edit_to_own_constant(client, registry)  # v2: outputs are all 2.0
            before = await _snapshot(client)
            resident = registry.resident("digits")
            published = registry.get("digits").residency.latest

            def disk_full(*_: Any, **__: Any) -> None:
                raise StorageFullError("no space left to journal digits v3 (injected); 4096 bytes were needed", 4096)

            monkeypatch.setattr(registry.store.journal, "append", disk_full)
            for ops in (head_ops(3.0), [identity_insert(name="never")]):
                body = assert_error(await client.post(EDITS, json={"ops": ops}), 507, "no space left")
                assert body["needed_bytes"] == 4096
                assert await _snapshot(client) == before
                assert registry.resident("digits") == resident
                assert registry.get("digits").residency.latest == published
            monkeypatch.undo()
            assert await _edit_to_own_constant(client, registry) == 3  # the failed edits took no number
            _, out = await _infer(client, 0)
            _check(3, out)

    asyncio.run(main())


# -- 4 -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("via", ["if_version", "If-Match"])
def test_4_concurrent_edits_with_the_same_base_one_wins(make_client: Callable[..., TestClient], via: str) -> None:
    client = make_client()
    client.post(EDITS, json={"ops": head_ops(2.0)}, headers=AUTH).raise_for_status()
    n = 8
    barrier = threading.Barrier(n)
    results: list[tuple[int, httpx.Response]] = []
    lock = threading.Lock()

    def edit(k: int) -> None:
        body: dict[str, Any] = {"ops": head_ops(100.0 + k)}
        headers = dict(AUTH)
        if via == "if_version":
            body["if_version"] = 2
        else:
            headers["If-Match"] = '"2"'
        barrier.wait()
        r = client.post(EDITS, json=body, headers=headers)
        with lock:
            results.append((k, r))

    threads = [threading.Thread(target=edit, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    statuses = sorted(r.status_code for _, r in results)
    assert statuses == [200] + [409] * (n - 1), statuses
    k_won, winner = next((k, r.json()) for k, r in results if r.status_code == 200)
    assert winner["version"] == 3 and winner["previous_version"] == 2
    for _, r in results:
        if r.status_code == 409:
            body = assert_error(r, 409, "version 3")
            assert body["expected"] == 2 and body["got"] == 3
    # the winner's weights serve, and nothing of the losers'
    const = client.post(V1, json={"inputs": X.tolist()}).json()
    assert const["model_version"] == 3
    assert const["outputs"] == [[100.0 + k_won] * 10] * 3
    old = client.post("/v2/models/digits/versions/2/infer", json=_oip(2)).json()
    assert old["outputs"][0]["data"] == [2.0] * 30
    assert [v["version"] for v in client.get("/v1/models/digits/versions").json()["versions"]] == [1, 2, 3]


def test_4_concurrent_edits_without_a_base_are_serialised(tmp_path: Path) -> None:
    async def main() -> None:
        async with served(tmp_path) as (client, registry):
            rs = await asyncio.gather(
                *(client.post(EDITS, json={"ops": [identity_insert(name=f"id{k}")]}) for k in range(6))
            )
            assert all(r.status_code == 200 for r in rs), [r.text for r in rs]
            pairs = sorted((r.json()["previous_version"], r.json()["version"]) for r in rs)
            assert pairs == [(v, v + 1) for v in range(1, 7)]  # one chain, no two edits on the same base
            graph = (await client.get("/v1/models/digits/graph")).json()
            assert {f"id{k}" for k in range(6)} <= {n["id"] for n in graph["nodes"]}
            hist = (await client.get("/v1/models/digits/versions")).json()["versions"]
            assert [(h["parent"], h["version"]) for h in hist] == [(None, 1), *pairs]
            _, out = await _infer(client, 2)
            np.testing.assert_allclose(out, reference(X), rtol=1e-5, atol=1e-5)

    asyncio.run(main())


# -- 5 -----------------------------------------------------------------------------------------------------------
def test_5_full_queue_answers_503_with_retry_after(make_client: Callable[..., TestClient]) -> None:
    """Deterministic: a one-row request is held inside the model (a Gate); a two-row request fills the one-slot
    queue behind it; the next requests are 503 while the first is still held, so they did not wait for a slot."""
    client = make_client(max_queue=1, max_batch_size=2)
    registry = client.app.state.registry  # type: ignore[attr-defined]
    worker = registry.get("digits").worker
    gate = hold(registry)
    results: dict[str, httpx.Response] = {}

    def send(key: str, rows: int) -> None:
        results[key] = client.post(V1, json={"inputs": X[:rows].tolist()})

    def wait_for(cond: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT
        while not cond():
            assert time.monotonic() < deadline, what
            time.sleep(0.002)

    held = threading.Thread(target=send, args=("held", 1))
    held.start()
    gate.wait_entered()
    queued = threading.Thread(target=send, args=("queued", 2))
    queued.start()
    wait_for(lambda: worker.queue_depth() == 1, "the second request never queued")

    for r in (client.post(V1, json={"inputs": X[:1].tolist()}), client.post("/v2/models/digits/infer", json=_oip(0))):
        body = assert_error(r, 503, "queued")
        assert int(r.headers["retry-after"]) >= 1, r.headers
        assert body["error"]
    assert not results and gate.batches == [1], "a full queue must answer at once, not wait for a slot"
    assert worker.queue_depth() == 1  # refused requests did not grow the queue

    gate.release()
    held.join(WAIT)
    queued.join(WAIT)
    assert results["held"].status_code == 200 and results["queued"].status_code == 200
    np.testing.assert_allclose(np.array(results["queued"].json()["outputs"]), reference(X[:2]), rtol=1e-5, atol=1e-5)
    assert gate.batches == [1, 2]
    # the queue drained: requests are accepted again
    assert client.post(V1, json={"inputs": X.tolist()[:2]}).status_code == 200
    metrics = client.get("/metrics").text
    assert 'route="/v1/models/{model}/infer",status="503"} 1.0' in metrics
    assert 'route="/v2/models/{model}/infer",status="503"} 1.0' in metrics

"""Backpressure and slow clients (issue 7, item 5; made event-driven by issue 11, item 8).

- A full queue answers 503 with Retry-After at once: while a batch is held inside the model, the 503s come back
  and the held batch is still in flight.
- A client that sends its body slowly does not stall other requests: against a real server, several raw-socket
  clients send half their bodies and stop; other requests complete meanwhile; then the slow bodies are finished
  and served.
- Request timeouts are configurable: a request held in the model answers a JSON 504 with a small timeout and a 200
  with a large one (the --request-timeout-s flag reaching the setting: tests/e2e/test_serve.py).
- A cancelled request does not leak its queue slot: cancelled while queued (asyncio task cancelled, request timed
  out, or the client disconnected from a real server), the queue depth returns to 0 and exactly `max_queue`
  requests can be queued again.

The worker is held by routing the model through a `Gate` (tests/integration/helpers.py) that blocks inside the
batch on an event: nothing here waits for a batch delay to pass, and no assertion bounds how long something took.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from morphserve.client import Unavailable
from morphserve.serving.worker import DeviceWorker
from tests.integration.helpers import WAIT, assert_error, hold, reference, threaded_server, until
from tests.integration.helpers import served_with_binary as served

V1 = "/v1/models/digits/infer"
XS = np.random.default_rng(1).random((64, 64), dtype=np.float32)


def _oip(rows: int, start: int = 0) -> dict[str, Any]:
    x = XS[start : start + rows]
    return {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.reshape(-1).tolist()}]}


def _until_sync(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.005)


async def _queue(
    client: httpx.AsyncClient, worker: DeviceWorker, rows: list[int]
) -> list[asyncio.Task[httpx.Response]]:
    """Requests that wait in the queue behind the held batch (each checked to be queued before the next); all for
    explicit version 1, so that they form batches together (an explicit version batches apart from the current)."""
    start, offset, tasks = worker.queue_depth(), 0, []
    for k, r in enumerate(rows, start=1):
        body = _oip(r, offset)
        tasks.append(asyncio.create_task(client.post("/v2/models/digits/versions/1/infer", json=body)))
        offset += r
        await until(lambda k=k: worker.queue_depth() == start + k, f"request {k} is queued")  # type: ignore[misc]
    return tasks


def _outputs(r: httpx.Response) -> np.ndarray:
    out = r.json()["outputs"][0]
    return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])


# -- 503 at once ---------------------------------------------------------------------------------------------------
def test_full_queue_answers_503_with_retry_after_at_once(tmp_path: Path) -> None:
    async def main() -> None:
        async with served(tmp_path, max_queue=4, max_batch_size=64) as (client, binary, registry):
            worker = registry.get("digits").worker
            gate = hold(registry)
            held = asyncio.create_task(client.post(V1, json={"inputs": XS[:1].tolist()}))
            await asyncio.to_thread(gate.wait_entered)
            rows = [16, 16, 16, 16]
            queued = await _queue(client, worker, rows)  # 64 rows: one full batch once the held one has run
            assert worker.queue_depth() == 4 == worker.max_queue

            for how in ("v1", "oip", "oip version", "binary"):
                if how == "binary":
                    with pytest.raises(Unavailable) as e:
                        await binary.infer("digits", XS[:1])
                    assert e.value.status == 503 and "queued" in e.value.message
                else:
                    path, body = {
                        "v1": (V1, {"inputs": XS[:1].tolist()}),
                        "oip": ("/v2/models/digits/infer", _oip(1)),
                        "oip version": ("/v2/models/digits/versions/1/infer", _oip(1)),
                    }[how]
                    r = await client.post(path, json=body)
                    assert_error(r, 503, "queued")
                    assert int(r.headers["retry-after"]) >= 1, r.headers
            # at once: every 503 came back while the first batch was still inside the model
            assert not held.done() and gate.batches == [1], "the 503s waited for the held batch"
            assert worker.queue_depth() == 4, "refused requests must not take a slot"

            gate.release()
            first = await held
            rest = await asyncio.gather(*queued)
            assert first.status_code == 200 and first.json()["model_version"] == 1
            offset = 0
            for r, n in zip(rest, rows, strict=True):
                assert r.status_code == 200, r.text
                np.testing.assert_allclose(_outputs(r), reference(XS[offset : offset + n]), rtol=1e-5, atol=1e-5)
                offset += n
            assert gate.batches == [1, 64]  # the four queued requests ran as one batch
            assert worker.queue_depth() == 0
            assert (await client.post(V1, json={"inputs": XS[:2].tolist()})).status_code == 200

    asyncio.run(main())


# -- request timeouts ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("timeout_s,status", [(0.1, 504), (30.0, 200)])
def test_request_timeout_is_configurable(tmp_path: Path, timeout_s: float, status: int) -> None:
    """The same request, held inside the model, with two timeouts: 504 while it is held, or 200 once released."""

    async def main() -> None:
        async with served(tmp_path, request_timeout_s=timeout_s) as (client, _, registry):
            gate = hold(registry)
            pending = asyncio.create_task(client.post(V1, json={"inputs": XS[:1].tolist()}))
            await asyncio.to_thread(gate.wait_entered)
            if status == 504:
                body = assert_error(await pending, 504, "longer than 0.1 s")
                assert body["error"] and gate.batches == [1]  # answered while its batch was still in the model
                gate.release()
            else:
                await asyncio.sleep(0.2)  # twice the small timeout: this one must still be waiting
                assert not pending.done()
                gate.release()
                r = await pending
                assert r.status_code == 200 and r.json()["model_version"] == 1, r.text
                np.testing.assert_allclose(np.asarray(r.json()["outputs"]), reference(XS[:1]), rtol=1e-5, atol=1e-5)
            await until(lambda: registry.get("digits").worker.queue_depth() == 0, "the queue drained")

    asyncio.run(main())


# -- cancelled requests give their slot back ---------------------------------------------------------------------
@pytest.mark.parametrize("how", ["task cancelled", "timed out"])
def test_cancelled_requests_do_not_leak_queue_slots(tmp_path: Path, how: str) -> None:
    max_queue = 3

    async def main() -> None:
        timeout = 1.0 if how == "timed out" else 30.0
        async with served(tmp_path, max_queue=max_queue, max_batch_size=64, request_timeout_s=timeout) as (
            client,
            _,
            registry,
        ):
            worker = registry.get("digits").worker
            gate = hold(registry)
            held = asyncio.create_task(client.post(V1, json={"inputs": XS[:1].tolist()}))
            await asyncio.to_thread(gate.wait_entered)  # the worker is busy until the gate opens, whatever `held` does
            doomed = await _queue(client, worker, [1] * max_queue)
            assert_error(await client.post(V1, json={"inputs": XS[:1].tolist()}), 503)  # the queue really is full
            if how == "task cancelled":
                for t in doomed:
                    t.cancel()
                results = await asyncio.gather(*doomed, return_exceptions=True)
                assert all(isinstance(x, asyncio.CancelledError) for x in results), results
            else:
                for x in await asyncio.gather(*doomed):
                    assert_error(x, 504, "longer")
            assert worker.queue_depth() == 0, "cancelled requests kept their queue slots"
            assert gate.batches == [1], "the slots came back only because the worker moved on"

            # exactly max_queue requests can be queued again, and the next one is refused
            again = await _queue(client, worker, [22, 21, 21])
            assert_error(await client.post(V1, json={"inputs": XS[:1].tolist()}), 503)
            if how == "timed out":  # they time out while the worker is still held
                for r in await asyncio.gather(*again):
                    assert_error(r, 504, "longer")
                gate.release()
            else:
                gate.release()
                for r in await asyncio.gather(*again):
                    assert r.status_code == 200, r.text
            await held
            await until(lambda: worker.queue_depth() == 0, "the queue drained")
            assert gate.batches == [1] + ([64] if how == "task cancelled" else [])  # nothing cancelled ever ran

    asyncio.run(main())


# -- slow clients (real server) ----------------------------------------------------------------------------------
def _raw_request(port: int, path: str, body: bytes) -> tuple[socket.socket, bytes]:
    s = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return s, head


def _read_response(s: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = s.recv(65536)
        assert chunk, "connection closed mid-body"
        rest += chunk
    return status, headers, rest[:length]


def test_slow_clients_do_not_stall_others(tmp_path: Path) -> None:
    """Four clients send half their request bodies and stop; 20 other requests complete while those bodies are
    provably incomplete; then the slow clients finish and are served. A real uvicorn server on real sockets."""
    slow_n = 4
    bodies = [json.dumps({"inputs": XS[4 * k : 4 * k + 4].tolist()}).encode() for k in range(slow_n)]
    halfway = threading.Barrier(slow_n + 1)
    finish = threading.Event()
    slow_results: dict[int, tuple[int, bytes]] = {}
    errors: list[BaseException] = []

    with threaded_server(tmp_path, max_batch_size=4) as (url, _), httpx.Client(base_url=url, timeout=WAIT) as c:
        port = int(url.rsplit(":", 1)[1])

        def slow_client(k: int) -> None:
            try:
                s, head = _raw_request(port, V1, bodies[k])
                with s:
                    half = len(bodies[k]) // 2
                    s.sendall(head + bodies[k][:half])
                    halfway.wait(WAIT)
                    assert finish.wait(WAIT)
                    s.sendall(bodies[k][half:])
                    status, _, payload = _read_response(s)
                    slow_results[k] = (status, payload)
            except BaseException as e:  # noqa: BLE001 - reported by the main thread
                errors.append(e)
                halfway.abort()

        slow = [threading.Thread(target=slow_client, args=(k,)) for k in range(slow_n)]
        for t in slow:
            t.start()
        halfway.wait(WAIT)  # every slow client has sent half its body and waits
        for i in range(20):
            r = c.post(V1, json={"inputs": XS[i : i + 4].tolist()})
            assert r.status_code == 200, r.text
            np.testing.assert_allclose(np.asarray(r.json()["outputs"]), reference(XS[i : i + 4]), rtol=1e-5, atol=1e-5)
        assert not slow_results, "a slow client was answered before it finished its body"
        finish.set()
        for t in slow:
            t.join(WAIT)
        assert not errors, errors
        assert sorted(slow_results) == list(range(slow_n))
        for k, (status, payload) in slow_results.items():
            assert status == 200, payload
            out = np.asarray(json.loads(payload)["outputs"], dtype=np.float32)
            np.testing.assert_allclose(out, reference(XS[4 * k : 4 * k + 4]), rtol=1e-5, atol=1e-5)

        # a client that sends half its body and goes away harms no one
        s, head = _raw_request(port, V1, bodies[0])
        s.sendall(head + bodies[0][: len(bodies[0]) // 2])
        s.close()
        assert c.post(V1, json={"inputs": XS[:4].tolist()}).status_code == 200


def test_disconnected_clients_do_not_leak_queue_slots(tmp_path: Path) -> None:
    """Clients that go away while their requests are queued: the slots come back (at the latest when the worker
    reaches them) and exactly max_queue requests can be queued again afterwards. A real uvicorn server (real
    sockets, real disconnects) in this process, so that its worker can be held."""
    max_queue = 3
    rows = [22, 21, 21]  # 64 rows: one full batch once the holder has run
    starts = [0, 22, 43]
    with (
        threaded_server(tmp_path, max_queue=max_queue, max_batch_size=64) as (url, registry),
        httpx.Client(base_url=url, timeout=WAIT) as c,
    ):
        worker = registry.get("digits").worker
        port = int(url.rsplit(":", 1)[1])
        for round_ in ("disconnect", "again"):
            gate = hold(registry)
            held: list[httpx.Response] = []
            holder = threading.Thread(target=lambda h=held: h.append(c.post(V1, json={"inputs": XS[:1].tolist()})))
            holder.start()
            gate.wait_entered()
            socks: list[socket.socket] = []
            answers: dict[int, httpx.Response] = {}
            threads = []
            for k, (n, start) in enumerate(zip(rows, starts, strict=True)):
                payload = json.dumps(_oip(n, start)).encode()
                if round_ == "disconnect":
                    s, head = _raw_request(port, "/v2/models/digits/infer", payload)
                    s.sendall(head + payload)
                    socks.append(s)
                else:
                    t = threading.Thread(
                        target=lambda k=k, p=payload, a=answers: a.__setitem__(
                            k,
                            httpx.post(
                                f"{url}/v2/models/digits/infer",
                                content=p,
                                timeout=WAIT,
                                headers={"Content-Type": "application/json"},
                            ),
                        )
                    )
                    t.start()
                    threads.append(t)
                _until_sync(lambda k=k: worker.queue_depth() == k + 1, f"request {k + 1} is queued")  # type: ignore[misc]
            assert_error(c.post(V1, json={"inputs": XS[:1].tolist()}), 503)
            assert not held, "the holder finished early: the worker was not held"
            for s in socks:
                s.close()  # the clients go away while queued
            gate.release()
            holder.join(WAIT)
            for t in threads:
                t.join(WAIT)
            _until_sync(lambda: worker.queue_depth() == 0, "the queue drained")
            assert held and held[0].status_code == 200
            assert sorted(answers) == ([0, 1, 2] if round_ == "again" else [])
            for k, r in answers.items():
                assert r.status_code == 200, r.text
                want = reference(XS[starts[k] : starts[k] + rows[k]])
                np.testing.assert_allclose(_outputs(r), want, rtol=1e-5, atol=1e-5)
        assert c.post(V1, json={"inputs": XS[:2].tolist()}).status_code == 200

"""Row slicing through the real app and real batching (issue 11, item 4).

Requests of different sizes, each with rows no other request has, are queued behind a batch held inside the model
(a `Gate`, tests/integration/helpers.py), so that they run as one batch; each answer must be what the version it
names computes on that request's own rows (the version rebuilt from the store and run in-process), on version 1 and
on an edited version whose outputs depend on the input. A wrong slice, items answered in another order, or rows of
one version answered by another would fail here; tests/unit/serving/test_worker.py covers the worker alone.

A request the model cannot compute on (the Gate's poison row), batched with good ones, fails alone with a 400; the
good ones of the same batch are answered with their own rows.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

from morphserve.serving.registry import Registry
from tests.integration.helpers import assert_error, hold, until
from tests.integration.helpers import served_with_binary as served

#: Distinct rows, wide enough apart that any two requests' outputs differ.
XS = np.random.default_rng(11).normal(0.0, 2.0, (64, 64)).astype(np.float32)
SIZES = [3, 1, 5, 2, 4, 1, 6]  # rows per queued request: 22 in all
TANH = [
    {"op": "replace", "node": "relu1", "layer": {"type": "Tanh"}},
    {"op": "replace", "node": "relu2", "layer": {"type": "Tanh"}},
]


def _body(x: np.ndarray, route: str) -> dict[str, Any]:
    if route == "v1":
        return {"inputs": x.tolist()}
    return {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.reshape(-1).tolist()}]}


def _outputs(r: httpx.Response, route: str) -> np.ndarray:
    body = r.json()
    if route == "v1":
        return np.asarray(body["outputs"], dtype=np.float32)
    out = body["outputs"][0]
    return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])


async def _computes(registry: Registry, version: int, x: np.ndarray) -> np.ndarray:
    """What `version` of digits computes on `x`, rebuilt from the store and run in-process (not through the worker)."""
    v = await registry.version("digits", version)
    return v.run(torch.from_numpy(np.ascontiguousarray(x)))[0].numpy()


PATHS = {"v1": "/v1/models/digits/infer", "oip": "/v2/models/digits/infer"}


async def _queue_behind(
    client: httpx.AsyncClient, registry: Registry, plan: list[tuple[str, np.ndarray]]
) -> list[asyncio.Task[httpx.Response]]:
    """Send each (path, rows) of `plan` in order, each waiting in the queue before the next is sent."""
    worker = registry.get("digits").worker
    start, tasks = worker.queue_depth(), []
    for k, (path, x) in enumerate(plan, start=1):
        route = "v1" if path.startswith("/v1/") else "oip"
        tasks.append(asyncio.create_task(client.post(path, json=_body(x, route))))
        await until(lambda k=k: worker.queue_depth() == start + k, f"request {k} is queued")  # type: ignore[misc]
    return tasks


def _slices() -> list[np.ndarray]:
    out, offset = [], 1  # row 0 is the holder's
    for n in SIZES:
        out.append(XS[offset : offset + n])
        offset += n
    return out


def test_each_request_of_a_batch_gets_its_own_rows(tmp_path: Path) -> None:
    async def main() -> None:
        async with served(tmp_path, max_batch_size=64) as (client, _, registry):
            for version in (1, 2):
                if version == 2:
                    r = await client.post("/v1/models/digits/edits", json={"ops": TANH, "allow_output_change": True})
                    assert r.status_code == 200 and r.json()["version"] == 2, r.text
                gate = hold(registry)
                holder = asyncio.create_task(client.post(PATHS["v1"], json=_body(XS[:1], "v1")))
                await asyncio.to_thread(gate.wait_entered)
                xs = _slices()
                routes = ["v1" if k % 2 else "oip" for k in range(len(xs))]
                plan = [(PATHS[rt], x) for rt, x in zip(routes, xs, strict=True)]
                tasks = await _queue_behind(client, registry, plan)
                gate.release()
                answers = await asyncio.gather(holder, *tasks)
                assert gate.batches == [1, sum(SIZES)], "the queued requests did not run as one batch"
                for r, x, route in zip(answers, [XS[:1], *xs], ["v1", *routes], strict=True):
                    assert r.status_code == 200 and int(r.json()["model_version"]) == version, r.text
                    want = await _computes(registry, version, x)
                    np.testing.assert_allclose(
                        _outputs(r, route),
                        want,
                        rtol=1e-5,
                        atol=1e-5,
                        err_msg=f"a request of {len(x)} rows got rows not its own",
                    )
            # the edit changed what the model computes on these rows: an answer from the wrong version would show
            assert not np.allclose(await _computes(registry, 1, XS), await _computes(registry, 2, XS), atol=1e-3)

    asyncio.run(main())


def test_queued_requests_for_two_versions_each_get_their_versions_rows(tmp_path: Path) -> None:
    """Requests for the current version (v2) and for version 1 by name, interleaved in one queue: each is answered by
    the version it asked for, on its own rows."""

    async def main() -> None:
        async with served(tmp_path, max_batch_size=64) as (client, _, registry):
            r = await client.post("/v1/models/digits/edits", json={"ops": TANH, "allow_output_change": True})
            assert r.status_code == 200, r.text
            gate = hold(registry)  # v2 goes through the gate; the worker is held, so v1 requests queue too
            holder = asyncio.create_task(client.post(PATHS["v1"], json=_body(XS[:1], "v1")))
            await asyncio.to_thread(gate.wait_entered)
            xs = _slices()
            versions = [2 if k % 2 else 1 for k in range(len(xs))]
            paths = [PATHS["oip"] if v == 2 else "/v2/models/digits/versions/1/infer" for v in versions]
            tasks = await _queue_behind(client, registry, list(zip(paths, xs, strict=True)))
            gate.release()
            await holder
            for r, x, v in zip(await asyncio.gather(*tasks), xs, versions, strict=True):
                assert r.status_code == 200 and int(r.json()["model_version"]) == v, r.text
                np.testing.assert_allclose(_outputs(r, "oip"), await _computes(registry, v, x), rtol=1e-5, atol=1e-5)
            assert sum(gate.batches[1:]) == sum(n for n, v in zip(SIZES, versions, strict=True) if v == 2)

    asyncio.run(main())


def test_a_bad_request_batched_with_good_ones_fails_alone(tmp_path: Path) -> None:
    """The model cannot compute on one request of a batch (a poison row): that request gets a 400 naming why, each
    good request of the same batch its own rows, and the worker serves on."""

    async def main() -> None:
        async with served(tmp_path, max_batch_size=64) as (client, _, registry):
            gate = hold(registry, poison=13.0)
            holder = asyncio.create_task(client.post(PATHS["v1"], json=_body(XS[:1], "v1")))
            await asyncio.to_thread(gate.wait_entered)
            bad = XS[10:12].copy()
            bad[1, 0] = 13.0
            plan = [(PATHS["v1"], XS[1:3]), (PATHS["oip"], bad), (PATHS["v1"], XS[3:6]), (PATHS["oip"], XS[6:7])]
            tasks = await _queue_behind(client, registry, plan)
            gate.release()
            await holder
            answers = await asyncio.gather(*tasks)
            assert_error(answers[1], 400, "cannot compute", "13.0")
            for k in (0, 2, 3):
                route = "v1" if plan[k][0] == PATHS["v1"] else "oip"
                assert answers[k].status_code == 200, answers[k].text
                want = await _computes(registry, 1, plan[k][1])
                np.testing.assert_allclose(_outputs(answers[k], route), want, rtol=1e-5, atol=1e-5)
            # the batch of four ran (and failed) once, then each request alone
            assert gate.batches == [1, 8, 2, 2, 3, 1]
            r = await client.post(PATHS["v1"], json=_body(XS[20:24], "v1"))
            assert r.status_code == 200
            np.testing.assert_allclose(_outputs(r, "v1"), await _computes(registry, 1, XS[20:24]), rtol=1e-5, atol=1e-5)

    asyncio.run(main())

"""Delete against edits and queued requests (issue 11, item 3): delete and edit serialise per model.

An edit that was waiting for the model while it was deleted must not journal a row for it (the model would come
back after a restart, and its name would be taken); queued requests get 503, the batch in flight finishes, and the
name is free at once. Everything is held on events, nothing on sleeps.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from morphserve.serving.metrics import Metrics
from morphserve.serving.registry import Registry
from morphserve.settings import Settings
from tests.integration.helpers import X, head_ops, served
from tests.locks import WatchedLock

WAIT = 30.0


async def _until(predicate: Any, what: str) -> None:
    for _ in range(3000):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting until {what}")


def test_delete_waits_for_edits_and_nothing_comes_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    edit_gate, batch_gate = threading.Event(), threading.Event()
    in_warm_up, in_batch = threading.Event(), threading.Event()

    async def main() -> None:
        async with served(tmp_path) as (client, registry):
            worker = registry.get("digits").worker
            # Swapped in before any edit starts (a follower pass still on the old lock has nothing to apply). The
            # follower takes the lock on each pass too, so the test waits for the second edit's own thread on it.
            edit_lock = WatchedLock()
            monkeypatch.setattr(registry.get("digits"), "edit_lock", edit_lock)
            editors: list[threading.Thread] = []  # the threads that ran an edit, in order
            real_edit = registry.pipeline.edit

            def tracked_edit(*args: Any, **kwargs: Any) -> Any:
                editors.append(threading.current_thread())
                return real_edit(*args, **kwargs)

            monkeypatch.setattr(registry.pipeline, "edit", tracked_edit)
            v1 = registry.get("digits").current()
            model = v1.graph_module

            def held_model(*inputs: Any) -> Any:
                in_batch.set()
                assert batch_gate.wait(WAIT)
                return model(*inputs)

            worker.swap(v1, held_model).result(WAIT)  # version 1 now runs through the gate
            infer = {"inputs": X[:1].tolist()}
            in_flight = asyncio.create_task(client.post("/v1/models/digits/infer", json=infer))
            await _until(in_batch.is_set, "a batch is in flight")
            queued = [asyncio.create_task(client.post("/v1/models/digits/infer", json=infer)) for _ in range(3)]
            await _until(lambda: worker.queue_depth() == 3, "three requests are queued")

            residency = registry.get("digits").residency
            real_prepare = residency.prepare

            def held_prepare(version: Any) -> Any:  # placing and warming up the edit's candidate
                in_warm_up.set()
                assert edit_gate.wait(WAIT)
                return real_prepare(version)

            monkeypatch.setattr(residency, "prepare", held_prepare)
            first_edit = asyncio.create_task(client.post("/v1/models/digits/edits", json={"ops": head_ops(1.0)}))
            await _until(in_warm_up.is_set, "an edit holds the model")
            second_edit = asyncio.create_task(client.post("/v1/models/digits/edits", json={"ops": head_ops(2.0)}))
            await _until(
                lambda: len(editors) == 2 and editors[1] in edit_lock.waiting(),
                "the second edit waits for the model's edit lock",
            )
            deleted = asyncio.create_task(client.delete("/v1/models/digits"))

            for q in queued:  # what was queued fails at once, although a batch and an edit are still held
                assert (await asyncio.wait_for(q, WAIT)).status_code == 503
            assert (await client.get("/v1/models/digits")).status_code == 404
            batch_gate.set()
            assert (await asyncio.wait_for(in_flight, WAIT)).status_code == 200  # the batch in flight finished
            assert not deleted.done()  # the journal rows go only after the edit in progress
            edit_gate.set()
            assert (await asyncio.wait_for(deleted, WAIT)).status_code == 200
            assert (await asyncio.wait_for(first_edit, WAIT)).status_code == 503  # journalled, then deleted
            assert (await asyncio.wait_for(second_edit, WAIT)).status_code == 404  # never journalled
            assert registry.store.models() == []
            r = await client.post("/v1/models", json={"name": "digits", "zoo": "digits"})
            assert r.status_code == 201, r.text  # the name is free at once
            assert (await client.get("/v1/models/digits")).json()["version"] == 1

    asyncio.run(main())
    # After a restart, only the new model is there, at version 1: no row of the deleted one came back.
    reg = Registry(Settings(models=[], state_dir=tmp_path / "state"), Metrics())
    try:
        assert reg.store.models() == ["digits"] and reg.store.version_numbers("digits") == [1]
    finally:
        reg.close()

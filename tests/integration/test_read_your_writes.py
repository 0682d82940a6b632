"""`?min_version=` waits for the version the worker runs, not the one the history knows: a version is published to
the history before it is swapped in, and a request let through in between would run the version before it (an
outside run of test_workers_share_one_port_with_sqlite caught version 2 answering a min_version=3 read)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from tests.conftest import AUTH
from tests.integration.helpers import X, identity_insert
from tests.integration.helpers import served_with_binary as served


def test_a_version_published_but_not_swapped_in_is_not_reached(tmp_path: Path) -> None:
    async def main() -> None:
        async with served(tmp_path, min_version_wait_ms=50.0) as (client, _binary, registry):
            model = registry.get("digits")
            in_swap, release = threading.Event(), threading.Event()
            swap = model.worker.swap

            def held_swap(*args: Any, **kwargs: Any) -> Any:
                in_swap.set()
                release.wait(10)
                return swap(*args, **kwargs)

            model.worker.swap = held_swap  # type: ignore[method-assign]
            edit = asyncio.create_task(
                client.post("/v1/models/digits/edits", json={"ops": [identity_insert(name="ident")]}, headers=AUTH)
            )
            assert await asyncio.to_thread(in_swap.wait, 10)
            assert model.residency.latest == 2 and model.serving_version() == 1  # published, not swapped in
            assert not await model.reached(2, 0.02)
            body = {"inputs": X.tolist()}
            behind = await client.post("/v1/models/digits/infer", params={"min_version": 2}, json=body)
            assert behind.status_code == 503 and behind.json()["version"] == 1, behind.text
            assert registry.replication.applied()["digits"] == 1  # what this replica reports to ?wait= as live
            release.set()
            assert (await edit).status_code == 200
            assert model.serving_version() == 2 and await model.reached(2, 0.0)
            r = await client.post("/v1/models/digits/infer", params={"min_version": 2}, json=body)
            assert r.status_code == 200 and r.json()["model_version"] == 2, r.text

    asyncio.run(main())

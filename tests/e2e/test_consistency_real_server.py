"""The consistency race of tests/integration/test_consistency.py (issue 7, item 2) against a real `morphserve serve`
subprocess over real sockets: the same clients, edits and checks as in-process, through uvicorn and the OS."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from morphserve.client import AsyncClient
from tests.conftest import AUTH, TOKEN, ServerProcess
from tests.integration.test_consistency import CLIENTS, Race, check_race, run_race


def test_consistency_real_server(start_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    server = start_server(
        "--model",
        "digits",
        "--admin-token",
        TOKEN,
        "--state-dir",
        str(tmp_path / "state"),
        "--max-batch-delay-ms",
        "2",
        "--resident-versions",
        "4",
    )

    async def main() -> Race:
        limits = httpx.Limits(max_connections=CLIENTS + 2)
        async with (
            httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=60, limits=limits) as http,
            AsyncClient(server.url, token=TOKEN, timeout=60) as binary,
        ):
            return await run_race(http, binary)

    t0 = time.monotonic()
    race = asyncio.run(main())
    assert server.proc.poll() is None, server.logs()
    check_race(race, "real server", time.monotonic() - t0)

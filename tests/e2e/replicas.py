"""N real `morphserve serve` replicas on one journal, for the replica tests (tests/e2e/test_replicas.py,
test_rollout_replicas.py); the `replicas` fixture is in tests/e2e/conftest.py."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import TOKEN, ServerProcess


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")


class Replicas:
    """N replica processes on one journal, each with its own state dir (its blob cache) and port."""

    def __init__(self, tmp: Path, journal: str, n: int = 3, *extra: str) -> None:
        self.tmp, self.journal, self.extra = tmp, journal, extra
        self.servers: list[ServerProcess] = []
        self.starts = 0
        procs = [self._spawn(i) for i in range(n)]  # started together: they race to create digits
        try:
            self.servers = [p.wait_ready(120) for p in procs]
        except BaseException:
            for p in procs:
                p.stop()
            raise

    def _spawn(self, i: int, port: int | None = None) -> ServerProcess:
        self.starts += 1
        return ServerProcess(
            [
                "--journal",
                self.journal,
                "--state-dir",
                str(self.tmp / f"state-{i}"),
                "--admin-token",
                TOKEN,
                "--model",
                "digits",
                "--min-version-wait-ms",
                "3000",
                *self.extra,
            ],
            log=self.tmp / f"replica-{i}-{self.starts}.log",
            port=port,
        )

    def restart(self, i: int) -> None:
        self.servers[i] = self._spawn(i, self.servers[i].port).wait_ready(120)

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def versions(self, model: str = "digits") -> list[int | None]:
        out: list[int | None] = []
        for url in self.urls:
            r = httpx.get(f"{url}/v1/models/{model}", timeout=10)
            out.append(r.json()["version"] if r.status_code == 200 else None)
        return out

    def converge(self, version: int, timeout: float = 10.0) -> None:
        wait_until(lambda: self.versions() == [version] * len(self.servers), timeout, f"every replica at v{version}")

    def stop(self) -> None:
        for s in self.servers:
            s.stop()

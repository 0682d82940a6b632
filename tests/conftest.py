"""Shared fixtures: in-process apps (TestClient over the real ASGI app) and real server subprocesses."""

from __future__ import annotations

import collections
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

import httpx
import pytest
from fastapi.testclient import TestClient

from morphserve.main import create_app
from morphserve.settings import Settings
from tests.forkserver import ForkedProcess, close_fork_server, forks_for, prestart_fork_server
from tests.pg import PgCluster

if TYPE_CHECKING:
    from tests.e2e.mounts import PrivateTmpfs

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: The seed of the schemathesis fuzz (tests/integration/test_fuzz.py): fresh on every run, so that CI explores new
#: cases each time; `MORPHSERVE_FUZZ_SEED=<n>` replays a run. Printed in the header of every pytest run, and after a
#: run of the fuzz in its summary (which `-q` keeps).
FUZZ_SEED = int(os.environ.get("MORPHSERVE_FUZZ_SEED") or secrets.randbelow(2**32))


def _seed_line() -> str:
    return f"morphserve fuzz seed: {FUZZ_SEED} (replay a failure with MORPHSERVE_FUZZ_SEED={FUZZ_SEED})"


def pytest_report_header(config: pytest.Config) -> str:
    return _seed_line()


#: Seconds per test file (setup, call and teardown of its tests, module fixtures included), for the summary.
_FILE_SECONDS: collections.Counter[str] = collections.Counter()
SLOWEST_FILES = 12


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _FILE_SECONDS[report.nodeid.split("::", 1)[0]] += report.duration


def pytest_configure(config: pytest.Config) -> None:
    prestart_fork_server()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    close_fork_server()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    """The slowest test files (a file's time is what a developer waits for when running it alone, and the suite's
    budget is kept per file), then the seed again at the end, where `-q` (which hides the header) still shows it,
    when the fuzz ran."""
    if _FILE_SECONDS:
        terminalreporter.write_sep("=", f"slowest {min(SLOWEST_FILES, len(_FILE_SECONDS))} test files")
        for path, seconds in _FILE_SECONDS.most_common(SLOWEST_FILES):
            terminalreporter.write_line(f"{seconds:8.1f}s  {path}")
    reports = (r for key, rs in terminalreporter.stats.items() if key != "deselected" for r in rs)
    if any("test_fuzz.py" in getattr(r, "nodeid", "") for r in reports):
        terminalreporter.write_line(_seed_line())


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    """Factory: `make_client(models=["digits"], max_queue=4, ...)` -> a started TestClient (admin token set)."""
    clients: list[TestClient] = []

    def factory(**overrides: object) -> TestClient:
        values: dict[str, object] = {"models": ["digits"], "admin_token": TOKEN, "state_dir": tmp_path / "state"}
        values.update(overrides)
        # A loopback Host, as a local client sends: a tokenless server accepts changes only for one (origins.py).
        client = TestClient(create_app(Settings(**values)), base_url="http://127.0.0.1:8000")  # type: ignore[arg-type]
        client.__enter__()
        clients.append(client)
        return client

    yield factory
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    """An app serving `digits` with admin token TOKEN."""
    return make_client()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """A real `morphserve serve` subprocess on a free loopback port."""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str] | None = None,
        log: Path | None = None,
        prefix: list[str] | None = None,
        port: int | None = None,
        mounts: PrivateTmpfs | None = None,
    ) -> None:
        """`prefix`: a command that runs the server. `mounts`: run it in that tmpfs's mount namespace (forked and
        entered with setns where we can, else under its `nsenter` prefix)."""
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        argv = ["serve", "--port", str(self.port), *args]
        namespace = mounts.namespace if mounts is not None else None
        if mounts is not None and namespace is None:  # nsenter starts the server in "/": name the tree under test
            prefix = [*mounts.prefix, *(prefix or [])]
            env = {"PYTHONPATH": str(ROOT), **(env or {})}
        full_env = {**os.environ, **(env or {})}
        forks = None if prefix else forks_for(full_env)
        self._log: IO[bytes] | int = subprocess.DEVNULL
        self.proc: subprocess.Popen[bytes] | ForkedProcess
        if forks is not None:  # the same `morphserve serve`, forked from a process that has imported torch already
            self.proc = forks.spawn(argv, full_env, ROOT, log, mount_ns=namespace)
            return
        self._log = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*(prefix or []), sys.executable, "-m", "morphserve", *argv],
            cwd=ROOT,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 60.0) -> ServerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.logs()}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server not ready after {timeout}s: {self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not isinstance(self._log, int):
            self._log.close()


def serve_module(tmp_path_factory: pytest.TempPathFactory, *args: str) -> Iterator[ServerProcess]:
    """Body of a module-scoped server fixture: `yield from serve_module(tmp_path_factory, "--model", "digits")`.
    The server gets the admin token TOKEN and a private state dir."""
    s = ServerProcess(
        [*args, "--admin-token", TOKEN, "--state-dir", str(tmp_path_factory.mktemp("state"))],
        log=tmp_path_factory.mktemp("log") / "server.log",
    )
    try:
        yield s.wait_ready()
    finally:
        s.stop()


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Factory: `start_server("--model", "mlp", "--admin-token", TOKEN)` -> a ready ServerProcess."""
    servers: list[ServerProcess] = []

    def factory(*args: str, env: dict[str, str] | None = None, ready: bool = True) -> ServerProcess:
        if "--state-dir" not in args:  # never the repository's own ./.morphserve
            args = (*args, "--state-dir", str(tmp_path / f"state-{len(servers)}"))
        s = ServerProcess(list(args), env, tmp_path / f"server-{len(servers)}.log")
        servers.append(s)
        return s.wait_ready() if ready else s

    yield factory
    for s in servers:
        s.stop()


# -- PostgreSQL (tests/pg.py) ----------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One throwaway PostgreSQL cluster for the whole session, started by the first test that asks for it."""
    cluster = PgCluster()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> Iterator[str]:
    """The URL of a new, empty database of its own (dropped afterwards); the cluster is running again after the
    test even if the test stopped it."""
    name = pg_cluster.create_database()
    yield pg_cluster.url(name)
    if not pg_cluster.running():
        pg_cluster.start()
    pg_cluster.drop_database(name)

"""The replicas stack of docker-compose.replicas.yml in a real engine: postgres, 2 replicas, nginx in front.

Run by `scripts/docker-test.sh --replicas` (markers `docker` and `replicas`), with the CPU image and the stand-in
postgres and nginx images already built. The stack is published on 127.0.0.1 at a free port, under a project name
of its own, and `down -v` removes its containers and volumes at the end of the module.

- test_balancer_spreads_over_the_replicas_and_postgres_keeps_its_data: the parts of this repository (the images,
  nginx.conf, the compose file); passes with today's server.
- test_edit_through_the_balancer_reaches_both_replicas_and_survives_a_postgres_restart: the PostgreSQL journal
  (`--journal`/MORPHSERVE_JOURNAL) and GET /v1/replicas of issue 13 (tests/e2e/test_replicas.py tests the same on the
  host with a real PostgreSQL).
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import AUTH, TOKEN, free_port
from tests.docker.engine import IMAGE, Compose, docker, inspect
from tests.integration.helpers import X, head_ops

pytestmark = [pytest.mark.docker, pytest.mark.replicas]

COMPOSE_FILE = "docker-compose.replicas.yml"
REPLICAS = 2


@dataclass
class Stack:
    compose: Compose
    url: str
    password: str

    def psql(self, sql: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
        """SQL over TCP with the password, from the postgres container (as a client on the network would)."""
        pw = self.password if password is None else password
        dsn = f"postgresql://morphserve:{pw}@127.0.0.1:5432/morphserve"
        postgres = self.compose.containers("postgres")[0]
        return docker("exec", postgres, "psql", dsn, "-tAc", sql, check=False)

    def replicas(self) -> list[str]:
        return self.compose.containers("replica")

    def replica_get(self, name: str, path: str) -> Any:
        """GET one replica directly, from inside its container (replicas publish no port)."""
        url = f"http://127.0.0.1:8000{path}"
        code = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=10).read().decode())"
        return json.loads(docker("exec", name, "python", "-c", code).stdout)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    port, password = free_port(), secrets.token_hex(16)
    env = {
        "MORPHSERVE_ADMIN_TOKEN": TOKEN,
        "POSTGRES_PASSWORD": password,
        "MORPHSERVE_IMAGE": IMAGE,
        "MORPHSERVE_BIND": "127.0.0.1",
        "MORPHSERVE_PORT_HOST": str(port),
        "MORPHSERVE_REPLICAS": str(REPLICAS),
    }
    compose = Compose(COMPOSE_FILE, env)
    try:
        compose("up", "-d", "--no-build", "--scale", f"replica={REPLICAS}", timeout=600)
        compose.wait_healthy("postgres", 1)
        compose.wait_healthy("replica", REPLICAS)
        s = Stack(compose, f"http://127.0.0.1:{port}", password)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{s.url}/v2/health/ready", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        yield s
    finally:
        compose.down()


def restart_postgres(stack: Stack) -> None:
    stack.compose("restart", "-t", "10", "postgres")
    stack.compose.wait_healthy("postgres", 1)


def test_balancer_spreads_over_the_replicas_and_postgres_keeps_its_data(stack: Stack) -> None:
    # Every replica answers through the balancer: the upstream addresses nginx logged are those of the replicas.
    for _ in range(60):
        assert httpx.get(f"{stack.url}/v2/health/ready", timeout=10).status_code == 200
    replica_ips = {
        ip["IPAddress"]
        for name in stack.replicas()
        for ip in inspect("container", name)["NetworkSettings"]["Networks"].values()
    }
    balancer = stack.compose.containers("balancer")[0]
    logged = docker("logs", balancer).stdout
    upstreams = set(re.findall(r"upstream=([\d.]+):8000", logged))
    assert len(replica_ips) == REPLICAS and upstreams == replica_ips, (upstreams, replica_ips)
    assert docker("exec", balancer, "nginx", "-t", check=False).returncode == 0

    # The balancer's own errors have the server's shape; bodies up to the server's limit pass.
    too_big = httpx.post(
        f"{stack.url}/v1/models/digits/infer",
        content=b" " * (64 * 2**20 + 1024),
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert too_big.status_code == 413 and "error" in too_big.json(), too_big.text[:300]
    ok = httpx.post(f"{stack.url}/v1/models/digits/infer", json={"inputs": X.tolist()}, timeout=30)
    assert ok.status_code == 200 and len(ok.json()["outputs"]) == len(X), ok.text[:300]

    # PostgreSQL: password auth over TCP (a wrong password is refused), and data that outlives a restart without a
    # second initdb.
    assert stack.psql("select 1", password="wrong").returncode != 0
    r = stack.psql("create table durable(x int); insert into durable values (42)")
    assert r.returncode == 0, r.stderr
    restart_postgres(stack)
    r = stack.psql("select x from durable")
    assert r.returncode == 0 and r.stdout.strip() == "42", (r.stdout, r.stderr)
    postgres_logs = stack.compose("logs", "postgres").stdout
    assert postgres_logs.count("postgres: initialised") == 1, postgres_logs[-3000:]


def replica_versions(stack: Stack) -> dict[str, int]:
    """digits' current version on each replica, asked of each replica directly."""
    return {name: stack.replica_get(name, "/v1/models/digits")["version"] for name in stack.replicas()}


def listed_versions(stack: Stack) -> list[int]:
    """digits' applied version per alive replica, as GET /v1/replicas lists them through the balancer:
    {"replicas": [{"id": ..., "alive": true, "versions": {"digits": N}, ...}, ...]}."""
    r = httpx.get(f"{stack.url}/v1/replicas", timeout=10)
    assert r.status_code == 200, f"GET /v1/replicas: {r.status_code} {r.text[:300]}"
    return sorted(entry["versions"]["digits"] for entry in r.json()["replicas"] if entry["alive"])


def wait_for_version(stack: Stack, version: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    seen: tuple[dict[str, int], list[int]] = ({}, [])
    while time.monotonic() < deadline:
        seen = (replica_versions(stack), listed_versions(stack))
        if set(seen[0].values()) == {version} and seen[1] == [version] * REPLICAS:
            return
        time.sleep(0.25)
    raise AssertionError(f"version {version} not on every replica after {timeout} s: {seen}")


def test_edit_through_the_balancer_reaches_both_replicas_and_survives_a_postgres_restart(stack: Stack) -> None:
    """Issue 13's journal: every replica follows MORPHSERVE_JOURNAL and lists itself in /v1/replicas."""
    before = httpx.get(f"{stack.url}/v1/models/digits", timeout=10).json()["version"]
    r = httpx.post(f"{stack.url}/v1/models/digits/edits", json={"ops": head_ops(2.5)}, headers=AUTH, timeout=60)
    assert r.status_code == 200, r.text
    edited = r.json()["version"]
    assert edited == before + 1
    wait_for_version(stack, edited)

    restart_postgres(stack)
    # Nothing acknowledged is lost, and the replicas are back on the journal: a new edit reaches both as well.
    history = httpx.get(f"{stack.url}/v1/models/digits/versions", timeout=10).json()
    assert edited in [v["version"] for v in history["versions"]], history
    r = httpx.post(f"{stack.url}/v1/models/digits/edits", json={"ops": head_ops(4.0)}, headers=AUTH, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["version"] == edited + 1
    wait_for_version(stack, edited + 1)
    for name in stack.replicas():
        out = stack.replica_get(name, "/v1/models/digits/versions")
        assert [v["version"] for v in out["versions"]][-2:] == [edited, edited + 1], (name, out)

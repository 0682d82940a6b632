"""The docker CLI for the tests: containers published on a free 127.0.0.1 port, health polling, and cleanup.

Everything goes through the real `docker` client against the real engine; nothing is mocked. Each `Engine` names
its containers and volumes with one random prefix and removes all of them (anonymous volumes too) in `cleanup`.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.conftest import TOKEN, free_port

IMAGE = os.environ.get("MORPHSERVE_TEST_IMAGE", "morphserve:cpu")
STATE_DIR = "/var/lib/morphserve"
# Only the interval is overridden at `docker run` (the image's 15 s would make each start take 15 s or more); the
# probe stays the image's own HEALTHCHECK command, which test_image checks.
HEALTH_INTERVAL = "1s"


def docker(*args: str, timeout: float = 180, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"`docker {' '.join(args)}` failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    return r


def inspect(kind: str, name: str) -> dict[str, Any]:
    """`docker <kind> inspect` of one object (kind: container, image, volume) as a dict."""
    return json.loads(docker(kind, "inspect", "--format", "{{json .}}", name).stdout)


@dataclass
class Container:
    name: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def state(self) -> dict[str, Any]:
        return inspect("container", self.name)["State"]

    def logs(self) -> str:
        r = docker("logs", "--tail", "80", self.name, check=False)
        return (r.stdout + r.stderr)[-6000:]

    def exec(self, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return docker("exec", self.name, *cmd, timeout=timeout)

    def wait_healthy(self, timeout: float = 180) -> dict[str, Any]:
        """Poll the engine's health status (set by the image's HEALTHCHECK) until `healthy`; the state then."""
        deadline = time.monotonic() + timeout
        state = self.state()
        while time.monotonic() < deadline:
            state = self.state()
            if state["Status"] in ("exited", "dead"):
                raise AssertionError(f"{self.name} exited ({state.get('ExitCode')}):\n{self.logs()}")
            if state.get("Health", {}).get("Status") == "healthy":
                return state
            time.sleep(0.5)
        raise AssertionError(f"{self.name} not healthy after {timeout} s: {state.get('Health')}\n{self.logs()}")

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


@dataclass
class Engine:
    prefix: str = field(default_factory=lambda: f"morphserve-test-{uuid.uuid4().hex[:8]}")
    containers: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)

    def volume(self) -> str:
        name = f"{self.prefix}-state-{len(self.volumes)}"
        docker("volume", "create", name)
        self.volumes.append(name)
        return name

    def run(
        self, *args: str, volume: str | None = None, token: str | None = TOKEN, env: dict[str, str] | None = None
    ) -> Container:
        """`docker run -d IMAGE *args` (args go to `morphserve serve`), published on 127.0.0.1:<free port>."""
        name = f"{self.prefix}-{len(self.containers)}"
        port = free_port()
        cmd = ["run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8000", "--health-interval", HEALTH_INTERVAL]
        if token is not None:
            cmd += ["-e", f"MORPHSERVE_ADMIN_TOKEN={token}"]
        for k, v in (env or {}).items():
            cmd += ["-e", f"{k}={v}"]
        if volume is not None:
            cmd += ["-v", f"{volume}:{STATE_DIR}"]
        self.containers.append(name)
        docker(*cmd, IMAGE, *args)
        return Container(name, port)

    def cleanup(self) -> None:
        if self.containers:
            docker("rm", "-f", "-v", *self.containers, check=False)
        if self.volumes:
            docker("volume", "rm", "-f", *self.volumes, check=False)


def compose_command() -> list[str]:
    """The `docker compose` plugin where there is one, else Debian's docker-compose (v1)."""
    if docker("compose", "version", check=False, timeout=30).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"]


@dataclass
class Compose:
    """One compose project (a random name), driven through the real Compose CLI."""

    file: str
    env: dict[str, str]
    project: str = field(default_factory=lambda: f"morphserve-test-{uuid.uuid4().hex[:8]}")

    def __call__(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [*compose_command(), "-f", self.file, "-p", self.project, *args]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **self.env})
        if check and r.returncode != 0:
            raise AssertionError(f"`{' '.join(cmd)}` failed ({r.returncode}):\n{r.stdout[-2000:]}{r.stderr[-3000:]}")
        return r

    def containers(self, service: str) -> list[str]:
        """Names of the service's containers (running or not)."""
        ids = self("ps", "-q", service).stdout.split()
        return sorted(inspect("container", i)["Name"].lstrip("/") for i in ids)

    def wait_healthy(self, service: str, count: int, timeout: float = 240) -> list[str]:
        deadline = time.monotonic() + timeout
        names: list[str] = []
        while time.monotonic() < deadline:
            names = self.containers(service)
            states = [inspect("container", n)["State"] for n in names]
            if len(names) == count and all(s.get("Health", {}).get("Status") == "healthy" for s in states):
                return names
            for n, s in zip(names, states, strict=True):
                if s["Status"] in ("exited", "dead"):
                    raise AssertionError(f"{n} exited ({s.get('ExitCode')}):\n{Container(n, 0).logs()}")
            time.sleep(1)
        logs = self("logs", "--tail", "40", service, check=False)
        raise AssertionError(f"{service}: not {count} healthy in {timeout} s: {names}\n{logs.stdout[-4000:]}")

    def down(self) -> None:
        self("down", "-v", "--remove-orphans", "-t", "10", check=False)

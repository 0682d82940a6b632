"""Storage faults on a real server (issue 11, item 2): a full disk and a read-only state dir, on a tmpfs of its own.

A full disk answers 507 naming the state dir and the bytes needed, and changes nothing: no ghost version, no
`.tmp-*` left behind, the same version number once space is back, and the server recovers by itself. A read-only
state dir answers 503 for edits while inference goes on. Through all of it the last acknowledged version survives a
SIGKILL and restart.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import AUTH, TOKEN, ServerProcess
from tests.e2e.mounts import PrivateTmpfs
from tests.integration.helpers import assert_error

X = [[0.5] * 784]


@pytest.fixture
def tmpfs() -> Iterator[PrivateTmpfs]:
    fs = PrivateTmpfs("8m")
    yield fs
    fs.close()


def _serve(fs: PrivateTmpfs, log: Path, port: int | None = None) -> ServerProcess:
    return ServerProcess(
        ["--model", "mlp", "--state-dir", str(fs.dir / "state"), "--admin-token", TOKEN], log=log, mounts=fs, port=port
    ).wait_ready()


def _replace_fc2(url: str, seed: int) -> httpx.Response:
    """A fresh 512x512 fc2: one new blob of 1 MiB per edit."""
    return httpx.put(
        f"{url}/v1/models/mlp/layers/fc2",
        headers=AUTH,
        timeout=60,
        json={"layer": {"type": "Linear", "in_features": 512, "out_features": 512}, "seed": seed},
    )


def _infer(url: str) -> tuple[int, list[float]]:
    body = httpx.post(f"{url}/v1/models/mlp/infer", json={"inputs": X}, timeout=30).json()
    return body["model_version"], body["outputs"][0]


def _temporaries(fs: PrivateTmpfs) -> list[Path]:
    return list(fs.path("state", "blobs").glob("*/.tmp-*"))


def test_a_full_disk_is_507_changes_nothing_and_recovers(tmpfs: PrivateTmpfs, tmp_path: Path) -> None:
    server = _serve(tmpfs, tmp_path / "server.log")
    try:
        ballast = tmpfs.path("ballast")
        ballast.write_bytes(b"\0" * (2 << 20))  # freed later to let the server recover
        acked = 1
        for seed in range(1, 20):
            r = _replace_fc2(server.url, seed)
            if r.status_code != 200:
                break
            acked = r.json()["version"]
        body = assert_error(r, 507, str(tmpfs.dir / "state"), "bytes")
        assert body["needed_bytes"] >= 512 * 512 * 4
        assert acked >= 2, "the disk filled before any edit: the test's sizes are off"
        served = _infer(server.url)
        assert served[0] == acked  # no ghost version: the last acknowledged one serves
        assert httpx.get(f"{server.url}/v1/models/mlp").json()["version"] == acked
        assert _temporaries(tmpfs) == []
        assert_error(_replace_fc2(server.url, 99), 507)  # still full: still nothing changes
        assert httpx.get(f"{server.url}/v1/models/mlp/versions").json()["current"] == acked

        ballast.unlink()  # an operator frees space: no restart needed
        r = _replace_fc2(server.url, 100)
        assert r.status_code == 200, r.text
        assert r.json()["version"] == acked + 1  # the same number the failed edits would have taken
        acked, served = acked + 1, _infer(server.url)

        server.proc.kill()  # SIGKILL: the acknowledged version must be there after a restart
        server.proc.wait()
        server.stop()
        server = _serve(tmpfs, tmp_path / "server.log", port=server.port)
        assert _infer(server.url) == served
        assert [v["version"] for v in httpx.get(f"{server.url}/v1/models/mlp/versions").json()["versions"]][-1] == acked
    finally:
        server.stop()


def test_a_read_only_state_dir_refuses_edits_and_still_serves(tmpfs: PrivateTmpfs, tmp_path: Path) -> None:
    server = _serve(tmpfs, tmp_path / "server.log")
    try:
        assert _replace_fc2(server.url, 1).status_code == 200
        served = _infer(server.url)
        tmpfs.freeze("state", "blobs")
        for _ in range(2):
            r = _replace_fc2(server.url, 2)
            body = assert_error(r, 503, "cannot be written")
            assert "Retry-After" not in r.headers and "internal" not in body["error"]
            assert _infer(server.url) == served
        assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200  # it still serves what it was asked
        tmpfs.thaw("state", "blobs")
        r = _replace_fc2(server.url, 3)
        assert r.status_code == 200 and r.json()["version"] == 3, r.text
    finally:
        server.stop()


def test_a_server_started_on_a_read_only_state_dir_serves_and_refuses_edits(
    tmpfs: PrivateTmpfs, tmp_path: Path
) -> None:
    tmpfs.path("state").mkdir()
    tmpfs.remount(read_only=True)
    server = _serve(tmpfs, tmp_path / "server.log")
    try:
        assert _infer(server.url)[0] == 1
        assert_error(_replace_fc2(server.url, 1), 503, str(tmpfs.dir / "state"))
    finally:
        server.stop()

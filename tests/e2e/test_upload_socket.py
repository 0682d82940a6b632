"""Uploads over a real socket (issue 12): a taken name is 409 and an oversize declared body 413 before the body is
read, a client that disconnects mid-upload leaves nothing, and a full disk during an upload is 507 and leaves
nothing (a real tmpfs of its own)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from morphserve.client import Client, MorphserveError
from morphserve.graph import load_zoo
from morphserve.graph.bundle import bundle_bytes
from tests.conftest import AUTH, TOKEN, ServerProcess
from tests.e2e.mounts import PrivateTmpfs
from tests.e2e.restartable import Restartable


def _raw(port: int, head: bytes, body: bytes = b"", *, close_after: bool = False, timeout: float = 30) -> bytes:
    """Send a request head (and part of a body) on a raw socket; the answer, or b"" when closing early."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head + body)
        if close_after:
            return b""
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def _head(name: str, length: int) -> bytes:
    return (
        f"POST /v1/models?name={name} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {AUTH['Authorization']}\r\n"
        f"Content-Type: application/zip\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Restartable]:
    server = Restartable(tmp_path_factory.mktemp("upload-socket"), "--model", "digits", "--max-upload-mb", "8")
    try:
        yield server
    finally:
        server.server.stop()


def test_a_taken_name_is_409_before_the_body_is_read(small_server: Restartable) -> None:
    # 8 MB declared, not a byte sent: the answer comes at once
    t0 = time.monotonic()
    answer = _raw(small_server.port, _head("digits", 8 * 1024 * 1024), timeout=10)
    assert answer.startswith(b"HTTP/1.1 409") and b"already exists" in answer, answer[:300]
    assert time.monotonic() - t0 < 5


def test_a_declared_size_over_the_upload_limit_is_413_before_the_body_is_read(small_server: Restartable) -> None:
    answer = _raw(small_server.port, _head("big", 9 * 1024 * 1024), timeout=10)
    assert answer.startswith(b"HTTP/1.1 413") and b"--max-upload-mb" in answer, answer[:300]


def test_a_client_that_disconnects_mid_upload_leaves_nothing(small_server: Restartable) -> None:
    uploads = small_server.tmp / "state" / "uploads"
    log = small_server.server.log_path
    assert log is not None
    _raw(small_server.port, _head("gone", 4 * 1024 * 1024), b"PK" + b"\0" * (2 * 1024 * 1024), close_after=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and "POST /v1/models -> 400" not in log.read_text():
        time.sleep(0.1)
    assert "POST /v1/models -> 400" in log.read_text(), small_server.server.logs()
    assert uploads.is_dir() and list(uploads.iterdir()) == []  # the spool existed (the dir was made for it) and went
    with Client(small_server.server.url, TOKEN) as c:
        assert [m["name"] for m in c.models()] == ["digits"]
        assert c.infer("digits", np.zeros((1, 64), np.float32)).version == 1


def test_a_full_disk_during_an_upload_is_507_and_leaves_nothing(tmp_path: Path) -> None:
    fs = PrivateTmpfs("4m")
    server = ServerProcess(
        ["--model", "digits", "--state-dir", str(fs.dir / "state"), "--admin-token", TOKEN],
        log=tmp_path / "server.log",
        mounts=fs,
    )
    try:
        server.wait_ready()
        with Client(server.url, TOKEN) as c:
            with pytest.raises(MorphserveError) as e:
                c.create_from_bundle("big", b"PK\x03\x04" + os.urandom(6 << 20))
            assert e.value.status == 507 and "no space left" in e.value.message
            assert list(fs.path("state", "uploads").iterdir()) == []  # the partial spool went, space is back
            assert c.create_from_bundle("small", bundle_bytes(load_zoo("digits")))["version"] == 1
            assert sorted(m["name"] for m in c.models()) == ["digits", "small"]
            assert list(fs.path("state", "uploads").iterdir()) == []
    finally:
        server.stop()
        fs.close()

"""What a request may cost before it is authenticated, and how long a client may take to send it (issue 24, items 2
and 7), on real servers and real sockets:

- a route that changes something answers 401/403 to a client without the token before reading a byte of its body
  (FastAPI reads and parses a body before it solves the route's dependencies: three such clients sending 60 MB
  held an unrelated inference for seconds, and got a 400 after parsing, never a 401);
- a client that sends its headers, or its body, too slowly is answered 408 and cut off (`--read-timeout-s`), so
  two hundred slow sockets do not stay open for as long as their clients like;
- a `%0A` in a URL path cannot forge a line of the server's log.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import numpy as np
import pytest

from tests.conftest import AUTH, TOKEN, ServerProcess, serve_module

V1 = "/v1/models/digits/infer"
EDITS = "/v1/models/digits/edits"
ROW = {"inputs": np.linspace(0, 1, 64, dtype=np.float32).reshape(1, 64).tolist()}
BIG = 60 * 1024 * 1024


def _head(port: int, method: str, path: str, length: int, extra: bytes = b"") -> bytes:
    return b"%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n" % (
        method.encode(),
        path.encode(),
        port,
        length,
        extra,
    )


def _status_within(sock: socket.socket, seconds: float) -> tuple[int, bytes]:
    """The status and the whole answer (headers and body), read within `seconds` (0 and what came, if not)."""
    sock.settimeout(seconds)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            more = sock.recv(65536)
            if not more:
                break
            data += more
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
            0,
        )
        while len(body) < length and (more := sock.recv(65536)):
            body += more
            data += more
    except TimeoutError:
        return 0, data
    return (int(data.split(b" ")[1]) if data.startswith(b"HTTP/1.1") else 0), data


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real server with the token TOKEN, for the tests that change nothing on it."""
    yield from serve_module(tmp_path_factory, "--model", "digits", "--no-fsync")


def test_a_client_without_the_token_is_refused_before_its_body_is_read(
    server: ServerProcess, start_server: Callable[..., ServerProcess]
) -> None:
    """Only the headers are sent, announcing 60 MB: the answer comes without waiting for a byte of the body."""
    cases = [
        (b"", 401),
        (b"Authorization: Bearer wrong\r\n", 403),
        (b"Origin: http://evil.example\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n", 403),
    ]
    for extra, status in cases:
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.sendall(_head(server.port, "POST", EDITS, BIG, extra))
            got, data = _status_within(s, 10)
            assert got == status, data[:300]
    tokenless = start_server("--model", "digits", "--no-fsync")
    with socket.create_connection(("127.0.0.1", tokenless.port)) as s:
        s.sendall(_head(tokenless.port, "POST", EDITS, BIG).replace(b"Host: 127.0.0.1", b"Host: rebind.example"))
        got, data = _status_within(s, 10)
        assert got == 403 and b"no admin token" in data, data[:300]
    assert httpx.get(f"{server.url}/v1/models/digits").json()["version"] == 1


def test_tokenless_60_mb_bodies_do_not_delay_inference(server: ServerProcess) -> None:
    """Three clients without the token send 60 MB (malformed JSON, the costliest kind before) to an edit route while
    another client runs inference: each is refused 401, and the inference's p99 stays under 100 ms."""
    body = b'{"ops": [' + b"[" * 2000 + b" " * (BIG - 2100)
    answers: list[int] = []
    stop = threading.Event()

    def sender() -> None:
        while not stop.is_set():
            with socket.create_connection(("127.0.0.1", server.port)) as s:
                s.sendall(_head(server.port, "POST", EDITS, len(body)))
                with contextlib.suppress(OSError):  # answered and closed before taking it all: the answer is there
                    s.sendall(body)
                answers.append(_status_within(s, 30)[0])
            stop.wait(0.05)  # and again: a client that keeps trying

    latencies: list[float] = []
    alone: list[float] = []
    with httpx.Client(base_url=server.url, timeout=30) as c:
        for _ in range(20):  # warm up
            assert c.post(V1, json=ROW).status_code == 200
        quiet = time.monotonic() + 1
        while time.monotonic() < quiet:  # the same inference without the senders: what this machine gives now
            t0 = time.perf_counter()
            assert c.post(V1, json=ROW).status_code == 200
            alone.append(time.perf_counter() - t0)
        senders = [threading.Thread(target=sender) for _ in range(3)]
        for t in senders:
            t.start()
        try:
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline or len(answers) < 3:
                t0 = time.perf_counter()
                r = c.post(V1, json=ROW)
                latencies.append(time.perf_counter() - t0)
                assert r.status_code == 200
                assert time.monotonic() < deadline + 30, "the senders were never answered"
        finally:
            stop.set()
            for t in senders:
                t.join(60)
    p99, quiet_p99 = float(np.percentile(latencies, 99)), float(np.percentile(alone, 99))
    print(
        f"\ninference under 3 tokenless 60 MB senders: {len(latencies)} requests, p99 {p99 * 1000:.1f} ms "
        f"(alone {quiet_p99 * 1000:.1f} ms), {len(answers)} bodies refused"
    )
    assert set(answers) == {401}, answers
    # 100 ms; on a machine so loaded that inference alone is slower than that, no worse than twice what it gives
    assert p99 < max(0.1, 2 * quiet_p99), f"p99 {p99 * 1000:.0f} ms, alone {quiet_p99 * 1000:.0f} ms"


def test_slow_headers_and_bodies_are_cut_off(start_server: Callable[..., ServerProcess]) -> None:
    """200 sockets: half never finish their headers, half never finish their bodies. With --read-timeout-s 1, each is
    answered 408 (or closed) within a few seconds, and the server serves throughout."""
    server = start_server("--model", "digits", "--admin-token", TOKEN, "--read-timeout-s", "1", "--no-fsync")
    sockets = []
    for i in range(200):
        s = socket.create_connection(("127.0.0.1", server.port))
        if i % 2:
            s.sendall(b"POST /v1/models/digits/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
        else:
            s.sendall(_head(server.port, "POST", V1, 10_000) + b'{"inputs": [[')
        sockets.append(s)
    assert httpx.post(f"{server.url}{V1}", json=ROW, timeout=10).status_code == 200
    deadline = time.monotonic() + 15
    statuses: list[int] = []
    for s in sockets:
        with s:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            data = b""
            try:
                while more := s.recv(65536):
                    data += more
            except TimeoutError:
                raise AssertionError(f"a slow socket is still open: {data[:200]!r}") from None
            except ConnectionResetError:
                pass
            statuses.append(int(data.split(b" ")[1]) if data.startswith(b"HTTP/1.1") else 0)
    assert set(statuses) <= {408, 0} and statuses.count(408) >= 190, statuses
    assert httpx.post(f"{server.url}{V1}", json=ROW, timeout=10).status_code == 200


def test_a_newline_in_the_path_forges_no_log_line(server: ServerProcess) -> None:
    forged = "request_id=forged GET /v1/models -> 200 (0.1 ms)"
    r = httpx.get(f"{server.url}/v1/models/x%0A{forged.replace(' ', '%20')}/graph", headers=AUTH)
    assert r.status_code == 404
    httpx.get(f"{server.url}/v1/models/digits")  # the log has caught up past that request
    lines = server.logs().splitlines()
    assert not [line for line in lines if line.startswith("request_id=forged")], lines[-5:]
    assert any("x\\nrequest_id=forged" in line for line in lines), lines[-5:]

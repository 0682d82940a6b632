"""Graph renders are bounded and cancellable (issue 24, item 3), on a real server with a graph graphviz cannot lay
out in minutes (400 nodes, long edges between random earlier nodes):

- six clients asking for its SVG delay neither a graph JSON request nor an edit by more than 1 s (before, they took
  every thread of the shared pool for over 100 s);
- the `dot` of a render is killed when its client goes away, and when it runs past `--render-timeout-s` (504);
- a graph over `--max-render-nodes` is refused before anything runs.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import AUTH, TOKEN, ServerProcess
from tests.integration.helpers import assert_error

NODES = 400


def tangled(n: int = NODES, seed: int = 0) -> dict[str, Any]:
    """A chain of ReLUs where every other node also adds a random earlier one: cheap to serve, hard to draw."""
    rnd = random.Random(seed)
    nodes: list[dict[str, Any]] = [{"id": "n0", "layer": {"type": "ReLU"}, "inputs": ["x"]}]
    for i in range(1, n):
        if i % 2:
            nodes.append({"id": f"n{i}", "layer": {"type": "ReLU"}, "inputs": [f"n{i - 1}"]})
        else:
            nodes.append({"id": f"n{i}", "function": "add", "inputs": [f"n{i - 1}", f"n{rnd.randrange(0, i - 1)}"]})
    return {
        "name": "tangled",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 8]}],
        "nodes": nodes,
        "outputs": [{"name": "y", "node": f"n{n - 1}"}],
    }


def dot_children(pid: int) -> list[int]:
    """Running `dot` processes whose parent is `pid`."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        mine = fields.get("Name", "").strip() == "dot" and fields.get("PPid", "").strip() == str(pid)
        if mine and fields.get("State", "").strip()[:1] != "Z":
            found.append(int(status.parent.name))
    return found


def _until(cond: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


@contextmanager
def svg_requests(server: ServerProcess, count: int) -> Iterator[list[socket.socket]]:
    """`count` open connections, each asking for the SVG of the tangled graph; closed (the clients gone) on exit."""
    socks = []
    try:
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", server.port))
            s.sendall(b"GET /v1/models/tangled/graph?format=svg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            socks.append(s)
        yield socks
    finally:
        for s in socks:
            s.close()


@pytest.fixture
def server(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    s = start_server("--model", "digits", "--admin-token", TOKEN, "--no-fsync", "--render-timeout-s", "4")
    r = httpx.post(f"{s.url}/v1/models", headers=AUTH, json={"name": "tangled", "spec": tangled()}, timeout=60)
    assert r.status_code == 201, r.text
    return s


def _timed(c: httpx.Client) -> tuple[float, float]:
    """Seconds for the tangled graph's JSON, and for an edit (and its rollback) of digits."""
    t0 = time.perf_counter()
    assert c.get("/v1/models/tangled/graph").status_code == 200
    t1 = time.perf_counter()
    r = c.post(
        "/v1/models/digits/edits", json={"ops": [{"op": "insert", "after": "relu1", "layer": {"type": "Identity"}}]}
    )
    assert r.status_code == 200, r.text
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def test_six_renders_delay_neither_graph_json_nor_edits_and_stop_with_their_clients(server: ServerProcess) -> None:
    pid = server.proc.pid
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as c:
        base = [_timed(c) for _ in range(3)]
        base_json, base_edit = min(b[0] for b in base), min(b[1] for b in base)
        with svg_requests(server, 6):
            _until(lambda: bool(dot_children(pid)), 10, "a render runs")
            during = [_timed(c) for _ in range(3)]
            assert dot_children(pid), "the render finished: the graph was meant to take graphviz minutes"
        json_s, edit_s = max(d[0] for d in during), max(d[1] for d in during)
        print(
            f"\nwith 6 SVG renders running: graph JSON {json_s * 1000:.0f} ms (alone {base_json * 1000:.0f}), "
            f"edit {edit_s * 1000:.0f} ms (alone {base_edit * 1000:.0f})"
        )
        assert json_s - base_json < 1.0 and edit_s - base_edit < 1.0
        # the clients went away: their `dot` goes with them, well before --render-timeout-s would stop it
        t0 = time.monotonic()
        _until(lambda: not dot_children(pid), 3, "no dot runs once its clients have gone")
        print(f"dot stopped {time.monotonic() - t0:.2f} s after its clients left")
        assert c.post("/v1/models/digits/infer", json={"inputs": [[0.0] * 64]}).status_code == 200


def test_a_render_past_its_timeout_is_stopped_with_a_504(server: ServerProcess) -> None:
    t0 = time.monotonic()
    r = httpx.get(f"{server.url}/v1/models/tangled/graph?format=svg", timeout=30)
    assert_error(r, 504, "--render-timeout-s", "format=json")
    assert 3.5 < time.monotonic() - t0 < 10
    _until(lambda: not dot_children(server.proc.pid), 2, "the timed-out dot is gone")
    assert httpx.get(f"{server.url}/v1/models/tangled/graph?format=dot").status_code == 200  # DOT text is cheap


def test_a_graph_over_the_node_limit_is_not_drawn(make_client: Callable[..., Any]) -> None:
    c = make_client(max_render_nodes=100)
    assert c.post("/v1/models", headers=AUTH, json={"name": "tangled", "spec": tangled(150)}).status_code == 201
    body = assert_error(c.get("/v1/models/tangled/graph?format=svg"), 422, "150 nodes", "--max-render-nodes")
    assert body["limit"] == 100
    assert c.get("/v1/models/tangled/graph").status_code == 200
    assert c.get("/v1/models/digits/graph?format=svg").status_code == 200

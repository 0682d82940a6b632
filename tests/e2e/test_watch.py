"""Following a model from Python (`Client.events`, `AsyncClient.events`) and from the CLI (`morphserve watch`),
against a real server; a dropped connection is resumed without losing a version."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import queue
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import httpx
import pytest

from morphserve.client import AsyncClient, Client, Event, NotFound, Unreachable
from tests.conftest import AUTH, ROOT, ServerProcess, serve_module

_names = itertools.count()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from serve_module(tmp_path_factory, "--model", "digits")


@pytest.fixture
def model(server: ServerProcess) -> str:
    name = f"w{next(_names)}"
    r = httpx.post(f"{server.url}/v1/models", headers=AUTH, json={"name": name, "zoo": "digits"}, timeout=60)
    assert r.status_code == 201, r.text
    return name


def _edit(server: ServerProcess, model: str, node: str, after: str) -> int:
    r = httpx.post(
        f"{server.url}/v1/models/{model}/layers",
        headers=AUTH,
        timeout=60,
        json={
            "after": after,
            "name": node,
            "init": "identity",
            "layer": {"type": "Linear", "in_features": 64, "out_features": 64},
        },
    )
    assert r.status_code == 200, r.text
    return int(r.json()["version"])


def _delete(server: ServerProcess, model: str) -> None:
    assert httpx.delete(f"{server.url}/v1/models/{model}", headers=AUTH, timeout=60).status_code == 200


class Proxy:
    """A TCP forwarder to the server whose connections can be cut, and whose new connections can be held back."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.accepted = 0
        self.open = threading.Event()
        self.open.set()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.open.wait()
            self.accepted += 1
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        self.sockets.clear()

    def close(self) -> None:
        self.cut()
        self.listener.close()


def test_client_events_follow_edits_and_resume_after_a_dropped_connection(server: ServerProcess, model: str) -> None:
    proxy = Proxy(server.port)
    got: queue.Queue[Event | BaseException] = queue.Queue()

    def follow() -> None:
        try:
            with Client(f"http://127.0.0.1:{proxy.port}") as c:
                for e in c.events(model):
                    got.put(e)
            got.put(StopIteration())
        except BaseException as e:  # noqa: BLE001 - handed to the test
            got.put(e)

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    try:
        # Edit until the follower is connected and sees one (it may connect after the first edit).
        first = None
        for n, after in enumerate(("fc2", "x0", "x1", "x2"), start=0):
            v = _edit(server, model, f"x{n}", after)
            try:
                first = got.get(timeout=3)
                break
            except queue.Empty:
                continue
        assert isinstance(first, Event) and first.kind == "version" and first.version == v
        assert first.data["parent"] == v - 1 and first.data["ops"][0]["name"] == f"x{v - 2}"
        proxy.open.clear()  # hold the reconnection back, then drop the stream
        proxy.cut()
        last = f"x{v - 2}"
        missed = [_edit(server, model, f"y{i}", after=last if i == 0 else f"y{i - 1}") for i in range(3)]
        proxy.open.set()  # the client reconnects with Last-Event-ID: the server replays what it missed
        replayed = [got.get(timeout=60) for _ in missed]
        assert [e.version for e in replayed if isinstance(e, Event)] == missed
        assert proxy.accepted >= 2
        _delete(server, model)
        gone = got.get(timeout=60)
        assert isinstance(gone, Event) and (gone.kind, gone.model) == ("model_deleted", model)
        assert isinstance(got.get(timeout=60), StopIteration)  # the iteration ends with the model
    finally:
        proxy.close()
        thread.join(10)


def test_client_events_since_and_errors(server: ServerProcess, model: str) -> None:
    _edit(server, model, "a", "fc2")
    _edit(server, model, "b", "a")
    with Client(server.url) as c:
        stream = c.events(model, since=1)
        assert [next(stream).version for _ in range(2)] == [2, 3]
        stream.close()
        with pytest.raises(NotFound) as e:
            next(c.events("nope"))
        assert "nope" in e.value.message
    with Client("http://127.0.0.1:9") as c, pytest.raises(Unreachable):  # nothing listens on the discard port
        next(c.events(model, reconnect=False))


def test_async_client_events(server: ServerProcess, model: str) -> None:
    async def main() -> list[Event]:
        async with AsyncClient(server.url) as c:
            seen = []
            async for e in c.events(model, since=0):
                seen.append(e)
                if e.version == 1:
                    await asyncio.to_thread(_edit, server, model, "async_extra", "fc2")
                if e.version == 2:
                    break
            return seen

    seen = asyncio.run(main())
    assert [(e.kind, e.id, e.version) for e in seen] == [("version", "1", 1), ("version", "2", 2)]
    assert seen[1].data["ops"][0]["name"] == "async_extra"


def test_server_events_from_the_client(server: ServerProcess) -> None:
    base = f"w{next(_names)}"
    with Client(server.url) as c:
        stream = c.events()
        seen: queue.Queue[Event] = queue.Queue()
        reader = threading.Thread(target=lambda: seen.put(next(stream)), daemon=True)
        reader.start()
        made = []
        for i in range(20):  # create models until the reader, once connected, has seen one of them
            if not reader.is_alive():
                break
            made.append(f"{base}-{i}")
            r = httpx.post(
                f"{server.url}/v1/models", headers=AUTH, json={"name": made[-1], "zoo": "digits"}, timeout=60
            )
            assert r.status_code == 201
            reader.join(3)
        e = seen.get(timeout=60)
        stream.close()
    assert e.kind == "model_created" and e.model in made and e.version == 1


def _watch(server: ServerProcess, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "morphserve", "--url", server.url, "watch", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _lines(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    out: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [out.put(line) for line in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    return out


def test_cli_watch(server: ServerProcess, model: str) -> None:
    text = _watch(server, model, "--since", "0")
    as_json = _watch(server, model, "--json", "--since", "0")
    try:
        text_lines, json_lines = _lines(text), _lines(as_json)
        assert text_lines.get(timeout=60).endswith(f"{model} version 1: created\n")
        assert json.loads(json_lines.get(timeout=60))["version"] == 1
        _edit(server, model, "watched", "fc2")
        line = text_lines.get(timeout=60)
        assert f"{model} version 2 (from 1): insert Linear as watched after fc2" in line
        doc = json.loads(json_lines.get(timeout=60))
        assert (doc["event"], doc["id"], doc["model"], doc["version"], doc["parent"]) == ("version", "2", model, 2, 1)
        _delete(server, model)
        assert text_lines.get(timeout=60).strip() == f"{model}: deleted"
        assert text.wait(60) == 0 and as_json.wait(60) == 0  # the stream ends with the model
    finally:
        for p in (text, as_json):
            if p.poll() is None:
                p.kill()


def test_cli_watch_of_an_unknown_model_is_one_clear_line(server: ServerProcess) -> None:
    p = _watch(server, "nope")
    out, err = p.communicate(timeout=60)
    assert p.returncode == 1 and out == ""
    assert err.strip() == "error: model 'nope' does not exist"

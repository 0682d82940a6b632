"""The SSE routes against a real server: one event per committed version, model created/deleted, resume with
Last-Event-ID, heartbeats, and the JSON 404 for an unknown model."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import AUTH, ServerProcess, serve_module
from tests.e2e.sse import SSEStream

_names = itertools.count()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from serve_module(tmp_path_factory, "--model", "digits")


@pytest.fixture
def model(server: ServerProcess) -> Iterator[str]:
    """A fresh copy of digits per test, so that version numbers are known."""
    name = f"ev{next(_names)}"
    r = httpx.post(f"{server.url}/v1/models", headers=AUTH, json={"name": name, "zoo": "digits"}, timeout=60)
    assert r.status_code == 201, r.text
    yield name
    httpx.delete(f"{server.url}/v1/models/{name}", headers=AUTH, timeout=60)


def _insert(server: ServerProcess, model: str, name: str, after: str = "fc2") -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/models/{model}/layers",
        headers=AUTH,
        timeout=60,
        json={
            "after": after,
            "name": name,
            "init": "identity",
            "layer": {"type": "Linear", "in_features": 64, "out_features": 64},
        },
    )


def test_stream_headers_and_preamble(server: ServerProcess, model: str) -> None:
    with SSEStream(f"{server.url}/v1/models/{model}/events") as s:
        assert s.response is not None and s.response.status_code == 200
        h = s.response.headers
        assert h["content-type"].startswith("text/event-stream")
        assert h["cache-control"] == "no-store" and h["x-accel-buffering"] == "no"
        first = s.next()
        assert first.comment == "morphserve events"
        assert s.next().retry == 1000  # reconnect within a second


def test_an_edit_produces_exactly_one_event(server: ServerProcess, model: str) -> None:
    with SSEStream(f"{server.url}/v1/models/{model}/events") as s:
        assert s.until_heartbeat() == []  # connected and idle: no event
        r = _insert(server, model, "extra")
        assert r.status_code == 200, r.text
        # A refused edit commits nothing, so it sends nothing; a rollback is a version like any other.
        assert _insert(server, model, "bad", after="nope").status_code == 404
        rb = httpx.post(f"{server.url}/v1/models/{model}/rollback", headers=AUTH, json={"version": 1}, timeout=60)
        assert rb.status_code == 200
        # Deleting the model ends its stream, and the stream is ordered: what arrived until then is all it sent.
        assert httpx.delete(f"{server.url}/v1/models/{model}", headers=AUTH, timeout=60).status_code == 200
        *events, gone = s.until_end()
        assert (gone.event, gone.json()) == ("model_deleted", {"model": model})
        assert len(events) == 2, [e.data for e in events]  # one per commit (the edit, the rollback), none refused
        e, rolled_back = events
        assert (e.event, e.id) == ("version", "2")
        data = e.json()
        assert (data["model"], data["version"], data["parent"]) == (model, 2, 1)
        assert data["ops"] == [
            {
                "op": "insert",
                "after": "fc2",
                "name": "extra",
                "init": "identity",
                "seed": 0,
                "layer": {"type": "Linear", "in_features": 64, "out_features": 64, "bias": True},
            }
        ]
        assert isinstance(data["created_at"], float)
        assert (rolled_back.event, rolled_back.id) == ("version", "3")
        assert (rolled_back.json()["parent"], rolled_back.json()["ops"]) == (2, [{"op": "rollback", "to": 1}])


def test_every_subscriber_sees_the_same_event(server: ServerProcess, model: str) -> None:
    streams = [SSEStream(f"{server.url}/v1/models/{model}/events") for _ in range(12)]
    try:
        for s in streams:
            s.next(), s.next()  # preamble: each is connected
        assert _insert(server, model, "extra").status_code == 200
        for s in streams:
            e = s.next_event()
            assert (e.event, e.id, e.json()["version"]) == ("version", "2", 2)
    finally:
        for s in streams:
            s.close()


def test_resume_with_last_event_id_or_since(server: ServerProcess, model: str) -> None:
    for i in range(3):
        assert _insert(server, model, f"x{i}", after="fc2" if i == 0 else f"x{i - 1}").status_code == 200
    with SSEStream(f"{server.url}/v1/models/{model}/events", headers={"Last-Event-ID": "2"}) as s:
        assert [s.next_event().id for _ in range(2)] == ["3", "4"]
        assert _insert(server, model, "live", after="x2").status_code == 200
        e = s.next_event()
        assert (e.id, e.json()["parent"]) == ("5", 4)
    with SSEStream(f"{server.url}/v1/models/{model}/events?since=0") as s:
        assert [s.next_event().id for _ in range(5)] == ["1", "2", "3", "4", "5"]
    # The browser's Last-Event-ID wins over the page's original ?since=.
    with SSEStream(f"{server.url}/v1/models/{model}/events?since=1", headers={"Last-Event-ID": "4"}) as s:
        assert s.next_event().id == "5"
    for position in ("99", "not-a-version"):  # a position this stream never had: reload
        with SSEStream(f"{server.url}/v1/models/{model}/events", headers={"Last-Event-ID": position}) as s:
            e = s.next_event()
            assert (e.event, e.json()) == ("reset", {"model": model, "version": 5})


def test_create_and_delete_events(server: ServerProcess) -> None:
    name = f"ev{next(_names)}"
    with SSEStream(f"{server.url}/v1/events") as g:
        g.next(), g.next()
        r = httpx.post(f"{server.url}/v1/models", headers=AUTH, json={"name": name, "zoo": "digits"}, timeout=60)
        assert r.status_code == 201
        created = g.next_event()
        assert (created.event, created.json()) == ("model_created", {"model": name, "version": 1})
        assert created.id and created.id.rsplit("-", 1)[1].isdigit()
        with SSEStream(f"{server.url}/v1/models/{name}/events") as m:
            m.next(), m.next()
            assert _insert(server, name, "extra").status_code == 200
            assert m.next_event().id == "2"
            v = g.next_event()  # the global stream carries every model's versions too
            assert (v.event, v.json()["model"], v.json()["version"]) == ("version", name, 2)
            assert httpx.delete(f"{server.url}/v1/models/{name}", headers=AUTH, timeout=60).status_code == 200
            gone = m.next_event()
            assert (gone.event, gone.json()) == ("model_deleted", {"model": name})
            with pytest.raises(EOFError):
                m.next_event()  # the model's stream ends with it
        deleted = g.next_event()
        assert (deleted.event, deleted.json()) == ("model_deleted", {"model": name})
        last = deleted.id
    # Resuming the global stream replays what came after the given id; an id from elsewhere resets.
    with SSEStream(f"{server.url}/v1/events", headers={"Last-Event-ID": created.id}) as g:
        assert [g.next_event().event for _ in range(2)] == ["version", "model_deleted"]
    with SSEStream(f"{server.url}/v1/events", headers={"Last-Event-ID": "0-1"}) as g:
        assert g.next_event().event == "reset"
    assert last


def test_unknown_model_is_a_json_404(server: ServerProcess) -> None:
    r = httpx.get(f"{server.url}/v1/models/nope/events", timeout=30)
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/json")
    assert "nope" in r.json()["error"]
    for too_often in ("0", "0.1"):
        assert httpx.get(f"{server.url}/v1/models/digits/events?heartbeat={too_often}", timeout=30).status_code == 422


def test_reading_needs_no_token(server: ServerProcess) -> None:
    # The server has an admin token; the streams, like the graph, are open.
    with SSEStream(f"{server.url}/v1/models/digits/events") as s:
        assert s.next().comment == "morphserve events"
        assert s.until_heartbeat() == []


def test_a_stream_never_reflects_a_token(server: ServerProcess) -> None:
    wrong = "wr0ng-token-8f2c1e"
    for url in (f"{server.url}/v1/models/digits/events?token={wrong}", f"{server.url}/v1/events?access_token={wrong}"):
        with SSEStream(url, headers={"Authorization": f"Bearer {wrong}"}) as s:
            assert s.response is not None and s.response.status_code == 200
            assert wrong not in "".join(f"{k}:{v}" for k, v in s.response.headers.multi_items())
            seen = [s.next() for _ in range(3)]  # preamble, retry and a heartbeat
            assert all(wrong not in f"{i.comment}{i.data}{i.id}{i.event}" for i in seen)

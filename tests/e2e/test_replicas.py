"""Issue 13: three real `morphserve serve` processes following one PostgreSQL journal (a throwaway cluster,
tests/pg.py).

Each edit sets digits' output layer to zero weights and a bias `tag`, so any response's outputs are `[tag] * 10`
whatever the input and the batch it ran in: a response is checked against the tag of the version it names, bit for
bit. Version 1 (the trained model) is checked against the output recorded before any edit, to float32 rounding (a
batch of another size may round the last bit differently).
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import AUTH, TOKEN, ServerProcess
from tests.e2e.replicas import Replicas, wait_until
from tests.pg import PgCluster

#: Each test starts three servers (or a supervisor and two workers): over 20 s on a 2-core machine.
pytestmark = pytest.mark.slow
X = [[0.25] * 64]


def tag_ops(tag: float) -> list[dict[str, Any]]:
    return [
        {
            "op": "set_weights",
            "node": "fc3",
            "tensors": {
                "weight": {"shape": [10, 64], "data": [0.0] * 640},
                "bias": {"shape": [10], "data": [tag] * 10},
            },
        }
    ]


def infer(c: httpx.Client, url: str, **params: Any) -> httpx.Response:
    return c.post(f"{url}/v1/models/digits/infer", json={"inputs": X}, params=params)


def edit(c: httpx.Client, url: str, tag: float, **params: Any) -> httpx.Response:
    return c.post(f"{url}/v1/models/digits/edits", json={"ops": tag_ops(tag)}, params=params, headers=AUTH)


class Checker:
    """Every inference response must carry exactly its version's output: `tags[v]` once version v is known."""

    def __init__(self, v1_output: list[float]) -> None:
        self.v1 = v1_output
        self.tags: dict[int, float] = {}
        self.seen: list[tuple[int, list[float]]] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()

    def record(self, r: httpx.Response) -> None:
        with self.lock:
            if r.status_code != 200:
                self.errors.append(f"{r.status_code} {r.text[:200]}")
                return
            body = r.json()
            self.seen.append((body["model_version"], body["outputs"][0]))

    def verify(self) -> int:
        assert not self.errors, self.errors[:5]
        for version, outputs in self.seen:
            if version == 1:
                assert np.allclose(outputs, self.v1, rtol=1e-5, atol=1e-6), (outputs[:3], self.v1[:3])
            else:
                assert outputs == [self.tags[version]] * 10, (version, outputs[:3], self.tags[version])
        return len(self.seen)


def load(urls: list[str], checker: Checker, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    with httpx.Client(timeout=30) as c:
        while not stop.is_set():
            try:
                checker.record(infer(c, rng.choice(urls)))
            except httpx.HTTPError as e:
                with checker.lock:
                    checker.errors.append(repr(e))


def with_load(urls: list[str], checker: Checker, threads: int = 3) -> tuple[threading.Event, list[threading.Thread]]:
    stop = threading.Event()
    ts = [threading.Thread(target=load, args=(urls, checker, stop, i), daemon=True) for i in range(threads)]
    for t in ts:
        t.start()
    return stop, ts


def end_load(stop: threading.Event, ts: list[threading.Thread]) -> None:
    stop.set()
    for t in ts:
        t.join(30)


def v1_output(url: str) -> list[float]:
    with httpx.Client(timeout=30) as c:
        r = infer(c, url)
        assert r.status_code == 200 and r.json()["model_version"] == 1, r.text
        return list(r.json()["outputs"][0])


def history(url: str, tags: dict[int, float], v1: list[float]) -> None:
    """The replica at `url` has every version 1..max(tags), each computing exactly its tag."""
    with httpx.Client(base_url=url, timeout=30) as c:
        listed = [v["version"] for v in c.get("/v1/models/digits/versions").json()["versions"]]
        assert listed == list(range(1, max(tags) + 1)), (url, listed)
        for v in [1, *sorted(tags)]:
            body = {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": X[0]}]}
            r = c.post(f"/v2/models/digits/versions/{v}/infer", json=body)
            assert r.status_code == 200, (url, v, r.text)
            data = r.json()["outputs"][0]["data"]
            assert np.allclose(data, v1, rtol=1e-5, atol=1e-6) if v == 1 else data == [tags[v]] * 10, (url, v)


# -- the tests -------------------------------------------------------------------------------------------------------
def test_edits_on_random_replicas_under_load(replicas: Callable[..., Replicas]) -> None:
    rs = replicas()
    assert rs.versions() == [1, 1, 1]  # three started at once: one created digits, the others adopted it
    checker = Checker(v1_output(rs.urls[0]))
    rng = random.Random(13)
    stop, ts = with_load(rs.urls, checker)
    try:
        with httpx.Client(timeout=30) as c:
            for k in range(12):
                r = edit(c, rng.choice(rs.urls), float(k + 2))
                assert r.status_code == 200, r.text
                checker.tags[r.json()["version"]] = float(k + 2)
                time.sleep(rng.uniform(0.0, 0.2))
    finally:
        end_load(stop, ts)
    n = checker.verify()
    assert sorted(checker.tags) == list(range(2, 14))  # an edit on any replica takes the next number
    assert n >= 100 and len({v for v, _ in checker.seen}) >= 4, (n, {v for v, _ in checker.seen})
    rs.converge(13)
    for url in rs.urls:
        history(url, checker.tags, checker.v1)


def test_min_version_on_another_replica_right_after_an_edit(replicas: Callable[..., Replicas]) -> None:
    rs = replicas()
    with httpx.Client(timeout=30) as c:
        for k in range(8):
            a, b = rs.urls[k % 3], rs.urls[(k + 1) % 3]
            r = edit(c, a, float(100 + k))
            assert r.status_code == 200, r.text
            v = r.json()["version"]
            got = infer(c, b, min_version=v)  # no pause: b may not have applied v yet, and waits for it
            assert got.status_code == 200, got.text
            assert got.json()["model_version"] >= v and got.json()["outputs"][0] == [float(100 + k)] * 10
        # A version nobody committed is on no replica, and none can have it before an edit makes it: 404 at once
        # naming the journal's newest (issue 24; it was a 503 after --min-version-wait-ms).
        t0 = time.monotonic()
        r = infer(c, rs.urls[2], min_version=500)
        waited = time.monotonic() - t0
        assert r.status_code == 404, r.text
        assert r.json()["latest"] == 9 and r.json()["min_version"] == 500 and "newest is 9" in r.json()["error"]
        assert waited < 1.5, waited
        # OIP routes take it too; a bad value is a 422 that changes nothing.
        oip = {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": X[0]}]}
        r = c.post(f"{rs.urls[1]}/v2/models/digits/infer", params={"min_version": 9}, json=oip)
        assert r.status_code == 200 and r.json()["model_version"] == "9", r.text
        r = infer(c, rs.urls[0], min_version=0)
        assert r.status_code == 422 and "error" in r.json(), r.text


def test_concurrent_edits_on_two_replicas(replicas: Callable[..., Replicas]) -> None:
    rs = replicas()
    v1 = v1_output(rs.urls[0])
    tags: dict[int, float] = {}
    lock, failures = threading.Lock(), []

    def editor(url: str, base: float) -> None:
        with httpx.Client(timeout=60) as c:
            for k in range(10):
                r = edit(c, url, base + k)
                with lock:
                    if r.status_code != 200:
                        failures.append(r.text)
                    elif r.json()["version"] in tags:
                        failures.append(f"version {r.json()['version']} given twice")
                    else:
                        tags[r.json()["version"]] = base + k

    ts = [threading.Thread(target=editor, args=(rs.urls[i], 1000.0 * (i + 1))) for i in (0, 1)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert not failures, failures
    assert sorted(tags) == list(range(2, 22))  # distinct numbers, none lost
    assert {int(t) // 1000 for t in tags.values()} == {1, 2}  # both replicas' edits are in it
    rs.converge(21)
    for url in rs.urls:  # every replica applied the same sequence
        history(url, tags, v1)


def test_sigkill_of_a_replica_during_an_edit_stream(replicas: Callable[..., Replicas]) -> None:
    rs = replicas()
    v1 = v1_output(rs.urls[0])
    tags: dict[int, float] = {}
    stop = threading.Event()

    def stream(url: str, base: float) -> None:
        with httpx.Client(timeout=30) as c:
            k = 0
            while not stop.is_set():
                k += 1
                try:
                    r = edit(c, url, base + k)
                except httpx.HTTPError:  # the replica was killed mid-edit: not acknowledged
                    return
                if r.status_code == 200:
                    tags[r.json()["version"]] = base + k

    threads = [threading.Thread(target=stream, args=(rs.urls[i], 1000.0 * (i + 1))) for i in (0, 1)]
    for t in threads:
        t.start()
    wait_until(lambda: len(tags) >= 4, 60, "edits acknowledged")
    time.sleep(random.Random(7).uniform(0.0, 0.3))
    rs.servers[0].proc.send_signal(signal.SIGKILL)  # mid-edit, most likely holding the model's edit lock
    rs.servers[0].proc.wait()
    killed_at = len(tags)
    # Its lock went with its connection: the other replica's stream goes on.
    wait_until(lambda: len(tags) >= killed_at + 4, 30, "edits on the surviving replica after the kill")
    stop.set()
    for t in threads:
        t.join(30)
    head = max(tags)
    rs.restart(0)  # same state dir (its blob cache): it catches up to the journal
    rs.converge(head, 30)
    assert rs.versions() == [head] * 3
    for url in rs.urls:
        history(url, tags | _unacked(rs.urls[1], tags), v1)


def _unacked(url: str, tags: dict[int, float]) -> dict[int, float]:
    """Versions that committed but whose answer was lost with the killed replica: each still one edit's tag (read
    back from the replica; `history` then checks every replica computes the same)."""
    out = {}
    with httpx.Client(base_url=url, timeout=30) as c:
        for v in [v["version"] for v in c.get("/v1/models/digits/versions").json()["versions"]]:
            if v != 1 and v not in tags:
                body = {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": X[0]}]}
                data = c.post(f"/v2/models/digits/versions/{v}/infer", json=body).json()["outputs"][0]["data"]
                assert len(set(data)) == 1, (v, data)
                out[v] = data[0]
    return out


def test_database_restart_during_load(replicas: Callable[..., Replicas], pg_cluster: PgCluster) -> None:
    rs = replicas()
    checker = Checker(v1_output(rs.urls[0]))
    stop, ts = with_load(rs.urls, checker)
    down: list[httpx.Response] = []
    try:
        with httpx.Client(timeout=30) as c:

            def edit_until_ok(tag: float, url: str) -> None:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    r = edit(c, url, tag)
                    if r.status_code == 200:
                        checker.tags[r.json()["version"]] = tag
                        return
                    assert r.status_code == 503 and "error" in r.json(), r.text  # the journal is down: retry
                    down.append(r)
                    time.sleep(0.2)
                raise AssertionError("no edit went through within 60 s of the database restart")

            for k in range(3):
                edit_until_ok(float(k + 2), rs.urls[k % 3])
            pg_cluster.restart()  # pg_ctl restart -m fast: every connection is cut
            for k in range(3, 6):
                edit_until_ok(float(k + 2), rs.urls[k % 3])

            # Down for a while: inference goes on, readiness stays 200, edits are a clear 503, the journal shows down.
            pg_cluster.stop()
            try:
                r = edit(c, rs.urls[1], 99.0)
                assert r.status_code == 503 and r.headers.get("retry-after") == "1", r.text
                assert "error" in r.json() and "password" not in r.text
                assert c.get(f"{rs.urls[2]}/v2/health/ready").status_code == 200
                for url in rs.urls:
                    wait_until(lambda u=url: not c.get(f"{u}/v1/replicas").json()["journal"]["up"], 5, "journal down")
                    assert "morphserve_journal_up 0.0" in c.get(f"{url}/metrics").text
                time.sleep(1.0)  # load keeps running against a database that is gone
            finally:
                pg_cluster.start()
            for k in range(6, 9):
                edit_until_ok(float(k + 2), rs.urls[k % 3])
    finally:
        end_load(stop, ts)
    assert checker.verify() >= 100  # not one inference failed, through the restart and the outage
    assert sorted(checker.tags) == list(range(2, 11))  # every acknowledged edit kept
    rs.converge(10, 20)
    for url in rs.urls:
        history(url, checker.tags, checker.v1)
        assert httpx.get(f"{url}/v1/replicas", timeout=10).json()["journal"]["up"] is True
        assert "morphserve_journal_up 1.0" in httpx.get(f"{url}/metrics", timeout=10).text


def test_a_lost_notification_is_bounded_by_the_poll(replicas: Callable[..., Replicas], pg_cluster: PgCluster) -> None:
    rs = replicas(3, "--follow-interval-ms", "250")
    with httpx.Client(timeout=30) as c:
        for k in range(4):
            assert pg_cluster.terminate_listeners() >= 3  # every replica's LISTEN connection, cut: its notices lost
            r = edit(c, rs.urls[k % 3], float(k + 2))
            assert r.status_code == 200, r.text
            t0 = time.monotonic()
            rs.converge(k + 2, 5)
            assert time.monotonic() - t0 < 1.5  # the poll (250 ms) and the reconnect, not a notification
        # The feeds came back by themselves: a notified edit reaches every replica as fast as before.
        wait_until(
            lambda: (
                len(pg_cluster.execute("SELECT 1 FROM pg_stat_activity WHERE application_name = 'morphserve-feed'"))
                == 3
            ),
            5,
            "feeds back",
        )
        assert edit(c, rs.urls[0], 9.0).status_code == 200
        rs.converge(6, 2)


def test_model_create_and_delete_propagate(replicas: Callable[..., Replicas]) -> None:
    rs = replicas()
    with httpx.Client(timeout=60) as c:
        r = c.post(f"{rs.urls[0]}/v1/models", json={"name": "m2", "zoo": "mlp"}, headers=AUTH)
        assert r.status_code == 201, r.text
        wait_until(lambda: rs.versions("m2") == [1, 1, 1], 10, "m2 on every replica")
        outs = []
        for url in rs.urls:
            meta = c.get(f"{url}/v2/models/m2").json()
            shape = [1, *meta["inputs"][0]["shape"][1:]]
            body = {
                "inputs": [
                    {
                        "name": meta["inputs"][0]["name"],
                        "shape": shape,
                        "datatype": "FP32",
                        "data": [0.5] * (shape[1] if len(shape) == 2 else 1),
                    }
                ]
            }
            got = c.post(f"{url}/v2/models/m2/infer", json=body)
            assert got.status_code == 200, got.text
            outs.append(got.json()["outputs"][0]["data"])
        assert outs[0] == outs[1] == outs[2]  # the same weights everywhere (from the journal's blobs)
        # A second create of the same name on another replica: 409, nothing changes.
        r = c.post(f"{rs.urls[1]}/v1/models", json={"name": "m2", "zoo": "mlp"}, headers=AUTH)
        assert r.status_code == 409 and "error" in r.json(), r.text

        assert c.delete(f"{rs.urls[1]}/v1/models/m2", headers=AUTH).status_code == 200
        wait_until(lambda: rs.versions("m2") == [None, None, None], 10, "m2 gone from every replica")
        assert c.get(f"{rs.urls[2]}/v1/models/m2").status_code == 404

        # Created again (another model of the same name: a new incarnation) on a third replica, with an edit at once.
        r = c.post(f"{rs.urls[2]}/v1/models", json={"name": "m2", "zoo": "digits"}, headers=AUTH)
        assert r.status_code == 201, r.text
        r = c.post(f"{rs.urls[2]}/v1/models/m2/edits", json={"ops": tag_ops(7.0)}, headers=AUTH)
        assert r.status_code == 200 and r.json()["version"] == 2, r.text
        wait_until(lambda: rs.versions("m2") == [2, 2, 2], 10, "the new m2 on every replica")
        for url in rs.urls:
            got = c.post(f"{url}/v1/models/m2/infer", json={"inputs": X}).json()
            assert got["outputs"][0] == [7.0] * 10 and got["model_version"] == 2
        assert rs.versions() == [1, 1, 1]  # digits untouched


def test_replicas_view_and_wait_all(replicas: Callable[..., Replicas]) -> None:
    rs = replicas()
    with httpx.Client(timeout=30) as c:
        views = [c.get(f"{url}/v1/replicas").json() for url in rs.urls]
        ids = {v["self"] for v in views}
        assert len(ids) == 3
        for url, view in zip(rs.urls, views, strict=True):
            journal = dict(view["journal"])
            read_at = journal.pop("last_read_at")  # when it last read the heads (issue 27): a moment ago
            assert journal == {"backend": "postgresql", "up": True, "error": None}
            assert abs(time.time() - read_at) < 10, read_at
            assert view["heads"] == {"digits": 1}
            alive = {r["id"]: r for r in view["replicas"] if r["alive"]}
            assert set(alive) == ids, view
            me = alive[view["self"]]
            assert me["this"] is True and me["address"] == url and me["versions"] == {"digits": 1}
            assert all(r["lag"] == {"digits": {"versions": 0, "seconds": 0.0}} for r in alive.values())
            assert sum(r["this"] for r in view["replicas"]) == 1
            assert all(r["last_seen"] >= r["started_at"] for r in view["replicas"])

        r = edit(c, rs.urls[0], 3.0, wait="all", wait_timeout_s=10)
        assert r.status_code == 200, r.text
        w = r.json()["replicas"]
        assert w["version"] == 2 and w["wanted"] == "all" and w["complete"] is True
        assert set(w["live"]) == ids and w["pending"] == []
        for url in rs.urls:  # "live" meant it: every replica serves v2 already, no waiting
            got = infer(c, url).json()
            assert got["model_version"] == 2 and got["outputs"][0] == [3.0] * 10

        r = edit(c, rs.urls[1], 4.0, wait="2")
        assert r.status_code == 200 and r.json()["replicas"]["complete"] is True, r.text
        assert len(r.json()["replicas"]["live"]) >= 2
        assert edit(c, rs.urls[1], 5.0).json()["replicas"] is None  # without ?wait= the answer does not wait
        r = edit(c, rs.urls[1], 5.0, wait="some")
        assert r.status_code == 422 and "error" in r.json(), r.text
        assert c.get(f"{rs.urls[1]}/v1/models/digits").json()["version"] == 4  # the refused edit changed nothing

        # A replica that stops cleanly leaves the view.
        gone = views[2]["self"]
        rs.servers[2].stop()
        view = c.get(f"{rs.urls[0]}/v1/replicas").json()
        assert gone not in {r["id"] for r in view["replicas"]}, view


def test_workers_share_one_port_with_sqlite(tmp_path: Path) -> None:
    server = ServerProcess(
        ["--workers", "2", "--state-dir", str(tmp_path / "state"), "--admin-token", TOKEN, "--model", "digits"],
        log=tmp_path / "workers.log",
    )
    try:
        server.wait_ready(90)
        wait_until(
            lambda: (
                len([r for r in httpx.get(f"{server.url}/v1/replicas", timeout=10).json()["replicas"] if r["alive"]])
                == 2
            ),
            30,
            "both workers beating",
        )
        seen_workers: set[str] = set()
        for k in range(10):
            with httpx.Client(base_url=server.url, timeout=30) as c:  # one connection: one worker
                seen_workers.add(c.get("/v1/replicas").json()["self"])
                r = c.post("/v1/models/digits/edits", json={"ops": tag_ops(float(k + 2))}, headers=AUTH)
                assert r.status_code == 200, r.text
                v = r.json()["version"]
                assert v == k + 2
                got = c.post("/v1/models/digits/infer", json={"inputs": X}).json()  # the worker that took the edit
                assert got["model_version"] == v and got["outputs"][0] == [float(k + 2)] * 10
            for _ in range(4):  # new connections, either worker: read-your-writes with min_version
                with httpx.Client(base_url=server.url, timeout=30) as c:
                    seen_workers.add(c.get("/v1/replicas").json()["self"])
                    got = c.post("/v1/models/digits/infer", params={"min_version": v}, json={"inputs": X}).json()
                    assert got["model_version"] == v and got["outputs"][0] == [float(k + 2)] * 10
        assert len(seen_workers) == 2, seen_workers  # both workers took requests on the one port
    finally:
        server.stop()

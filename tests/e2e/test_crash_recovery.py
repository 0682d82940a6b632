"""SIGKILL a real server at random points during a stream of edits; every acknowledged edit must survive, with the
embedded SQLite journal and with a PostgreSQL one (a throwaway cluster, tests/pg.py).

Each version v >= 2 sets the output layer's bias to v with zero weights, so the output of version v is
exactly `[v] * 10` for any input: after a restart the current version's outputs can be checked bit for bit.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import AUTH, TOKEN, ServerProcess

KILLS = 24
X = [[0.25] * 64]


def _edit_stream(
    url: str, acked: list[int], outputs: dict[int, list[float]], stop: threading.Event, first_ack: threading.Event
) -> None:
    """Edit until the server dies: each acknowledged version is recorded with the output it served."""
    # Generous timeouts: on a loaded machine the first edit after a restart pays torch's start-up costs (seconds).
    with httpx.Client(base_url=url, headers=AUTH, timeout=60) as c:
        while not stop.is_set():
            try:
                cur = c.get("/v1/models/digits").json()["version"]
                nxt = cur + 1
                r = c.post(
                    "/v1/models/digits/edits",
                    json={
                        "if_version": cur,
                        "ops": [
                            {
                                "op": "set_weights",
                                "node": "fc3",
                                "tensors": {
                                    "weight": {"shape": [10, 64], "data": [0.0] * 640},
                                    "bias": {"shape": [10], "data": [float(nxt)] * 10},
                                },
                            }
                        ],
                    },
                )
                if r.status_code != 200:
                    continue
                acked.append(r.json()["version"])
                first_ack.set()
                inf = c.post("/v1/models/digits/infer", json={"inputs": X}).json()
                outputs[inf["model_version"]] = inf["outputs"][0]
            except (httpx.HTTPError, ValueError, KeyError):
                return


def _start(state: Path, log: Path, journal: str = "sqlite") -> ServerProcess:
    args = ["--state-dir", str(state), "--admin-token", TOKEN, "--model", "digits", "--journal", journal]
    return ServerProcess(args, log=log).wait_ready(120)


@pytest.mark.slow
@pytest.mark.timeout(900)  # 25 server starts: minutes on a shared 2-core machine
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_acknowledged_edits_survive_sigkill(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> None:
    rng = random.Random(1234)
    state = tmp_path / "state"
    journal = request.getfixturevalue("pg_url") if backend == "postgresql" else "sqlite"
    acked: list[int] = []
    outputs: dict[int, list[float]] = {}
    kills = 0
    server = _start(state, tmp_path / "server-0.log", journal)
    try:
        for round_ in range(1, KILLS + 1):
            stop, first_ack = threading.Event(), threading.Event()
            t = threading.Thread(target=_edit_stream, args=(server.url, acked, outputs, stop, first_ack))
            t.start()
            assert first_ack.wait(120), "no edit was acknowledged within 120 s"
            time.sleep(rng.uniform(0.0, 0.3))  # kill anywhere: mid-validate, mid-fsync, mid-commit, mid-response
            server.proc.send_signal(signal.SIGKILL)
            server.proc.wait()
            kills += 1
            stop.set()
            t.join(15)
            server = _start(state, tmp_path / f"server-{round_}.log", journal)
            with httpx.Client(base_url=server.url, timeout=10) as c:
                info = c.get("/v1/models/digits").json()
                current = info["version"]
                history = [v["version"] for v in c.get("/v1/models/digits/versions").json()["versions"]]
                out = c.post("/v1/models/digits/infer", json={"inputs": X}).json()
            # every acknowledged edit is there, and nothing half-written: versions are exactly 1..current
            assert not acked or current >= max(acked), (current, acked[-3:])
            assert history == list(range(1, current + 1))
            assert out["model_version"] == current
            if current >= 2:
                # bit-identical: zero weights, bias == version number
                assert np.array_equal(np.asarray(out["outputs"][0], dtype=np.float32), np.full(10, current, np.float32))
            if current in outputs:
                assert out["outputs"][0] == outputs[current]
    finally:
        server.stop()
    print(f"\ncrash recovery ({backend}): {kills} SIGKILLs, {len(acked)} acknowledged edits, all present after restart")
    assert kills >= 20
    assert len(acked) >= KILLS  # at least one acknowledged edit before every kill


@pytest.mark.parametrize("version_offset", [1])
def test_old_versions_reload_after_restart(tmp_path: Path, version_offset: int) -> None:
    """After a restart, versions not resident come back from the store for graph, diff and /versions/{v}/infer."""
    state = tmp_path / "state"
    server = _start(state, tmp_path / "a.log")
    try:
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as c:
            for v in range(2, 8):
                r = c.post(
                    "/v1/models/digits/edits",
                    json={
                        "ops": [
                            {
                                "op": "set_weights",
                                "node": "fc3",
                                "tensors": {
                                    "weight": {"shape": [10, 64], "data": [0.0] * 640},
                                    "bias": {"shape": [10], "data": [float(v)] * 10},
                                },
                            }
                        ]
                    },
                )
                assert r.status_code == 200, r.text
    finally:
        server.stop()
    server = _start(state, tmp_path / "b.log")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            assert c.get("/v1/models/digits").json()["resident_versions"] == [7]
            for v in (2, 3, 5):
                body = {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": X[0]}]}
                r = c.post(f"/v2/models/digits/versions/{v}/infer", json=body)
                assert r.status_code == 200, r.text
                assert r.json()["model_version"] == str(v)
                assert r.json()["outputs"][0]["data"] == [float(v)] * 10
            assert c.get("/v1/models/digits/graph", params={"version": 1}).json()["version"] == 1
            d = c.get("/v1/models/digits/diff", params={"from": 1, "to": 6}).json()
            assert [ch["id"] for ch in d["changed"]] == ["fc3"] and d["changed"][0]["changes"] == ["weights"]
    finally:
        server.stop()

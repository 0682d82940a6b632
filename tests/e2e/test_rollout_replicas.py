"""Rollouts across restarts and replicas (issue 25): a SIGKILL during a rollout, and three replicas on one PostgreSQL
journal that agree on the candidate and on the outcome, whichever replica's gates decide."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import AUTH, TOKEN, ServerProcess
from tests.e2e.replicas import Replicas, wait_until

pytestmark = pytest.mark.slow
X = [[0.25] * 64]
FRESH_HEAD = {"op": "replace", "node": "fc3", "layer": {"type": "Linear", "in_features": 64, "out_features": 10}}
GROW = {"op": "insert", "after": "relu1", "layer": {"type": "Identity"}}


def _stage(url: str, op: dict[str, Any]) -> int:
    r = httpx.post(f"{url}/v1/models/digits/edits", json={"ops": [op], "stage": True}, headers=AUTH, timeout=30)
    assert r.status_code == 200 and r.json()["staged"], r.text
    return int(r.json()["version"])


def _rollout(url: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/v1/models/digits/rollout", timeout=10)
    return dict(r.json()) if r.status_code == 200 else {"state": None, "status": r.status_code}


def _load(urls: list[str], stop: threading.Event, failures: list[str], seen: set[int]) -> None:
    with httpx.Client(timeout=30) as c:
        k = 0
        while not stop.is_set():
            url = urls[k % len(urls)]
            k += 1
            try:
                r = c.post(f"{url}/v1/models/digits/infer", json={"inputs": X})
            except httpx.HTTPError as e:
                failures.append(f"{url}: {e}")
                continue
            if r.status_code != 200:
                failures.append(f"{url}: {r.status_code} {r.text[:200]}")
            else:
                seen.add(int(r.json()["model_version"]))


def _with_load(
    urls: list[str], threads: int = 3
) -> tuple[threading.Event, list[str], set[int], list[threading.Thread]]:
    stop, failures, seen = threading.Event(), [], set()  # type: ignore[var-annotated]
    ts = [threading.Thread(target=_load, args=(urls, stop, failures, seen), daemon=True) for _ in range(threads)]
    for t in ts:
        t.start()
    return stop, failures, seen, ts


def test_three_replicas_agree_on_the_candidate_and_the_outcome(replicas: Callable[..., Replicas]) -> None:
    rs = replicas()
    broken = _stage(rs.urls[0], FRESH_HEAD)
    spec = {"candidate": broken, "shadow": 1.0, "gates": {"min_requests": 150, "min_agreement": 0.99}}
    r = httpx.put(f"{rs.urls[1]}/v1/models/digits/rollout", json=spec, headers=AUTH, timeout=30)
    assert r.status_code == 201, r.text
    rollout_id = r.json()["id"]
    # every replica follows the journal's rollout: same id, same candidate, before any decision
    wait_until(
        lambda: all(_rollout(u).get("id") == rollout_id and _rollout(u)["candidate"] == broken for u in rs.urls),
        15,
        "every replica follows the rollout",
    )
    stop, failures, seen, ts = _with_load(rs.urls)
    wait_until(lambda: all(_rollout(u)["state"] == "aborted" for u in rs.urls), 90, "the gates aborted it everywhere")
    stop.set()
    for t in ts:
        t.join(30)
    outcomes = [_rollout(u) for u in rs.urls]
    assert {o["id"] for o in outcomes} == {rollout_id}
    assert len({(o["state"], o["reason"], o["decided_by"]) for o in outcomes}) == 1, outcomes  # one decision
    assert "agreement" in outcomes[0]["reason"]
    assert failures == [] and seen == {1}  # no client request failed, every answer came from the current version
    assert rs.versions() == [1, 1, 1]

    grown = _stage(rs.urls[2], GROW)
    spec = {"candidate": grown, "canary": 0.3, "gates": {"min_requests": 60, "max_error_rate": 0.0}}
    assert httpx.put(f"{rs.urls[0]}/v1/models/digits/rollout", json=spec, headers=AUTH, timeout=30).status_code == 201
    stop, failures, seen, ts = _with_load(rs.urls)
    rs.converge(grown, 90)
    stop.set()
    for t in ts:
        t.join(30)
    outcomes = [_rollout(u) for u in rs.urls]
    assert all(o["state"] == "promoted" and o["promoted_as"] == grown for o in outcomes), outcomes
    assert failures == [] and {1, grown} <= seen


def test_a_sigkill_during_a_rollout_resumes_it_and_a_recorded_outcome_stands(tmp_path: Path) -> None:
    args = ["--model", "digits", "--admin-token", TOKEN, "--state-dir", str(tmp_path / "state")]
    server = ServerProcess(args, log=tmp_path / "1.log").wait_ready(120)
    candidate = _stage(server.url, GROW)
    spec = {"candidate": candidate, "canary": 1.0}
    started = httpx.put(f"{server.url}/v1/models/digits/rollout", json=spec, headers=AUTH, timeout=30).json()
    assert httpx.post(f"{server.url}/v1/models/digits/infer", json={"inputs": X}).json()["model_version"] == candidate
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait()
    server = ServerProcess(args, log=tmp_path / "2.log", port=server.port).wait_ready(120)
    resumed = _rollout(server.url)
    assert resumed["id"] == started["id"] and resumed["state"] == "running", resumed
    assert httpx.post(f"{server.url}/v1/models/digits/infer", json={"inputs": X}).json()["model_version"] == candidate
    r = httpx.post(f"{server.url}/v1/models/digits/rollout/promote", headers=AUTH, timeout=30)
    assert r.status_code == 200 and r.json()["state"] == "promoted", r.text
    server.proc.send_signal(signal.SIGKILL)  # right after the acknowledged promotion
    server.proc.wait()
    server = ServerProcess(args, log=tmp_path / "3.log", port=server.port).wait_ready(120)
    try:
        assert _rollout(server.url)["state"] == "promoted"
        assert httpx.get(f"{server.url}/v1/models/digits", timeout=10).json()["version"] == candidate
        assert (
            httpx.post(f"{server.url}/v1/models/digits/infer", json={"inputs": X}).json()["model_version"] == candidate
        )
    finally:
        server.stop()

"""The memory budget covers what runs (issue 24, item 4): the weights of every resident version and the activations of
the largest batch, sized before anything is allocated, refused with a 422 naming the bytes needed and allowed; a
restart never loads a model over the budget, and reports it.

Before: a model with no weights and an input of `[-1, 1048576, 256]` allocated 2.45 GB at create and at every
restart (its warm-up at full size), `[-1, 2^20, 2^20]` was a 500, and under `--max-model-bytes 300MB` five
replacements of a Linear(8192, 8192) left 1.93 GB resident.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.conftest import AUTH, TOKEN, ServerProcess
from tests.integration.helpers import X, assert_error


def _wide(name: str, shape: list[int], features: int | None = None) -> dict[str, Any]:
    """A model with one input of `shape` and no weights (a ReLU), or one Linear of `features` on a flat input."""
    if features is None:
        nodes = [{"id": "act", "layer": {"type": "ReLU"}, "inputs": ["x"]}]
    else:
        nodes = [
            {
                "id": "lin",
                "layer": {"type": "Linear", "in_features": features, "out_features": features},
                "inputs": ["x"],
            }
        ]
    return {
        "name": name,
        "spec": {
            "inputs": [{"name": "x", "datatype": "FP32", "shape": shape}],
            "nodes": nodes,
            "outputs": [{"name": "y", "node": nodes[0]["id"]}],
        },
    }


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize(
    "shape,rows",
    [([-1, 1 << 20, 256], 32), ([-1, 1 << 20, 1 << 20], 32), ([-1, 1 << 20, 256], 1)],
    ids=["2^20x256", "2^20x2^20", "2^20x256-one-row"],
)
def test_a_weightless_model_with_a_huge_input_is_refused_before_allocating(
    make_client: Callable[..., TestClient], shape: list[int], rows: int
) -> None:
    """Its activations at --max-batch-size rows are over the budget: 422 naming them, before the warm-up forward
    (the first real allocation) runs; `[-1, 2^20, 2^20]` is no longer a 500."""
    c = make_client(max_model_bytes=512 * 2**20, max_batch_size=rows)
    before = _maxrss_mib()
    r = c.post("/v1/models", headers=AUTH, json=_wide("wide", shape))
    body = assert_error(r, 422, "activations", "--max-model-bytes", f"{512 * 2**20:,}")
    assert body["activation_bytes"] >= rows * shape[1] * shape[2] * 4 and body["weights_bytes"] == 0
    assert body["needed_bytes"] > body["limit_bytes"] == 512 * 2**20
    assert _maxrss_mib() - before < 256  # nothing of it was allocated
    assert c.get("/v1/models/wide").status_code == 404


def test_the_budget_counts_every_resident_version(make_client: Callable[..., TestClient], tmp_path: Path) -> None:
    """Linear(2048, 2048) holds 16 MiB. Under a 40 MiB budget a replacement beside the version it replaces fits
    (32 MiB); a second, beside the two resident ones, does not (48 MiB). With --resident-versions 2 only the
    current version stays beside a new one, and every replacement fits."""
    budget = 40 * 2**20
    replace = {"op": "replace", "node": "lin", "layer": {"type": "Linear", "in_features": 2048, "out_features": 2048}}
    c = make_client(max_model_bytes=budget, resident_versions=4, models=[])
    assert c.post("/v1/models", headers=AUTH, json=_wide("big", [-1, 2048], 2048)).status_code == 201
    assert c.post("/v1/models/big/edits", headers=AUTH, json={"ops": [replace]}).status_code == 200
    body = assert_error(
        c.post("/v1/models/big/edits", headers=AUTH, json={"ops": [replace]}), 422, "resident", f"{budget:,}"
    )
    assert body["needed_bytes"] >= 3 * 2048 * 2049 * 4
    assert c.get("/v1/models/big").json()["version"] == 2
    two = make_client(max_model_bytes=budget, resident_versions=2, models=[], state_dir=tmp_path / "two")
    assert two.post("/v1/models", headers=AUTH, json=_wide("big", [-1, 2048], 2048)).status_code == 201
    for version in (2, 3, 4):
        r = two.post("/v1/models/big/edits", headers=AUTH, json={"ops": [replace]})
        assert r.status_code == 200 and r.json()["version"] == version, r.text


def test_the_budget_counts_activations_of_an_edit(make_client: Callable[..., TestClient]) -> None:
    """An edit that widens what flows through the model (a Linear(64, 65536) after fc3's input) is refused for its
    activations at --max-batch-size rows, though its weights would fit."""
    c = make_client(max_model_bytes=24 * 2**20, max_batch_size=64)
    widen = {
        "op": "insert",
        "after": "relu2",
        "layer": {"type": "Linear", "in_features": 64, "out_features": 65536},
    }
    narrow = {"op": "replace", "node": "fc3", "layer": {"type": "Linear", "in_features": 65536, "out_features": 10}}
    r = c.post("/v1/models/digits/edits", headers=AUTH, json={"ops": [widen, narrow], "dry_run": True})
    body = assert_error(r, 422, "activations", "64 rows")
    assert body["activation_bytes"] >= 64 * 65536 * 4
    assert c.post("/v1/models/digits/infer", json={"inputs": X[:1].tolist()}).json()["model_version"] == 1


def _status(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(key)


def test_replacing_a_big_linear_under_300_mb_is_refused_before_allocating(
    start_server: Callable[..., ServerProcess],
) -> None:
    """--max-model-bytes 300MB and a Linear(8192, 8192) (256 MiB): every replacement would keep two of them (the
    current version stays resident), so each is refused, and the server's peak RSS does not move."""
    server = start_server("--model", "digits", "--admin-token", TOKEN, "--no-fsync", "--max-model-bytes", "300000000")
    replace = {"op": "replace", "node": "lin", "layer": {"type": "Linear", "in_features": 8192, "out_features": 8192}}
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=120) as c:
        assert c.post("/v1/models", json=_wide("big", [-1, 8192], 8192)).status_code == 201
        held = _status(server.proc.pid, "VmHWM")
        for _ in range(5):
            r = c.post("/v1/models/big/edits", json={"ops": [replace]})
            assert_error(r, 422, "300,000,000", "--max-model-bytes")
        assert _status(server.proc.pid, "VmHWM") - held < 64, "an edit allocated its layer before being refused"
        assert c.get("/v1/models/big").json()["version"] == 1


def test_a_restart_reports_a_model_over_the_budget_and_serves_the_others(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """A model whose activations at 32 rows are 1 GiB, created under the default budget; restarted with 100 MB, the
    server starts, serves digits, does not load that model (no allocation: peak RSS as with digits alone) and
    reports it: readiness 503 naming it."""
    state = str(tmp_path / "shared-state")
    first = start_server("--model", "digits", "--admin-token", TOKEN, "--no-fsync", "--state-dir", state)
    r = httpx.post(f"{first.url}/v1/models", headers=AUTH, json=_wide("wide", [-1, 4096, 1024]), timeout=60)
    assert r.status_code == 201, r.text
    first.stop()
    again = start_server(
        "--model", "digits", "--admin-token", TOKEN, "--state-dir", state, "--max-model-bytes", "100000000", ready=False
    )
    deadline = time.monotonic() + 60
    while True:  # live, never ready: it reports the model it could not load
        assert again.proc.poll() is None, again.logs()
        try:
            if httpx.get(f"{again.url}/v2/health/live", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, again.logs()
        time.sleep(0.1)
    url = again.url
    ready = httpx.get(f"{url}/v2/health/ready")
    body = assert_error(ready, 503, "wide")
    assert body["ready"] is False
    assert httpx.post(f"{url}/v1/models/digits/infer", json={"inputs": X[:1].tolist()}).status_code == 200
    assert httpx.get(f"{url}/v1/models/wide").status_code == 404
    assert "--max-model-bytes" in again.logs() and "wide" in again.logs()
    assert _status(again.proc.pid, "VmHWM") < 1024, "the model over the budget was loaded"

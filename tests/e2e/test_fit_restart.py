"""A fit job whose server is SIGKILLed: after a restart it is reported failed, and no half-trained version exists."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import numpy as np
from safetensors.numpy import save

from tests.conftest import AUTH, TOKEN, ServerProcess


def test_a_killed_server_fails_its_running_job_and_leaves_no_version(tmp_path: Path) -> None:
    args = ["--model", "digits", "--admin-token", TOKEN, "--state-dir", str(tmp_path / "state")]
    server = ServerProcess(args, log=tmp_path / "1.log").wait_ready(120)
    rng = np.random.default_rng(0)
    body = save({"input": rng.random((200, 64), dtype=np.float32), "labels": rng.integers(0, 10, 200)})
    headers = {**AUTH, "Content-Type": "application/octet-stream"}
    assert httpx.put(f"{server.url}/v1/models/digits/datasets/train", content=body, headers=headers).status_code == 201
    spec = {"train": ["fc3"], "dataset": "train", "steps": 10_000}
    job = httpx.post(f"{server.url}/v1/models/digits/fit", json=spec, headers=AUTH, timeout=30).json()
    deadline = time.monotonic() + 30
    while httpx.get(f"{server.url}/v1/models/digits/jobs/{job['id']}").json()["step"] < 20:
        assert time.monotonic() < deadline, "the job does not step"
        time.sleep(0.05)
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait()
    server = ServerProcess(args, log=tmp_path / "2.log", port=server.port).wait_ready(120)
    try:
        deadline = time.monotonic() + 20
        while (record := httpx.get(f"{server.url}/v1/models/digits/jobs/{job['id']}").json())["state"] == "running":
            assert time.monotonic() < deadline, record
            time.sleep(0.2)
        assert record["state"] == "failed" and "stopped" in record["error"] and record["version"] is None, record
        info = httpx.get(f"{server.url}/v1/models/digits").json()
        assert (info["version"], info["latest"]) == (1, 1)  # nothing half-trained was committed
        again = httpx.post(f"{server.url}/v1/models/digits/fit", json={**spec, "steps": 5}, headers=AUTH, timeout=30)
        assert again.status_code == 201, again.text  # the dead job no longer blocks the model
    finally:
        server.stop()

"""KServe's gRPC client (kserve.InferenceGRPCClient) against a real `morphserve serve --grpc-port`: health, model
readiness, raw and typed tensors, versions, min_version and errors, as in the HTTP and tritonclient scenarios
(tests/e2e/test_triton_protocols.py). The client runs in a process of its own (kserve_probe.py says why)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from tests.conftest import ROOT, free_port, serve_module
from tests.integration.helpers import reference

GRPC_PORT = free_port()
X = np.random.default_rng(0).random((3, 64), dtype=np.float32)  # the probe's input


@pytest.fixture(scope="module")
def seen(tmp_path_factory: pytest.TempPathFactory) -> Any:
    for server in serve_module(tmp_path_factory, "--model", "digits", "--grpc-port", str(GRPC_PORT)):
        r = subprocess.run(
            [sys.executable, str(ROOT / "tests" / "e2e" / "kserve_probe.py"), f"127.0.0.1:{GRPC_PORT}"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        assert r.returncode == 0, (r.stderr[-3000:], server.logs())
        return json.loads(r.stdout.strip().splitlines()[-1])
    raise AssertionError("the server never started")


def test_health_and_readiness(seen: Any) -> None:
    assert seen["live"] and seen["ready"] and seen["model_ready"]
    assert seen["unknown_ready"] is False


def test_raw_and_typed_tensors_give_the_reference(seen: Any) -> None:
    want = reference(X)
    np.testing.assert_allclose(np.array(seen["raw"]["output"]), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.array(seen["typed"]), want, rtol=1e-5, atol=1e-6)
    assert seen["raw"]["id"] == "req-1" and seen["raw"]["version"] == "1"


def test_versions_and_min_version(seen: Any) -> None:
    assert seen["versioned"] == "1" and seen["min_version"] == "1"
    assert seen["unknown_version"]["code"] == "NOT_FOUND" and "no version 9" in seen["unknown_version"]["message"]


def test_errors_are_status_codes(seen: Any) -> None:
    assert seen["bad_shape"]["code"] == "INVALID_ARGUMENT"
    assert "expected shape [-1, 64]" in seen["bad_shape"]["message"]
    assert seen["unknown_model"]["code"] == "NOT_FOUND" and "'nope'" in seen["unknown_model"]["message"]

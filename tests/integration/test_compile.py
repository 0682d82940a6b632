"""`--compile` through the app: a model created with its own compile mode serves at once and then compiled, its status
says so, the Triton config names the mode, and the mode survives a restart (journalled with the model).

The compiler's backend is dynamo's `eager` here (the whole background path in about a second); inductor itself is
tests/unit/serving/test_compile.py's slow test."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from morphserve.serving.registry import Registry
from tests.conftest import AUTH
from tests.integration.helpers import X, assert_error, reference


def _registry(client: TestClient) -> Registry:
    registry: Registry = client.app.state.registry  # type: ignore[attr-defined]
    return registry


def test_a_model_created_with_its_own_compile_mode_serves_compiled_and_keeps_the_mode(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    client = make_client(state_dir=tmp_path / "state")
    _registry(client).compiler.backend = "eager"
    r = client.post("/v1/models", json={"name": "d2", "zoo": "digits", "compile": "default"}, headers=AUTH)
    assert r.status_code == 201, r.text
    assert r.json()["compile"]["state"] in ("queued", "compiling", "serving")
    state = _registry(client).compiler.wait("d2", 1, 60)
    assert state is not None and state.state == "serving", state
    info = client.get("/v1/models/d2").json()["compile"]
    assert info["mode"] == "default" and info["version"] == 1 and info["edit_to_compiled_s"] > 0
    out = client.post("/v1/models/d2/infer", json={"inputs": X.tolist()}).json()["outputs"]
    np.testing.assert_allclose(np.array(out), reference(), rtol=1e-5, atol=1e-6)
    assert client.get("/v2/models/d2/config").json()["parameters"]["compile"] == {"string_value": "default"}
    assert client.get("/v1/models/digits").json()["compile"] is None  # the server's mode is off
    client.__exit__(None, None, None)

    again = make_client(state_dir=tmp_path / "state")
    assert _registry(again).compiler.mode_of("d2") == "default"
    assert _registry(again).compiler.mode_of("digits") == "off"


def test_a_bad_compile_mode_is_refused(client: TestClient) -> None:
    r = client.post("/v1/models", json={"name": "d3", "zoo": "digits", "compile": "fast"}, headers=AUTH)
    assert_error(r, 422, "compile")

"""Helpers shared by the integration tests: fixed inputs, reference outputs, error-shape checks, edit ops,
and an in-process async harness (httpx.AsyncClient over the ASGI app with the registry built beforehand)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

from app.client import AsyncClient
from app.graph import load_zoo
from app.main import create_app
from app.serving.metrics import Metrics
from app.serving.registry import Registry
from app.settings import Settings
from tests.conftest import AUTH, TOKEN

X = np.random.default_rng(0).random((3, 64), dtype=np.float32)
_REF: dict[str, np.ndarray] = {}


def reference(x: np.ndarray = X) -> np.ndarray:
    """What version 1 of `digits` computes on `x` (the shipped weights, straight through torch)."""
    return load_zoo("digits").run(torch.from_numpy(np.ascontiguousarray(x)))[0].numpy()


def assert_error(resp: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    """`resp` has `status` and the one error shape, JSON `{"error": "<message>", ...}` mentioning `words`."""
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    body = resp.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], body
    for w in words:
        assert w.lower() in body["error"].lower(), (w, body)
    return body


def head_ops(const: float) -> list[dict[str, Any]]:
    """set_weights on digits' fc3: weight zero, bias `const` -> every logit of every row equals `const`."""
    return [{"op": "set_weights", "node": "fc3", "tensors": {
        "weight": {"shape": [10, 64], "data": [0.0] * 640},
        "bias": {"shape": [10], "data": [float(const)] * 10},
    }}]  # fmt: skip


def v1_body(x: np.ndarray = X) -> dict[str, Any]:
    return {"inputs": x.tolist()}


def identity_insert(after: str = "relu1", name: str | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"op": "insert", "after": after, "layer": {"type": "Identity"}}
    if name:
        op["name"] = name
    return op


@asynccontextmanager
async def served(tmp_path: Path, **overrides: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Registry]]:
    """The real app over httpx's ASGI transport, registry loaded up front (the transport runs no lifespan)."""
    async with served_with_binary(tmp_path, **overrides) as (client, _binary, registry):
        yield client, registry


@asynccontextmanager
async def served_with_binary(
    tmp_path: Path, **overrides: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, AsyncClient, Registry]]:
    """As `served`, plus app.client's binary-OIP AsyncClient over the same app."""
    values: dict[str, Any] = {"models": ["digits"], "admin_token": TOKEN, "state_dir": tmp_path / "state"}
    values.update(overrides)
    settings = Settings(**values)
    registry = Registry(settings, Metrics())
    registry.load_from_settings()
    app = create_app(settings, registry)
    try:
        async with (
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test", headers=AUTH,
                              timeout=60) as client,
            AsyncClient("http://test", token=TOKEN, timeout=60, transport=httpx.ASGITransport(app=app)) as binary,
        ):  # fmt: skip
            yield client, binary, registry
    finally:
        registry.close()

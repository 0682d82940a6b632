"""Helpers shared by the integration tests: fixed inputs, reference outputs, error-shape checks, edit ops,
and an in-process async harness (httpx.AsyncClient over the ASGI app with the registry built beforehand)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

from morphserve.client import AsyncClient
from morphserve.graph import load_zoo
from morphserve.main import create_app
from morphserve.serving.metrics import Metrics
from morphserve.serving.registry import Registry
from morphserve.settings import Settings
from tests.conftest import AUTH, TOKEN, free_port

X = np.random.default_rng(0).random((3, 64), dtype=np.float32)
WAIT = 30.0  # seconds; a wait on an event or a future that only a broken server reaches
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
    return [
        {
            "op": "set_weights",
            "node": "fc3",
            "tensors": {
                "weight": {"shape": [10, 64], "data": [0.0] * 640},
                "bias": {"shape": [10], "data": [float(const)] * 10},
            },
        }
    ]


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
    """As `served`, plus morphserve.client's binary-OIP AsyncClient over the same app."""
    values: dict[str, Any] = {"models": ["digits"], "admin_token": TOKEN, "state_dir": tmp_path / "state"}
    values.update(overrides)
    settings = Settings(**values)
    registry = Registry(settings, Metrics())
    registry.load_from_settings()
    app = create_app(settings, registry)
    try:
        async with (
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://test", headers=AUTH, timeout=60
            ) as client,
            AsyncClient("http://test", token=TOKEN, timeout=60, transport=httpx.ASGITransport(app=app)) as binary,
        ):
            yield client, binary, registry
    finally:
        registry.close()


class Gate:
    """A version's runnable that blocks the worker inside a batch until `release()`.

    Swapped in with `hold(registry)`, it holds the device worker on an event instead of a long batch delay: while
    it is closed, the batch in flight stays in flight and everything sent afterwards waits in the queue, for as long
    as the test needs and no longer. It records the rows of every batch it runs (`batches`). With `poison`, a batch
    holding a row whose first value is `poison` raises, as a model that cannot compute on one request's input.
    """

    def __init__(self, runnable: Any, poison: float | None = None) -> None:
        self.runnable = runnable
        self.poison = poison
        self.batches: list[int] = []
        self.entered = threading.Event()  # a batch is inside the model
        self._open = threading.Event()

    def release(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._open.clear()
        self.entered.clear()

    def wait_entered(self) -> None:
        assert self.entered.wait(WAIT), "no batch reached the model"

    def __call__(self, *inputs: torch.Tensor) -> Sequence[torch.Tensor]:
        self.batches.append(int(inputs[0].shape[0]))
        self.entered.set()
        assert self._open.wait(WAIT), "the test never released the worker"
        if self.poison is not None and bool((inputs[0][:, 0] == self.poison).any()):
            raise RuntimeError(f"the model cannot compute on a row starting with {self.poison}")
        return self.runnable(*inputs)  # type: ignore[no-any-return]


def hold(registry: Registry, model: str = "digits", poison: float | None = None) -> Gate:
    """Route the current version of `model` through a closed Gate (release it to let batches run)."""
    served_model = registry.get(model)
    current = served_model.current()
    runnable = served_model.residency.runnable(current.version)
    assert runnable is not None
    gate = Gate(runnable, poison)
    served_model.worker.swap(current, gate).result(WAIT)
    return gate


async def until(cond: Callable[[], bool], what: str) -> None:
    """Wait (polling, without blocking the event loop) until `cond()` holds; fail after WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.002)


class _NoLifespan:
    """The app with the ASGI lifespan answered here: the registry belongs to the test, not to the server."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            return await self.app(scope, receive, send)
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return None


@contextmanager
def threaded_server(tmp_path: Path, **overrides: Any) -> Iterator[tuple[str, Registry]]:
    """A real uvicorn server on a loopback port, in a thread of this process, and its registry: real sockets and
    real disconnects, with the worker in reach of the test (to hold it with a Gate, to read its queue)."""
    import uvicorn

    values: dict[str, Any] = {"models": ["digits"], "admin_token": TOKEN, "state_dir": tmp_path / "state"}
    values.update(overrides)
    settings = Settings(**values)
    registry = Registry(settings, Metrics())
    registry.load_from_settings()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            _NoLifespan(create_app(settings, registry)),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
        )
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + WAIT
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the threaded server did not start"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}", registry
    finally:
        server.should_exit = True
        thread.join(WAIT)
        registry.close()

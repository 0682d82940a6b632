"""Serving a real (small) model in-process without the registry: a store in memory, a residency whose versions are
placed on the CPU, and a started device worker. For the tests of the pipeline, inference and replication, where
the model is real but the registry is not the point."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np
import torch

from morphserve.serving.served import ServedModel
from morphserve.serving.worker import InferItem, InferResult
from morphserve.store import Store
from morphserve.store.memory import MemoryBlobs, MemoryJournal

WAIT = 10.0  # seconds; a wait on a future that only a broken worker reaches
CPU = torch.device("cpu")
#: serve(first, store=..., capacity=..., prepare=..., incarnation=..., metrics=...) -> a started ServedModel.
ServeFactory = Callable[..., ServedModel]
X = np.random.default_rng(0).random((3, 64), dtype=np.float32)


def memory_store() -> Store:
    return Store(MemoryJournal(), MemoryBlobs())


def head_ops(const: float) -> list[dict[str, Any]]:
    """set_weights on digits' fc3: weight zero, bias `const`, so every logit of every row equals `const`."""
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


def run(served: ServedModel, x: np.ndarray = X, version: int | None = None) -> InferResult:
    """One request through the served model's worker, waited for."""
    fut: Future[InferResult] = Future()

    def deliver(r: InferResult | BaseException) -> None:
        if isinstance(r, BaseException):
            fut.set_exception(r)
        else:
            fut.set_result(r)

    served.worker.submit(InferItem((torch.from_numpy(x),), version, deliver))
    return fut.result(WAIT)

"""Serving a real (small) model in-process without the registry: a store in memory, a residency whose versions are
placed on the CPU, and a started device worker. For the tests of the pipeline, inference and replication, where
the model is real but the registry is not the point."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future

import numpy as np
import torch

from morphserve.graph import ModelVersion, from_spec, parse_spec
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


def two_inputs() -> ModelVersion:
    """y = relu(a) + n, with a variable second dimension on `a` and an INT64 input `n`: a signature with two
    inputs of different datatypes."""
    spec = parse_spec(
        {
            "name": "two",
            "inputs": [
                {"name": "a", "datatype": "FP32", "shape": [-1, -1]},
                {"name": "n", "datatype": "INT64", "shape": [-1, 1]},
            ],
            "outputs": [{"name": "y", "node": "sum"}],
            "nodes": [
                {"id": "relu", "layer": {"type": "ReLU"}, "inputs": ["a"]},
                {"id": "sum", "function": "add", "inputs": ["relu", "n"]},
            ],
        }
    )
    return from_spec(spec, None, name="two")


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

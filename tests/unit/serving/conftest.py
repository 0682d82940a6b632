"""The `serve` fixture: a real model served in-process without the registry (see helpers.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from morphserve.graph import ModelVersion
from morphserve.serving.metrics import Metrics
from morphserve.serving.placement import Placement
from morphserve.serving.residency import Residency, Runnable
from morphserve.serving.served import ServedModel
from morphserve.serving.worker import DeviceWorker
from morphserve.store import Store

from .helpers import CPU, ServeFactory


@pytest.fixture
def serve() -> Iterator[ServeFactory]:
    """Factory: `serve(first, store=..., capacity=4, prepare=None, incarnation=None)` -> a started ServedModel whose
    residency loads evicted versions from `store` (when given) and places versions on the CPU (or with `prepare`).
    Every worker is stopped after the test."""
    workers: list[DeviceWorker] = []

    def factory(
        first: ModelVersion,
        *,
        store: Store | None = None,
        capacity: int = 4,
        prepare: Callable[[ModelVersion], Runnable] | None = None,
        incarnation: str | None = None,
        metrics: Metrics | None = None,
    ) -> ServedModel:
        placement = Placement(CPU)
        place = prepare or placement.prepare

        def load(n: int) -> ModelVersion:
            assert store is not None, "this test serves without a store: nothing can be reloaded"
            return store.load(first.model, n, previous=residency.current())

        residency: Residency[ModelVersion] = Residency(
            first.model, first, place(first), capacity=capacity, prepare=place, load=load, on_evict=placement.retain
        )
        worker = DeviceWorker(
            residency, CPU, max_batch_size=8, max_batch_delay_s=0.0, max_queue=64, metrics=metrics or Metrics()
        )
        worker.start()
        workers.append(worker)
        return ServedModel(residency, worker, incarnation=incarnation)

    yield factory
    for w in workers:
        w.stop()

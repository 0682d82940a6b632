"""Triton's statistics as the worker and the registry count them: rows and forwards, each request charged its batch's
durations, per batch size, per version, live traffic only; and the worker's `replace` (a version's compiled runnable
installed between two batches)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future

import pytest
import torch

from morphserve.serving.metrics import Metrics
from morphserve.serving.residency import Residency
from morphserve.serving.stats import DURATIONS, ModelStats
from morphserve.serving.worker import DeviceWorker, InferItem, InferResult

WAIT = 10.0


class Gate:
    """y = x * scale; `hold()` keeps the next forward on the worker thread until `release()`."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale
        self.entered = threading.Event()
        self._open = threading.Event()
        self._open.set()
        self.calls = 0

    def hold(self) -> None:
        self._open.clear()
        self.entered.clear()

    def release(self) -> None:
        self._open.set()

    def __call__(self, x: torch.Tensor) -> Sequence[torch.Tensor]:
        self.calls += 1
        self.entered.set()
        assert self._open.wait(WAIT)
        return (x * self.scale,)


class V:
    def __init__(self, version: int) -> None:
        self.version = version


def _item(n: int, lane: str = "live", start: float = 0.0) -> tuple[InferItem, Future[InferResult]]:
    fut: Future[InferResult] = Future()

    def deliver(r: InferResult | BaseException) -> None:
        (fut.set_exception if isinstance(r, BaseException) else fut.set_result)(r)  # type: ignore[operator]

    rows = torch.arange(start, start + n * 4, dtype=torch.float32).reshape(n, 4)
    return InferItem((rows,), None, deliver, lane=lane), fut


@pytest.fixture
def worker() -> Iterator[tuple[DeviceWorker, Gate]]:
    gate = Gate()
    residency = Residency("m", V(1), gate, capacity=4, prepare=lambda v: gate, load=V)
    w = DeviceWorker(
        residency, torch.device("cpu"), max_batch_size=8, max_batch_delay_s=0.0, max_queue=64, metrics=Metrics()
    )
    w.start()
    yield w, gate
    gate.release()
    w.stop()


def test_a_batch_counts_rows_forwards_and_charges_each_request_its_batchs_durations(worker) -> None:  # type: ignore[no-untyped-def]
    w, gate = worker
    gate.hold()
    first, f0 = _item(1)
    w.submit(first)
    assert gate.entered.wait(WAIT)
    queued = [_item(2), _item(3)]  # these two wait, then run as one batch of 5 rows
    for item, _ in queued:
        w.submit(item)
    gate.release()
    for _, f in [(first, f0), *queued]:
        f.result(WAIT)
    view = w.stats.view(1)
    assert view is not None
    assert view["inference_count"] == 6 and view["execution_count"] == 2
    stats = view["inference_stats"]
    assert set(stats) == set(DURATIONS)
    assert stats["queue"]["count"] == 3 and stats["compute_infer"]["count"] == 3
    batches = {b["batch_size"]: b for b in view["batch_stats"]}
    assert sorted(batches) == [1, 5]
    assert batches[5]["compute_infer"]["count"] == 1
    # The batch of 5 rows held two requests: each is charged the batch's forward.
    assert stats["compute_infer"]["ns"] == batches[1]["compute_infer"]["ns"] + 2 * batches[5]["compute_infer"]["ns"]
    assert stats["queue"]["ns"] > 0  # the two queued requests waited for the held forward
    assert stats["success"]["count"] == 0  # outcomes are the registry's to count


def test_background_work_is_not_counted(worker) -> None:  # type: ignore[no-untyped-def]
    w, _ = worker
    item, fut = _item(2, lane="job")
    assert w.submit_background(item)
    fut.result(WAIT)
    assert w.stats.view(1) is None


def test_outcomes_per_version_and_the_table_stays_bounded() -> None:
    stats = ModelStats(keep=3)
    stats.request(1, 1000, True)
    stats.request(1, 500, False)
    v1 = stats.view(1)
    assert v1 is not None and v1["inference_stats"]["success"] == {"count": 1, "ns": 1000}
    assert v1["inference_stats"]["fail"] == {"count": 1, "ns": 500} and v1["last_inference"] > 0
    for v in (2, 3, 4):
        stats.request(v, 1, True)
    assert stats.versions() == [2, 3, 4]  # the oldest version's statistics went


def test_replace_installs_another_runnable_between_batches_for_the_same_version(worker) -> None:  # type: ignore[no-untyped-def]
    w, gate = worker
    gate.hold()
    first, f0 = _item(1, start=1.0)
    w.submit(first)
    assert gate.entered.wait(WAIT)
    compiled = Gate(scale=10.0)
    done = w.replace(1, compiled)
    after, f1 = _item(1, start=1.0)
    w.submit(after)
    gate.release()
    assert done.result(WAIT) is True
    r0, r1 = f0.result(WAIT), f1.result(WAIT)
    assert r0.version == r1.version == 1
    assert float(r0.outputs[0][0, 0]) == 1.0  # the batch in flight finished on the eager runnable
    assert float(r1.outputs[0][0, 0]) == 10.0  # the next ran the replacement
    assert w.residency.current_version() == 1 and compiled.calls == 1


def test_replace_of_a_version_no_longer_resident_is_refused(worker) -> None:  # type: ignore[no-untyped-def]
    w, _ = worker
    assert w.replace(7, Gate()).result(WAIT) is False

"""The device worker on its own, with a fake runnable: batching, swaps between batches, cancel, failure isolation.

The fake holds the worker thread on an event instead of relying on delays, so every test is deterministic and
fast; the only waits are on events and futures, with generous timeouts that a correct worker never reaches.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future

import pytest
import torch

from morphserve.serving.errors import BadInputError, QueueFullError, UnavailableError
from morphserve.serving.metrics import Metrics
from morphserve.serving.residency import Residency
from morphserve.serving.worker import DeviceWorker, DroppedError, InferItem, InferResult, Slice

WAIT = 10.0  # seconds; only reached when the worker is broken


class FakeModel:
    """y = x * scale + version marker; records each batch; `hold()` blocks the next call until `release()`."""

    def __init__(self, scale: float = 1.0, fail_on: float | None = None) -> None:
        self.scale = scale
        self.fail_on = fail_on
        self.batches: list[int] = []
        self.inputs: list[float] = []  # the first value of each batch
        self.entered = threading.Event()
        self._gate = threading.Event()
        self._gate.set()

    def hold(self) -> None:
        self._gate.clear()
        self.entered.clear()

    def release(self) -> None:
        self._gate.set()

    def __call__(self, x: torch.Tensor) -> Sequence[torch.Tensor]:
        self.batches.append(int(x.shape[0]))
        self.inputs.append(float(x.reshape(-1)[0]))
        self.entered.set()
        assert self._gate.wait(WAIT), "the test never released the worker"
        if self.fail_on is not None and bool((x == self.fail_on).any()):
            raise ValueError("cannot compute on this value")
        return (x * self.scale,)


class V:
    """A version as residency sees it: a number."""

    def __init__(self, version: int) -> None:
        self.version = version


def _item(rows: torch.Tensor, version: int | None = None, lane: str = "live") -> tuple[InferItem, Future[InferResult]]:
    fut: Future[InferResult] = Future()

    def deliver(r: InferResult | BaseException) -> None:
        if isinstance(r, BaseException):
            fut.set_exception(r)
        else:
            fut.set_result(r)

    return InferItem((rows,), version, deliver, lane=lane), fut


@pytest.fixture
def make_worker() -> Iterator[Callable[..., tuple[DeviceWorker, FakeModel]]]:
    workers: list[DeviceWorker] = []
    models: list[FakeModel] = []

    def factory(model: FakeModel | None = None, **kw: float) -> tuple[DeviceWorker, FakeModel]:
        opts = {"max_batch_size": 8, "max_batch_delay_s": 0.0, "max_queue": 64, **kw}
        fake = model or FakeModel()
        residency = Residency("m", V(1), fake, capacity=4, prepare=lambda v: fake, load=V)
        w = DeviceWorker(residency, torch.device("cpu"), metrics=Metrics(), **opts)  # type: ignore[arg-type]
        w.start()
        workers.append(w)
        models.append(fake)
        return w, fake

    yield factory
    for m in models:
        m.release()
    for w in workers:
        w.stop()


def _rows(start: float, n: int = 1, width: int = 4) -> torch.Tensor:
    return torch.arange(start, start + n * width, dtype=torch.float32).reshape(n, width)


def _occupy(w: DeviceWorker, fake: FakeModel) -> Future[InferResult]:
    """Put one request on the worker and hold it there, so that what is submitted next queues up."""
    fake.hold()
    item, fut = _item(_rows(-100))
    w.submit(item)
    assert fake.entered.wait(WAIT)
    return fut


def test_queued_requests_form_batches_up_to_max_size_each_getting_its_own_rows(make_worker) -> None:  # type: ignore[no-untyped-def]
    w, fake = make_worker(max_batch_size=4)
    first = _occupy(w, fake)
    items = [_item(_rows(10.0 * i, n=1)) for i in range(10)]
    for item, _ in items:
        w.submit(item)
    fake.release()
    for i, (_, fut) in enumerate(items):
        r = fut.result(WAIT)
        assert r.version == 1 and torch.equal(torch.from_numpy(r.outputs[0]), _rows(10.0 * i))
    first.result(WAIT)
    assert fake.batches == [1, 4, 4, 2]


def test_requests_batch_only_with_the_same_trailing_shape_and_version(make_worker) -> None:  # type: ignore[no-untyped-def]
    w, fake = make_worker()
    w.residency.install(V(2), fake)  # version 2 resident beside the current version 1
    first = _occupy(w, fake)
    a, fa = _item(_rows(0, width=4))
    b, fb = _item(_rows(100, width=6))  # another trailing shape
    c, fc = _item(_rows(200, width=4), version=2)  # another version
    d, fd = _item(_rows(300, width=4))
    for it in (a, b, c, d):
        w.submit(it)
    fake.release()
    results = [f.result(WAIT) for f in (fa, fb, fc, fd)]
    first.result(WAIT)
    assert fake.batches == [1, 2, 1, 1]  # a+d together; b alone; c alone
    assert [r.version for r in results] == [1, 1, 2, 1]
    assert torch.equal(torch.from_numpy(results[3].outputs[0]), _rows(300))


def test_a_lone_request_on_an_idle_worker_runs_at_once(make_worker) -> None:  # type: ignore[no-untyped-def]
    """No wait for a batch that nothing is about to fill: with a 60 s delay allowed, a waiting worker would not
    answer within WAIT."""
    w, fake = make_worker(max_batch_size=32, max_batch_delay_s=60.0)
    for i in range(3):  # one at a time, like a single client
        item, fut = _item(_rows(i))
        w.submit(item)
        assert fut.result(WAIT).version == 1
    assert fake.batches == [1, 1, 1]


def test_under_a_stream_a_batch_waits_to_fill(make_worker) -> None:  # type: ignore[no-untyped-def]
    """Requests arriving fast (here: three within microseconds) predict the missing one within the delay: the batch
    of three waits for the fourth instead of running short."""
    w, fake = make_worker(max_batch_size=4, max_batch_delay_s=60.0)
    first = _occupy(w, fake)
    items = [_item(_rows(10.0 * i)) for i in range(3)]
    for item, _ in items:
        w.submit(item)
    fake.release()
    first.result(WAIT)
    for _ in range(1000):  # the worker has taken the three and is waiting for a fourth
        if w.queue_depth() == 0:
            break
        threading.Event().wait(0.01)
    assert w.queue_depth() == 0 and fake.batches == [1] and not items[0][1].done()
    last, flast = _item(_rows(30.0))
    w.submit(last)
    for i, (_, fut) in enumerate([*items, (last, flast)]):
        assert torch.equal(torch.from_numpy(fut.result(WAIT).outputs[0]), _rows(10.0 * i))
    assert fake.batches == [1, 4]


def test_no_delay_means_never_waiting(make_worker) -> None:  # type: ignore[no-untyped-def]
    w, fake = make_worker(max_batch_size=4, max_batch_delay_s=0.0)
    first = _occupy(w, fake)
    items = [_item(_rows(i)) for i in range(3)]
    for item, _ in items:
        w.submit(item)
    fake.release()
    for _, fut in items:
        fut.result(WAIT)
    first.result(WAIT)
    assert fake.batches == [1, 3]


def test_a_swap_goes_ahead_of_queued_requests(make_worker) -> None:  # type: ignore[no-untyped-def]
    w, fake = make_worker()
    first = _occupy(w, fake)
    queued = [_item(_rows(i)) for i in range(3)]
    for item, _ in queued:
        w.submit(item)
    v2 = FakeModel(scale=2.0)
    swapped = w.swap(V(2), v2)
    fake.release()
    swapped.result(WAIT)
    assert first.result(WAIT).version == 1  # the batch in flight finishes on the old version
    for i, (_, fut) in enumerate(queued):
        r = fut.result(WAIT)
        assert r.version == 2 and torch.equal(torch.from_numpy(r.outputs[0]), _rows(i) * 2)
    assert w.residency.resident_versions() == [1, 2] and w.residency.current_version() == 2


def test_cancel_gives_the_queue_slot_back_and_the_request_never_runs(make_worker) -> None:  # type: ignore[no-untyped-def]
    w, fake = make_worker(max_queue=2)
    first = _occupy(w, fake)
    a, fa = _item(_rows(1))
    b, fb = _item(_rows(2))
    w.submit(a)
    w.submit(b)
    with pytest.raises(QueueFullError):
        w.submit(_item(_rows(3))[0])
    w.cancel(a)
    assert w.queue_depth() == 1
    c, fc = _item(_rows(4))
    w.submit(c)
    fake.release()
    first.result(WAIT)
    assert fb.result(WAIT).version == 1 and fc.result(WAIT).version == 1
    assert not fa.done()
    assert fake.batches == [1, 2]


def test_a_failing_input_fails_alone(make_worker) -> None:  # type: ignore[no-untyped-def]
    w, fake = make_worker(FakeModel(fail_on=13.0))
    first = _occupy(w, fake)
    good1, f1 = _item(_rows(0))
    bad, fbad = _item(torch.full((1, 4), 13.0))
    good2, f2 = _item(_rows(20, n=2))
    for it in (good1, bad, good2):
        w.submit(it)
    fake.release()
    first.result(WAIT)
    assert torch.equal(torch.from_numpy(f1.result(WAIT).outputs[0]), _rows(0))
    assert torch.equal(torch.from_numpy(f2.result(WAIT).outputs[0]), _rows(20, n=2))
    with pytest.raises(BadInputError, match="cannot compute"):
        fbad.result(WAIT)
    assert fake.batches[:2] == [1, 4]  # the batch of three ran (and failed) once, then each request alone


def test_stop_fails_what_is_queued_and_finishes_what_runs(make_worker) -> None:  # type: ignore[no-untyped-def]
    w, fake = make_worker()
    first = _occupy(w, fake)
    queued, fq = _item(_rows(1))
    w.submit(queued)
    stopper = threading.Thread(target=w.stop)
    stopper.start()
    with pytest.raises(UnavailableError):
        fq.result(WAIT)
    fake.release()
    stopper.join(WAIT)
    assert first.result(WAIT).version == 1
    with pytest.raises(UnavailableError):
        w.submit(_item(_rows(2))[0])


# -- the background lane: shadow runs and jobs never hold live traffic up for long ----------------------------------
def test_a_shadow_run_is_refused_while_live_requests_wait_and_runs_when_the_worker_is_idle(make_worker) -> None:  # type: ignore[no-untyped-def]
    w, fake = make_worker()
    first = _occupy(w, fake)
    live, live_fut = _item(_rows(1))
    w.submit(live)
    shadow, _ = _item(_rows(2), version=1, lane="shadow")
    assert not w.submit_background(shadow)  # a live request waits: the copy is dropped at once
    fake.release()
    first.result(WAIT)
    live_fut.result(WAIT)
    idle, idle_fut = _item(_rows(3), version=1, lane="shadow")
    assert w.submit_background(idle)
    assert idle_fut.result(WAIT).version == 1


def test_a_queued_shadow_run_waits_for_live_traffic_and_is_dropped_when_too_old(make_worker) -> None:  # type: ignore[no-untyped-def]
    w, fake = make_worker(shadow_max_age_s=0.05)
    first = _occupy(w, fake)
    shadow, shadow_fut = _item(_rows(2), version=1, lane="shadow")
    assert w.submit_background(shadow)  # queued while the batch in flight runs (nothing else waits)
    live, live_fut = _item(_rows(1))
    w.submit(live)
    time.sleep(0.1)  # the shadow run ages past its limit while the worker is held (what is tested is its age)
    fake.release()
    first.result(WAIT)
    assert live_fut.result(WAIT).version == 1  # the live request went first
    with pytest.raises(DroppedError):
        shadow_fut.result(WAIT)
    assert fake.batches == [1, 1]  # the shadow never ran


def test_shadow_runs_go_in_small_slices(make_worker) -> None:  # type: ignore[no-untyped-def]
    w, fake = make_worker(max_batch_size=16, shadow_rows=2)
    first = _occupy(w, fake)
    futs = []
    for i in range(5):
        item, fut = _item(_rows(10 * i), version=1, lane="shadow")
        assert w.submit_background(item)
        futs.append(fut)
    fake.release()
    first.result(WAIT)
    for fut in futs:
        fut.result(WAIT)
    assert fake.batches == [1, 2, 2, 1]  # slices of at most 2 rows, not one batch of 5


def test_a_job_gets_slices_even_when_live_requests_always_wait(make_worker) -> None:  # type: ignore[no-untyped-def]
    w, fake = make_worker(max_batch_size=1, job_interval_s=0.0)
    first = _occupy(w, fake)
    lives = [_item(_rows(i)) for i in range(6)]
    for item, _ in lives:
        w.submit(item)
    job, job_fut = _item(_rows(99), version=1, lane="job")
    assert w.submit_background(job)
    fake.release()
    first.result(WAIT)
    assert job_fut.result(WAIT).version == 1
    for _, fut in lives:
        fut.result(WAIT)
    assert len(fake.batches) == 8
    # the job ran before the last live request: live traffic did not starve it
    assert fake.inputs.index(99.0) < fake.inputs.index(5.0)


@pytest.mark.parametrize("flowing", [True, False])
def test_background_takes_its_share_while_live_traffic_flows_and_all_the_time_when_idle(make_worker, flowing) -> None:  # type: ignore[no-untyped-def]
    """Closed-loop clients leave the queue empty between their batches: a job's slices must not fill every such gap
    (each one takes the interpreter from the event loop serving those clients), but may run back to back once no
    live batch has run for `live_window_s`."""
    w, _ = make_worker(job_share=0.5, job_interval_s=0.0, live_window_s=5.0 if flowing else 0.0)
    live, live_fut = _item(_rows(1))
    w.submit(live)
    live_fut.result(WAIT)  # a live batch just ended; the queue is empty
    took = 0.1
    spans: list[tuple[float, float]] = []
    done = threading.Event()

    def step() -> None:
        t0 = time.monotonic()
        time.sleep(took)
        spans.append((t0, time.monotonic()))
        if len(spans) == 2:
            done.set()

    assert w.submit_background(Slice(step)) and w.submit_background(Slice(step))
    assert done.wait(WAIT)
    pause = spans[1][0] - spans[0][1]
    if flowing:  # share 0.5: as long a pause as the slice took
        assert pause >= 0.9 * took, pause
    else:
        assert pause < took / 2, pause


def test_shadow_copies_beyond_what_could_run_are_refused_before_they_queue(make_worker) -> None:  # type: ignore[no-untyped-def]
    """Under load nearly every copy ages out: past `shadow_queue` waiting items, a copy is refused at once (and the
    event loop asks `takes_shadow` before it builds one)."""
    w, fake = make_worker(max_batch_size=8)
    first = _occupy(w, fake)  # a batch in flight, nothing live waiting: copies may queue
    futs = []
    for i in range(w.shadow_queue):
        assert w.takes_shadow()
        item, fut = _item(_rows(i), version=1, lane="shadow")
        assert w.submit_background(item)
        futs.append(fut)
    assert not w.takes_shadow()
    extra, _ = _item(_rows(99), version=1, lane="shadow")
    assert not w.submit_background(extra)
    fake.release()
    first.result(WAIT)
    for fut in futs:
        assert fut.result(WAIT).version == 1  # the ones that queued run once the worker is free
    assert w.takes_shadow()


@pytest.mark.parametrize("flowing", [True, False])
def test_a_jobs_items_run_one_at_a_time_while_live_traffic_flows(make_worker, flowing) -> None:  # type: ignore[no-untyped-def]
    """An evaluation's quarter batches merged into a full batch made a slice that a live request waited behind:
    merged only when no live traffic flows."""
    w, fake = make_worker(max_batch_size=8, job_share=1.0, job_interval_s=0.0, live_window_s=5.0 if flowing else 0.0)
    first = _occupy(w, fake)
    futs = []
    for i in range(3):
        item, fut = _item(_rows(10 * i, n=2), version=1, lane="job")
        assert w.submit_background(item)
        futs.append(fut)
    fake.release()
    first.result(WAIT)
    for fut in futs:
        fut.result(WAIT)
    assert fake.batches == ([1, 2, 2, 2] if flowing else [1, 6])

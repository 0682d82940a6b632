"""The inference path: inputs checked against the signature with errors that say what is wrong, versioned requests
that bring evicted versions back, the request timeout, and the retry when a version is evicted under a request."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import pytest
import torch

from morphserve.graph import ModelVersion, NotFoundError, apply_edit, load_zoo
from morphserve.serving.errors import BadInputError, InferenceTimeoutError, NotResidentError
from morphserve.serving.inference import Inference, prepare_inputs
from morphserve.serving.residency import Residency, Runnable
from morphserve.serving.served import ServedModel
from morphserve.serving.worker import DeviceWorker, InferItem, InferResult
from tests.integration.helpers import head_ops

from .helpers import ServeFactory, X, memory_store, two_inputs


@pytest.fixture(scope="module")
def two() -> ModelVersion:
    return two_inputs()


def _bad(arrays: dict[str, np.ndarray], version: ModelVersion) -> BadInputError:
    with pytest.raises(BadInputError) as e:
        prepare_inputs(version.model, arrays, version)
    return e.value


# -- prepare_inputs ---------------------------------------------------------------------------------------------
def test_inputs_come_out_in_signature_order_as_contiguous_tensors(two: ModelVersion) -> None:
    a = np.arange(12, dtype=np.float32).reshape(4, 3).T  # 3 rows, not contiguous
    n = np.array([[1], [2], [3]], dtype=np.int64)
    ta, tn = prepare_inputs("two", {"n": n, "a": a}, two)
    assert ta.is_contiguous() and torch.equal(ta, torch.from_numpy(np.ascontiguousarray(a)))
    assert tn.dtype == torch.int64 and torch.equal(tn, torch.tensor([[1], [2], [3]]))


def test_an_unknown_input_is_named_with_the_inputs_the_model_has(two: ModelVersion) -> None:
    a, n = np.zeros((1, 2), np.float32), np.zeros((1, 1), np.int64)
    e = _bad({"a": a, "n": n, "b": a}, two)
    assert e.message == "model 'two' has no input 'b'; its inputs are ['a', 'n']"
    assert e.fields == {"expected": ["a", "n"], "got": ["a", "n", "b"]}


def test_a_missing_input_is_named(two: ModelVersion) -> None:
    e = _bad({"a": np.zeros((1, 2), np.float32)}, two)
    assert e.message == "missing input 'n'" and e.fields["got"] == ["a"]


def test_a_wrong_datatype_names_both(two: ModelVersion) -> None:
    e = _bad({"a": np.zeros((1, 2), np.float64), "n": np.zeros((1, 1), np.int64)}, two)
    assert e.message == "input 'a': expected datatype FP32, got float64"
    assert e.fields == {"expected": "FP32", "got": "float64"}
    e = _bad({"a": np.zeros((1, 2), np.float32), "n": np.zeros((1, 1), np.int32)}, two)
    assert e.message == "input 'n': expected datatype INT64, got int32"


@pytest.mark.parametrize(
    ("shape", "why"),
    [((2,), "rank"), ((2, 3, 1), "rank"), ((2, 2), "fixed dimension"), ((0, 1), "no rows"), ((2, 0), "empty")],
)
def test_a_wrong_shape_names_the_expected_and_the_given_shape(
    two: ModelVersion, shape: tuple[int, ...], why: str
) -> None:
    rows = max(shape[0], 1)
    e = _bad({"a": np.zeros((rows, 2), np.float32), "n": np.zeros(shape, np.int64)}, two)
    assert e.message == f"input 'n': expected shape [-1, 1], got {list(shape)}", why
    assert e.fields == {"expected": [-1, 1], "got": list(shape)}


def test_inputs_must_agree_on_the_batch_size(two: ModelVersion) -> None:
    e = _bad({"a": np.zeros((2, 5), np.float32), "n": np.zeros((3, 1), np.int64)}, two)
    assert e.message == "inputs disagree on the batch size: 2 vs 3"


# -- infer, over a real worker --------------------------------------------------------------------------------
def _three_versions(serve: ServeFactory, capacity: int) -> tuple[ServedModel, list[ModelVersion], list[int]]:
    """digits served with versions 1..3 committed (logits 1.0 and 2.0 for 2 and 3); what it placed is recorded."""
    store = memory_store()
    v1 = load_zoo("digits")
    store.commit(v1, create=True)
    placed: list[int] = []

    def prepare(v: ModelVersion) -> Runnable:
        placed.append(v.version)
        return v.graph_module

    served = serve(v1, store=store, capacity=capacity, prepare=prepare)
    versions = [v1]
    for c in (1.0, 2.0):
        v = apply_edit(versions[-1], head_ops(c), version=len(versions) + 1)
        store.commit(v)
        served.residency.publish(v)
        served.worker.swap(v, served.residency.prepare(v)).result(10)
        versions.append(v)
    placed.clear()
    return served, versions, placed


def _infer(served: ServedModel, version: int | None = None, timeout_s: float = 10.0) -> InferResult:
    return asyncio.run(Inference(timeout_s).infer(served, {"input": X}, version))


def test_a_request_without_a_version_runs_on_the_current_one(serve: ServeFactory) -> None:
    served, _, placed = _three_versions(serve, capacity=4)
    r = _infer(served)
    assert r.version == 3 and r.names == ("output",) and np.array_equal(r.outputs[0], np.full((3, 10), 2.0, np.float32))
    assert placed == []


def test_a_request_for_a_resident_version_runs_on_it(serve: ServeFactory) -> None:
    served, versions, placed = _three_versions(serve, capacity=4)
    r = _infer(served, 1)
    assert r.version == 1 and np.array_equal(r.outputs[0], versions[0].run(torch.from_numpy(X))[0].numpy())
    assert placed == [] and served.residency.current_version() == 3


def test_a_request_for_an_evicted_version_brings_it_back(serve: ServeFactory) -> None:
    served, versions, placed = _three_versions(serve, capacity=2)
    assert served.residency.resident_versions() == [2, 3]
    r = _infer(served, 1)
    assert r.version == 1 and np.array_equal(r.outputs[0], versions[0].run(torch.from_numpy(X))[0].numpy())
    assert placed == [1]  # reloaded from the store and placed once
    assert served.residency.resident_versions() == [3, 1] and served.residency.current_version() == 3
    assert _infer(served, 1).version == 1 and placed == [1]  # resident now: not placed again


def test_a_request_for_a_version_that_never_existed_is_not_found(serve: ServeFactory) -> None:
    served, _, placed = _three_versions(serve, capacity=2)
    with pytest.raises(NotFoundError, match="no version 4"):
        _infer(served, 4)
    assert placed == []


# -- infer, over a fake worker --------------------------------------------------------------------------------
class FakeWorker:
    """Takes requests like the worker; `on_submit(item, attempt)` decides what each submit does."""

    def __init__(self, on_submit: Callable[[InferItem, int], None]) -> None:
        self.on_submit = on_submit
        self.submitted: list[InferItem] = []
        self.cancelled: list[InferItem] = []

    def submit(self, item: InferItem) -> None:
        self.submitted.append(item)
        self.on_submit(item, len(self.submitted))

    def cancel(self, item: InferItem) -> None:
        self.cancelled.append(item)


def _fake_served(worker: FakeWorker, capacity: int = 1) -> tuple[ServedModel, list[int]]:
    """digits at version 2, version 1 evicted (capacity 1) but loadable; what was placed is recorded."""
    v1 = load_zoo("digits")
    v2 = apply_edit(v1, head_ops(1.0), version=2)
    placed: list[int] = []

    def prepare(v: ModelVersion) -> Runnable:
        placed.append(v.version)
        return v.graph_module

    r: Residency[ModelVersion] = Residency(
        "digits", v1, v1.graph_module, capacity=capacity, prepare=prepare, load={1: v1, 2: v2}.__getitem__
    )
    r.publish(v2)
    r.install(v2, v2.graph_module, current=True)
    return ServedModel(r, cast(DeviceWorker, worker)), placed


def _answer(item: InferItem) -> None:
    item.deliver(InferResult(item.version or 2, (np.zeros((item.rows, 10), np.float32),)))


def test_a_request_that_gets_no_result_in_time_times_out_and_gives_its_slot_back() -> None:
    worker = FakeWorker(lambda item, attempt: None)  # never delivers
    served, _ = _fake_served(worker)
    with pytest.raises(InferenceTimeoutError, match=r"inference on 'digits' took longer than 0\.05 s"):
        _infer(served, timeout_s=0.05)
    assert worker.cancelled == worker.submitted and len(worker.submitted) == 1


def test_a_request_answered_in_time_keeps_its_slot_and_gets_the_output_names() -> None:
    worker = FakeWorker(lambda item, attempt: _answer(item))
    served, _ = _fake_served(worker)
    r = _infer(served)
    assert r.version == 2 and r.names == ("output",) and worker.cancelled == []


def test_a_request_whose_client_went_away_gives_its_slot_back() -> None:
    worker = FakeWorker(lambda item, attempt: None)
    served, _ = _fake_served(worker)

    async def go() -> None:
        task = asyncio.create_task(Inference(10.0).infer(served, {"input": X}))
        while not worker.submitted:
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    assert worker.cancelled == worker.submitted and len(worker.submitted) == 1


def test_a_version_evicted_between_the_check_and_the_submit_is_placed_again() -> None:
    def evicted_once(item: InferItem, attempt: int) -> None:
        if attempt == 1:
            raise NotResidentError("version 1 is no longer resident", version=1)
        _answer(item)

    worker = FakeWorker(evicted_once)
    served, placed = _fake_served(worker, capacity=1)
    r = _infer(served, 1)
    assert r.version == 1 and len(worker.submitted) == 2
    # Placed when the request was checked, and again after the worker found it gone; the retried item carries
    # the runnable so that it cannot be evicted from under it again.
    assert placed == [1, 1] and worker.submitted[1].runnable is not None


def test_the_retry_gives_up_after_three_tries() -> None:
    def always(item: InferItem, attempt: int) -> None:
        raise NotResidentError("gone", version=1)

    worker = FakeWorker(always)
    served, _ = _fake_served(worker)
    with pytest.raises(NotResidentError):
        _infer(served, 1)
    assert len(worker.submitted) == 3


def test_a_request_for_the_current_version_is_not_retried() -> None:
    def gone(item: InferItem, attempt: int) -> None:
        raise NotResidentError("gone", version=2)

    worker = FakeWorker(gone)
    served, placed = _fake_served(worker)
    with pytest.raises(NotResidentError):
        _infer(served)
    assert len(worker.submitted) == 1 and placed == []


def test_bad_inputs_are_refused_before_anything_is_queued() -> None:
    worker = FakeWorker(lambda item, attempt: _answer(item))
    served, _ = _fake_served(worker)
    bad: dict[str, Any] = {"input": np.zeros((1, 63), np.float32)}
    with pytest.raises(BadInputError, match=r"expected shape \[-1, 64\], got \[1, 63\]"):
        asyncio.run(Inference(1.0).infer(served, bad, 1))
    assert worker.submitted == []

"""The edit pipeline with a real model (digits), a store in memory, and a real residency and worker: an edit is
durable and live or it changed nothing; rollback, gc, retention and the follower's step."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save

from morphserve.graph import ConflictError, EditError, ModelVersion, NotFoundError, load_zoo
from morphserve.serving.budget import MemoryBudget
from morphserve.serving.errors import BadInputError, ModelTooLargeError, UnavailableError
from morphserve.serving.metrics import Metrics
from morphserve.serving.pipeline import EditPipeline, weights_op
from morphserve.serving.placement import Placement
from morphserve.serving.residency import Runnable
from morphserve.serving.served import ServedModel
from morphserve.store import Head, Store, StoreError
from tests.integration.helpers import head_ops

from .helpers import CPU, ServeFactory, X, memory_store, run


class Setup:
    """One model, `digits`, committed to a memory store and served; its pipeline records what it committed."""

    def __init__(self, serve: ServeFactory, *, keep_versions: int | None = None, **serving: Any) -> None:
        self.store = memory_store()
        self.metrics = Metrics()
        self.v1 = load_zoo("digits")
        self.incarnation = self.store.commit(self.v1, create=True)
        self.served = serve(self.v1, store=self.store, incarnation=self.incarnation, **serving)
        self.committed: list[tuple[ServedModel, int]] = []
        self.pipeline = EditPipeline(
            self.store,
            self.metrics,
            MemoryBudget(1 << 30),
            keep_versions,
            on_commit=lambda s, v, _staged: self.committed.append((s, v.version)),
        )

    def edits(self, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "morphserve_edits_total", {"model": "digits", "outcome": outcome}
        )
        return value or 0.0

    def state(self) -> tuple[list[int], int, int]:
        """What an edit that changed nothing leaves as it was: journalled versions, latest, current."""
        r = self.served.residency
        return self.store.version_numbers("digits"), r.latest, r.current_version()


@pytest.fixture
def setup(serve: ServeFactory) -> Iterator[Setup]:
    s = Setup(serve)
    yield s
    s.pipeline.close()


def _logits(const: float, rows: int = len(X)) -> np.ndarray:
    return np.full((rows, 10), const, dtype=np.float32)


def test_an_edit_is_committed_published_and_swapped_in(setup: Setup) -> None:
    out = setup.pipeline.edit(setup.served, head_ops(7.0))
    assert out.version.version == 2 and out.previous.version == 1 and not out.dry_run
    assert out.live_at is not None and set(out.timings_ms) == {"validate", "build", "persist", "swap", "total"}
    assert setup.state() == ([1, 2], 2, 2)
    assert setup.served.current() is out.version
    r = run(setup.served)  # a request after the edit returned runs on the new version
    assert r.version == 2 and np.array_equal(r.outputs[0], _logits(7.0))
    assert setup.committed == [(setup.served, 2)]
    assert setup.edits("committed") == 1 and setup.edits("rejected") == 0
    loaded = setup.store.load("digits", 2)  # durable: the journal rebuilds exactly what serves
    assert torch.equal(loaded.run(torch.from_numpy(X))[0], torch.from_numpy(_logits(7.0)))


def test_an_edit_on_a_stale_base_is_a_conflict_that_changes_nothing(setup: Setup) -> None:
    setup.pipeline.edit(setup.served, head_ops(1.0), if_version=1)
    with pytest.raises(ConflictError, match="at version 2, not 1"):
        setup.pipeline.edit(setup.served, head_ops(2.0), if_version=1)
    assert setup.state() == ([1, 2], 2, 2)
    assert np.array_equal(run(setup.served).outputs[0], _logits(1.0))
    assert setup.edits("rejected") == 1 and setup.committed == [(setup.served, 2)]


def test_a_failing_commit_changes_nothing_and_the_next_edit_takes_the_number(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(v: ModelVersion, **_: Any) -> None:
        raise StoreError("disk on fire")

    monkeypatch.setattr(setup.store, "commit", broken)
    with pytest.raises(StoreError, match="disk on fire"):
        setup.pipeline.edit(setup.served, head_ops(3.0))
    assert setup.state() == ([1], 1, 1) and setup.served.residency.resident_versions() == [1]
    assert run(setup.served).version == 1 and setup.committed == [] and setup.edits("rejected") == 1
    monkeypatch.undo()
    assert setup.pipeline.edit(setup.served, head_ops(3.0)).version.version == 2


def test_a_version_that_fails_its_warm_up_is_never_journalled(serve: ServeFactory) -> None:
    placement = Placement(CPU)

    def prepare(v: ModelVersion) -> Runnable:
        if v.version > 1:
            raise EditError("the new version failed its warm-up forward: boom")
        return placement.prepare(v)

    s = Setup(serve, prepare=prepare)
    try:
        with pytest.raises(EditError, match="warm-up"):
            s.pipeline.edit(s.served, head_ops(3.0))
        assert s.state() == ([1], 1, 1) and s.committed == [] and s.edits("rejected") == 1
        # Its new fc3 blob was written beside the build (and waited for): no row names it, so the next sweep takes it.
        assert s.store.sweep() == 1
    finally:
        s.pipeline.close()


def test_an_edit_over_the_budget_is_refused_before_it_is_built(serve: ServeFactory) -> None:
    s = Setup(serve)
    s.pipeline.budget = MemoryBudget(1)
    try:
        with pytest.raises(ModelTooLargeError):
            s.pipeline.edit(s.served, head_ops(3.0))
        assert s.state() == ([1], 1, 1)
    finally:
        s.pipeline.close()


def test_a_dry_run_builds_the_version_and_changes_nothing(setup: Setup) -> None:
    out = setup.pipeline.edit(setup.served, head_ops(5.0), dry_run=True)
    assert out.dry_run and out.version.version == 2 and out.live_at is None
    assert out.timings_ms["persist"] == 0.0 and out.timings_ms["swap"] == 0.0
    assert torch.equal(out.version.run(torch.from_numpy(X))[0], torch.from_numpy(_logits(5.0)))
    assert setup.state() == ([1], 1, 1)
    assert run(setup.served).version == 1 and setup.committed == [] and setup.edits("committed") == 0
    assert setup.pipeline.edit(setup.served, head_ops(6.0)).version.version == 2  # the number was not taken


def test_an_edit_of_a_deleted_model_journals_nothing(setup: Setup) -> None:
    setup.served.deleted = True
    with pytest.raises(NotFoundError, match="deleted"):
        setup.pipeline.edit(setup.served, head_ops(1.0))
    assert setup.store.version_numbers("digits") == [1]


def test_a_rollback_is_a_new_version_with_the_targets_modules(serve: ServeFactory) -> None:
    s = Setup(serve, capacity=2)  # versions 2 and 3 push version 1 out of memory: the rollback reloads it
    try:
        s.pipeline.edit(s.served, head_ops(1.0))
        s.pipeline.edit(s.served, head_ops(2.0))
        assert s.served.residency.resident_versions() == [2, 3] and s.served.residency.cached(1) is None
        out = s.pipeline.rollback(s.served, 1)
        v4 = out.version
        assert v4.version == 4 and v4.parent == 3 and out.previous.version == 3
        assert s.state() == ([1, 2, 3, 4], 4, 4)
        target = s.served.residency.get(1)
        assert all(v4.modules[k] is target.modules[k] for k in target.modules)  # shared, not copied
        r = run(s.served)
        assert r.version == 4 and np.array_equal(r.outputs[0], s.v1.run(torch.from_numpy(X))[0].numpy())
        with pytest.raises(ConflictError):
            s.pipeline.rollback(s.served, 2, if_version=3)
        with pytest.raises(NotFoundError, match="no version 9"):
            s.pipeline.rollback(s.served, 9)
        assert s.state() == ([1, 2, 3, 4], 4, 4)
    finally:
        s.pipeline.close()


def test_gc_deletes_old_versions_and_evicts_them_but_never_the_serving_one(setup: Setup) -> None:
    for c in (1.0, 2.0, 3.0):
        setup.pipeline.edit(setup.served, head_ops(c))
    r = setup.served.residency
    assert r.resident_versions() == [1, 2, 3, 4]
    result = setup.pipeline.gc(setup.served, keep=1)
    assert result.removed_versions == [1, 2, 3]
    assert setup.store.version_numbers("digits") == [4] and r.resident_versions() == [4]
    assert r.cached(2) is None and r.current_version() == 4
    setup.served.deleted = True
    with pytest.raises(NotFoundError):
        setup.pipeline.gc(setup.served, keep=1)


def test_keep_versions_retains_after_each_edit(serve: ServeFactory) -> None:
    s = Setup(serve, keep_versions=2)
    try:
        for c in (1.0, 2.0, 3.0):
            s.pipeline.edit(s.served, head_ops(c))
        assert s.store.version_numbers("digits") == [3, 4]
        assert s.served.residency.resident_versions() == [3, 4]
    finally:
        s.pipeline.close()


def test_a_failing_retention_does_not_fail_the_edit(serve: ServeFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Setup(serve, keep_versions=1)
    try:

        def broken(*_: Any, **__: Any) -> None:
            raise StoreError("gc failed")

        monkeypatch.setattr(s.store, "gc", broken)
        assert s.pipeline.edit(s.served, head_ops(1.0)).version.version == 2
        assert s.state() == ([1, 2], 2, 2)
    finally:
        s.pipeline.close()


class Replica:
    """A second process over the same journal: its own served copy of `digits` and its own pipeline."""

    def __init__(self, serve: ServeFactory, store: Store) -> None:
        first = store.load("digits")
        self.served = serve(first, store=store, incarnation=store.heads()["digits"].incarnation)
        self.pipeline = EditPipeline(store, Metrics(), MemoryBudget(1 << 30), None)


def _head(setup: Setup, version: int) -> Head:
    """The journal's head of digits as a follower would read it when `version` was the newest and current."""
    h = setup.store.heads()["digits"]
    return Head(h.model, h.incarnation, version, h.committed_at, version, h.docs_rev)


def test_apply_jumps_to_a_newer_version_and_ignores_older_ones(setup: Setup, serve: ServeFactory) -> None:
    other = Replica(serve, setup.store)
    try:
        other.pipeline.edit(other.served, head_ops(1.0))
        other.pipeline.edit(other.served, head_ops(2.0))
        assert setup.state() == ([1, 2, 3], 1, 1)
        assert setup.pipeline.apply(setup.served, _head(setup, 3))  # straight from 1 to 3
        r = setup.served.residency
        assert (r.latest, r.current_version(), r.resident_versions()) == (3, 3, [1, 3])
        assert setup.committed == [(setup.served, 3)]
        assert np.array_equal(run(setup.served).outputs[0], _logits(2.0))
        assert not setup.pipeline.apply(setup.served, _head(setup, 2))
        assert not setup.pipeline.apply(setup.served, _head(setup, 3))
        assert r.current_version() == 3 and setup.committed == [(setup.served, 3)]
        other.pipeline.edit(other.served, head_ops(4.0))
        setup.served.deleted = True
        assert not setup.pipeline.apply(setup.served, _head(setup, 4))
        assert r.current_version() == 3
    finally:
        other.pipeline.close()


def test_an_edit_first_catches_up_with_what_other_replicas_committed(setup: Setup, serve: ServeFactory) -> None:
    other = Replica(serve, setup.store)
    try:
        other.pipeline.edit(other.served, head_ops(1.0))
        out = setup.pipeline.edit(setup.served, head_ops(9.0), if_version=2)  # 2 is the journal's head
        assert out.previous.version == 2 and out.version.version == 3
        assert setup.state() == ([1, 2, 3], 3, 3)
        with pytest.raises(ConflictError):  # the other replica's view is stale: it catches up, then conflicts
            other.pipeline.edit(other.served, head_ops(2.0), if_version=2)
        assert other.served.residency.current_version() == 3
    finally:
        other.pipeline.close()


def _safetensors(tensors: dict[str, torch.Tensor]) -> bytes:
    return save(tensors)


def test_weights_op_reads_a_safetensors_file_with_or_without_the_node_prefix() -> None:
    w, b = torch.zeros(10, 64), torch.full((10,), 2.0)
    for keys in (("weight", "bias"), ("fc3.weight", "fc3.bias")):
        op = weights_op("fc3", _safetensors({keys[0]: w, keys[1]: b}))
        assert op.summary()["tensors"] == {
            "weight": {"shape": [10, 64], "datatype": "FP32"},
            "bias": {"shape": [10], "datatype": "FP32"},
        }
    with pytest.raises(BadInputError, match="not a valid safetensors"):
        weights_op("fc3", b"garbage")
    with pytest.raises(BadInputError, match="no tensors"):
        weights_op("fc3", _safetensors({}))


def test_weights_from_a_file_serve_like_any_edit(setup: Setup) -> None:
    data = _safetensors({"weight": torch.zeros(10, 64), "bias": torch.full((10,), 4.0)})
    setup.pipeline.edit(setup.served, [weights_op("fc3", data)])
    assert np.array_equal(run(setup.served).outputs[0], _logits(4.0))


def test_a_version_durable_but_not_swapped_in_still_takes_its_number(setup: Setup) -> None:
    setup.served.worker.stop()  # the model is going away while the edit runs: the swap is refused
    with pytest.raises(UnavailableError):
        setup.pipeline.edit(setup.served, head_ops(1.0))
    assert setup.state() == ([1, 2], 2, 1)  # journalled and published (the next edit is 3), never served here


def test_concurrent_edits_take_turns_and_number_consecutively(setup: Setup) -> None:
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda c: setup.pipeline.edit(setup.served, head_ops(c)), [1.0, 2.0, 3.0, 4.0]))
    assert sorted(o.version.version for o in outs) == [2, 3, 4, 5]
    assert all(o.previous.version == o.version.version - 1 for o in outs)  # each on top of the one before
    assert setup.state() == ([1, 2, 3, 4, 5], 5, 5)

"""The registry in-process, over a store in memory (or a state dir), with zoo models: serving from the settings and
the journal, create and remove, readiness, lookups, old versions brought back, and the ServedModels side that
replication follows other replicas through."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from morphserve.graph import NotFoundError, load_zoo
from morphserve.serving.errors import ModelExistsError, UnavailableError
from morphserve.serving.metrics import Metrics
from morphserve.serving.registry import Registry
from morphserve.serving.sources import ZooSource
from morphserve.settings import Settings
from morphserve.store import Head, JournalError, Store, StoreUnavailableError
from morphserve.store.memory import MemoryBlobs, MemoryJournal
from tests.integration.helpers import head_ops

from .helpers import WAIT, X, memory_store, run

RegistryFactory = Callable[..., Registry]


@pytest.fixture
def make_registry(tmp_path: Path) -> Iterator[RegistryFactory]:
    """Factory: `make_registry(store=None, load=True, **settings)` -> a registry on the CPU (journal in memory
    unless the settings say otherwise), loaded from its settings when `load`. All are closed after the test, and
    torch's thread count (which a registry sets) is put back."""
    made: list[Registry] = []
    threads = torch.get_num_threads()

    def factory(store: Store | None = None, load: bool = True, **overrides: Any) -> Registry:
        values: dict[str, Any] = {"models": [], "journal": "memory", "device": "cpu", "state_dir": tmp_path / "state"}
        values.update(overrides)
        registry = Registry(Settings(**values), Metrics(), store=store)
        made.append(registry)
        if load:
            registry.load_from_settings()
        return registry

    yield factory
    for r in made:
        r.close()
    torch.set_num_threads(threads)


def _events(registry: Registry) -> list[tuple[str, dict[str, Any]]]:
    """The global events published so far (created, deleted, versions), as (kind, data)."""
    events = registry.events.global_since(f"{registry.events.epoch}-0") or []
    return [(e.kind, e.data) for e in events]


def _shared(store: Store) -> Store:
    """Another process's Store over the same journal and blobs (the registry closes its own; these close no-op)."""
    return Store(store.journal, store.blobs)


# -- serving from the settings and the journal ---------------------------------------------------------------------
def test_the_models_of_the_settings_are_served(make_registry: RegistryFactory) -> None:
    registry = make_registry(models=["digits", "second=digits"])
    assert registry.names() == ["digits", "second"]
    assert registry.readiness().ready and registry.readiness().reason is None
    status = asyncio.run(registry.status("second"))
    assert (status.name, status.version, status.versions, status.resident_versions) == ("second", 1, 1, [1])
    assert status.device == "cpu" and status.queue_depth == 0 and status.compute_datatype == "FP32"
    assert [t.name for t in status.inputs] == ["input"] and status.outputs[0].shape == (-1, 10)
    assert status.params == load_zoo("digits").total_params()
    assert registry.store.has("second") and registry.local("second") is not None
    assert registry.local("second").incarnation == registry.store.heads()["second"].incarnation  # type: ignore[union-attr]


def test_a_model_already_in_the_journal_resumes_at_its_last_version(make_registry: RegistryFactory) -> None:
    store = memory_store()
    first = make_registry(store=_shared(store), models=["digits"])
    asyncio.run(first.edit("digits", head_ops(3.0)))
    again = make_registry(store=_shared(store), models=["digits"])  # a restart: --model digits again
    assert again.current("digits").version == 2
    assert np.array_equal(run(again.get("digits")).outputs[0], np.full((3, 10), 3.0, np.float32))
    assert again.store.version_numbers("digits") == [1, 2]  # nothing journalled anew


def test_a_model_that_cannot_be_restored_makes_the_server_not_ready(make_registry: RegistryFactory) -> None:
    store = memory_store()
    store.commit(load_zoo("digits"), create=True)
    store.commit(load_zoo("digits", as_name="fine"), create=True)
    store.blobs.delete([d for d, _ in store.blobs.listing()])  # every weight gone
    registry = make_registry(store=_shared(store))
    assert registry.names() == [] and set(registry.failed) == {"digits", "fine"}
    readiness = registry.readiness()
    assert (
        not readiness.ready and readiness.reason is not None and "digits, fine could not be loaded" in readiness.reason
    )
    assert not registry.may_adopt("digits")  # the follower must not bring it back on its own either


def test_an_empty_server_is_ready(make_registry: RegistryFactory) -> None:
    assert make_registry().readiness().ready


class DamagedJournal(MemoryJournal):
    """A journal whose list of models cannot be read (it takes writes)."""

    def heads(self) -> dict[str, Head]:
        raise JournalError("the journal is damaged")


def test_an_unreadable_journal_makes_the_server_not_ready_but_serves_its_models(make_registry: RegistryFactory) -> None:
    registry = make_registry(store=Store(DamagedJournal(), MemoryBlobs()), models=["digits"])
    readiness = registry.readiness()
    assert not readiness.ready
    assert readiness.reason == "the journal's models could not be read: the journal is damaged"
    assert registry.names() == ["digits"] and registry.unreadable == "the journal is damaged"


# -- create, remove, lookups ---------------------------------------------------------------------------------------
def test_create_serves_and_journals_a_new_model_and_a_taken_name_is_refused(make_registry: RegistryFactory) -> None:
    registry = make_registry(models=["digits"])
    status = asyncio.run(registry.create("mine", ZooSource("digits"), dtype="BF16"))
    assert status.name == "mine" and status.version == 1 and status.compute_datatype == "BF16"
    assert registry.names() == ["digits", "mine"] and registry.store.has("mine")
    with pytest.raises(ModelExistsError, match="'digits' already exists"):
        asyncio.run(registry.create("digits", ZooSource("mlp")))
    assert ("model_created", {"model": "mine", "version": 1}) in _events(registry)


def test_remove_stops_serving_deletes_the_rows_and_forgets_the_name(make_registry: RegistryFactory) -> None:
    registry = make_registry(models=["digits", "other=digits"])
    served = registry.get("other")
    asyncio.run(registry.remove("other"))
    assert registry.names() == ["digits"] and not registry.store.has("other") and served.deleted
    with pytest.raises(NotFoundError, match="'other' does not exist"):
        registry.get("other")
    with pytest.raises(UnavailableError):  # its worker stopped
        run(served)
    with pytest.raises(NotFoundError):
        asyncio.run(registry.remove("other"))
    assert _events(registry)[-1] == ("model_deleted", {"model": "other"})
    assert registry.may_adopt("other")  # gone from here and from the journal: it may be created again


def test_while_a_model_is_being_removed_the_follower_may_not_bring_it_back(
    make_registry: RegistryFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = make_registry(models=["digits"])
    served = registry.get("digits")
    stopped = threading.Event()
    stop = served.worker.stop

    def stop_and_tell(timeout: float = 10.0) -> None:
        stop(timeout)
        stopped.set()

    monkeypatch.setattr(served.worker, "stop", stop_and_tell)
    served.edit_lock.acquire()  # an edit in progress: the removal waits for it, with the model already unlisted
    try:
        remover = threading.Thread(target=lambda: asyncio.run(registry.remove("digits")))
        remover.start()
        assert stopped.wait(WAIT), "the removal never stopped the worker"
        assert registry.deleting("digits") and not registry.may_adopt("digits") and registry.local("digits") is None
        assert registry.store.has("digits")  # its rows go only after the edit in progress
    finally:
        served.edit_lock.release()
    remover.join(WAIT)
    assert not registry.deleting("digits") and registry.may_adopt("digits") and not registry.store.has("digits")


def test_lookups_of_an_unknown_model_are_not_found(make_registry: RegistryFactory) -> None:
    registry = make_registry()
    with pytest.raises(NotFoundError, match="'nope' does not exist"):
        registry.current("nope")
    for call in (registry.status("nope"), registry.version("nope", 1), registry.history("nope")):
        with pytest.raises(NotFoundError):
            asyncio.run(call)


def test_an_evicted_version_is_reloaded_for_a_view(make_registry: RegistryFactory) -> None:
    registry = make_registry(models=["digits"], resident_versions=1)
    asyncio.run(registry.edit("digits", head_ops(1.0)))
    assert registry.resident("digits") == [2]
    old = asyncio.run(registry.version("digits", 1))
    assert old.version == 1 and torch.equal(
        old.run(torch.from_numpy(X))[0], load_zoo("digits").run(torch.from_numpy(X))[0]
    )
    assert asyncio.run(registry.version("digits", 1)) is old  # held for views now, not reloaded again
    assert registry.resident("digits") == [2]  # a view places nothing on the device
    assert asyncio.run(registry.version("digits")).version == 2
    with pytest.raises(NotFoundError, match="no version 3"):
        asyncio.run(registry.version("digits", 3))


def test_edits_rollbacks_and_inference_go_through_the_registry(make_registry: RegistryFactory) -> None:
    registry = make_registry(models=["digits"])
    out = asyncio.run(registry.edit("digits", head_ops(2.0), if_version=1))
    assert out.version.version == 2 and ("version", out.version.version) in [
        (k, d.get("version")) for k, d in _events(registry)
    ]
    r = asyncio.run(registry.infer("digits", {"input": X}))
    assert r.version == 2 and r.names == ("output",) and np.array_equal(r.outputs[0], np.full((3, 10), 2.0, np.float32))
    old = asyncio.run(registry.infer("digits", {"input": X}, 1))
    assert old.version == 1
    back = asyncio.run(registry.rollback("digits", 1))
    assert back.version.version == 3 and asyncio.run(registry.status("digits")).versions == 3
    assert [rec.version for rec in asyncio.run(registry.history("digits"))] == [1, 2, 3]
    assert registry.queue_depths() == {"digits": 0}


def test_uploads_are_refused_when_the_store_takes_no_writes(make_registry: RegistryFactory) -> None:
    unavailable = Store(memory_store().journal, memory_store().blobs, unavailable="the disk is read-only")
    registry = make_registry(store=unavailable)
    with pytest.raises(StoreUnavailableError, match="read-only"):
        registry.upload_spool("mine")


# -- following another replica (the ServedModels side) --------------------------------------------------------------
def test_a_registry_follows_what_another_replica_does_on_the_same_journal(make_registry: RegistryFactory) -> None:
    store = memory_store()
    editor = make_registry(store=_shared(store), load=False)
    follower = make_registry(store=_shared(store), load=False)  # not started: each step below is one follow

    def follow() -> bool:
        return follower.replication.follow(store.heads())

    editor.add("digits", ZooSource("digits"))
    assert follow() and follower.names() == ["digits"]
    assert follower.local("digits").incarnation == store.heads()["digits"].incarnation  # type: ignore[union-attr]

    asyncio.run(editor.edit("digits", head_ops(5.0)))
    assert follow() and follower.current("digits").version == 2
    assert np.array_equal(run(follower.get("digits")).outputs[0], np.full((3, 10), 5.0, np.float32))
    assert not follow()

    old = follower.get("digits")
    asyncio.run(editor.remove("digits"))
    assert follow() and follower.names() == [] and old.deleted
    assert ("model_deleted", {"model": "digits"}) in _events(follower)

    editor.add("digits", ZooSource("mlp", {"hidden": 8, "depth": 1, "in_features": 64}))  # created again
    assert follow() and follower.current("digits").total_params() == editor.current("digits").total_params()
    assert follower.local("digits") is not old


def test_adopt_and_drop_local(make_registry: RegistryFactory) -> None:
    store = memory_store()
    store.commit(load_zoo("digits"), create=True)
    registry = make_registry(store=_shared(store), load=False)
    registry.adopt("digits", "inc-1")
    with pytest.raises(ModelExistsError):
        registry.adopt("digits", "inc-1")
    served = registry.get("digits")
    assert served.incarnation == "inc-1" and registry.names() == ["digits"]
    registry.drop_local("digits")
    assert registry.names() == [] and served.deleted
    registry.drop_local("digits")  # twice: nothing to do

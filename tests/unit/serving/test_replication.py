"""Replication on its own: a fake table of served models (the ServedModels protocol), a fake `apply` and a fake
journal. Following the heads (adopt, drop, replace, apply), lag metrics, read-your-writes and the replica view."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, cast

import pytest

from morphserve.graph import NotFoundError
from morphserve.serving.errors import ModelExistsError, VersionAheadError, VersionBehindError
from morphserve.serving.metrics import Metrics
from morphserve.serving.replication import ALIVE_S, Replication, advertised_address
from morphserve.serving.residency import Residency
from morphserve.serving.served import ServedModel
from morphserve.serving.worker import DeviceWorker
from morphserve.store import Head, ReplicaRecord, Store, StoreError


class V:
    """A version as residency sees it: a number."""

    def __init__(self, version: int) -> None:
        self.version = version


def _served(version: int = 1, incarnation: str | None = "i1", name: str = "m") -> ServedModel:
    """A served model at `version`; no worker (following never runs a batch)."""
    r: Residency[Any] = Residency(name, V(version), lambda *_: (), capacity=2, prepare=lambda v: lambda *_: (), load=V)
    return ServedModel(r, cast(DeviceWorker, None), incarnation=incarnation)


def _advance(served: ServedModel, version: int) -> None:
    """What the pipeline's apply does: publish, then (the worker) make it current, then wake waiters."""
    v = V(version)
    served.residency.publish(v)  # type: ignore[arg-type]  # a fake version
    served.residency.install(v, lambda *_: (), current=True)  # type: ignore[arg-type]
    served.went_live(version)


class Models:
    """The ServedModels protocol over a dict, recording every change asked of it."""

    def __init__(self, **models: ServedModel) -> None:
        self.models = dict(models)
        self.refused: set[str] = set()  # may_adopt is False for these
        self.being_deleted: set[str] = set()
        self.calls: list[tuple[str, str]] = []
        self.adopt_error: Exception | None = None

    def local(self, name: str) -> ServedModel | None:
        return self.models.get(name)

    def names(self) -> list[str]:
        return sorted(self.models)

    def may_adopt(self, name: str) -> bool:
        return name not in self.refused

    def deleting(self, name: str) -> bool:
        return name in self.being_deleted

    def adopt(self, name: str, incarnation: str) -> None:
        self.calls.append(("adopt", name))
        if self.adopt_error is not None:
            raise self.adopt_error
        self.models[name] = _served(1, incarnation, name)

    def drop_local(self, name: str) -> None:
        self.calls.append(("drop", name))
        self.models.pop(name, None)


class Journal:
    """What replication and its follower read of the store: heads, replica rows, heartbeats."""

    def __init__(self) -> None:
        self.head_rows: dict[str, Head] = {}
        self.rows: list[ReplicaRecord] = []
        self.down: StoreError | None = None
        self.beats: list[ReplicaRecord] = []

    def heads(self) -> dict[str, Head]:
        if self.down is not None:
            raise self.down
        return dict(self.head_rows)

    def replicas(self) -> list[ReplicaRecord]:
        if self.down is not None:
            raise self.down
        return list(self.rows)

    def heartbeat(self, replica: ReplicaRecord) -> None:
        self.beats.append(replica)

    def forget_replica(self, replica_id: str) -> None:
        pass


class Applier:
    """The fake `apply`: brings a served model to a newer version (False for one it has), or fails when told to."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.fail: dict[str, Exception] = {}

    def __call__(self, served: ServedModel, head: Head) -> bool:
        version = head.current
        self.calls.append((served.name, version))
        if served.name in self.fail:
            raise self.fail[served.name]
        if version <= served.residency.latest:
            return False
        _advance(served, version)
        return True


def _replication(models: Models, *, wait_s: float = 10.0) -> tuple[Replication, Applier, Journal, Metrics]:
    apply, journal, metrics = Applier(), Journal(), Metrics()
    rep = Replication(
        models,
        apply=apply,
        store=cast(Store, journal),
        metrics=metrics,
        journal_kind="memory",
        interval_s=60.0,
        wait_s=wait_s,
        address="http://here:8000",
    )
    return rep, apply, journal, metrics


def _head(version: int, incarnation: str = "i1", model: str = "m", ago: float = 0.0) -> Head:
    return Head(model, incarnation, version, time.time() - ago)


# -- follow ------------------------------------------------------------------------------------------------------
def test_a_model_created_elsewhere_is_adopted_unless_it_may_not_be() -> None:
    models = Models()
    models.refused.add("failed")
    rep, apply, _, _ = _replication(models)
    assert rep.follow({"new": _head(3, "x", "new"), "failed": _head(1, "y", "failed")})
    assert models.calls == [("adopt", "new")] and models.names() == ["new"]
    assert models.models["new"].incarnation == "x" and apply.calls == []
    assert not rep.follow({"failed": _head(1, "y", "failed"), "new": _head(1, "x", "new")})  # nothing to do now


def test_a_model_deleted_elsewhere_is_dropped_but_not_one_the_journal_never_held() -> None:
    models = Models(gone=_served(), local=_served(incarnation=None), deleting=_served())
    models.being_deleted.add("deleting")
    rep, _, _, _ = _replication(models)
    assert rep.follow({})
    assert models.calls == [("drop", "gone")] and models.names() == ["deleting", "local"]
    assert not rep.follow({})


def test_a_model_created_again_elsewhere_replaces_the_old_one() -> None:
    models = Models(m=_served(5, "old"))
    rep, apply, _, _ = _replication(models)
    assert rep.follow({"m": _head(1, "new")})
    assert models.calls == [("drop", "m"), ("adopt", "m")]
    assert models.models["m"].incarnation == "new" and apply.calls == []


def test_a_newer_head_is_applied_and_an_older_one_changes_nothing() -> None:
    served = _served(1)
    models = Models(m=served)
    rep, apply, _, _ = _replication(models)
    assert rep.follow({"m": _head(4)})
    assert apply.calls == [("m", 4)] and served.serving_version() == 4
    assert not rep.follow({"m": _head(4)})
    assert models.calls == [] and rep.applied() == {"m": 4}


def test_one_model_that_cannot_be_followed_does_not_stop_the_others() -> None:
    models = Models(bad=_served(name="bad"), good=_served(name="good"))
    rep, apply, _, _ = _replication(models)
    apply.fail["bad"] = StoreError("blob missing")
    assert rep.follow({"bad": _head(2, model="bad"), "good": _head(2, model="good")})
    assert models.models["good"].serving_version() == 2 and models.models["bad"].serving_version() == 1


def test_a_model_this_process_created_meanwhile_is_left_alone() -> None:
    models = Models()
    models.adopt_error = ModelExistsError("model 'm' already exists")
    rep, _, _, _ = _replication(models)
    assert not rep.follow({"m": _head(1)})


def test_lag_is_reported_per_model() -> None:
    models = Models(m=_served(1))
    rep, apply, _, metrics = _replication(models)
    apply.fail["m"] = RuntimeError("cannot build it here")  # stays behind

    def lag(kind: str) -> float | None:
        return metrics.registry.get_sample_value(f"morphserve_replica_lag_{kind}", {"model": "m"})

    rep.follow({"m": _head(3, ago=30.0)})
    assert lag("versions") == 2
    seconds = lag("seconds")
    assert seconds is not None and 30.0 <= seconds < 60.0
    del apply.fail["m"]
    rep.follow({"m": _head(3, ago=30.0)})
    assert lag("versions") == 0 and lag("seconds") == 0.0


# -- wait_for (read-your-writes) ----------------------------------------------------------------------------------
def test_wait_for_returns_at_once_when_the_version_is_live(monkeypatch: pytest.MonkeyPatch) -> None:
    models = Models(m=_served(3))
    rep, _, _, _ = _replication(models, wait_s=0.0)
    kicks: list[bool] = []
    monkeypatch.setattr(rep.follower, "kick", lambda: kicks.append(True))
    asyncio.run(rep.wait_for("m", 2))
    asyncio.run(rep.wait_for("m", 3))
    assert kicks == []  # nothing to fetch: the journal is not even asked


def test_wait_for_gives_up_naming_the_version_it_has(monkeypatch: pytest.MonkeyPatch) -> None:
    models = Models(m=_served(3))
    rep, _, journal, _ = _replication(models, wait_s=0.05)
    journal.head_rows = {"m": _head(5)}  # committed elsewhere, not applied here yet
    kicks: list[bool] = []
    monkeypatch.setattr(rep.follower, "kick", lambda: kicks.append(True))
    with pytest.raises(VersionBehindError, match="has version 3 of 'm', not yet 5") as e:
        asyncio.run(rep.wait_for("m", 5))
    assert e.value.fields == {"version": 3, "min_version": 5}
    assert kicks == [True]  # the follower was asked to read the journal now


def test_wait_for_returns_once_the_version_goes_live() -> None:
    served = _served(1)
    rep, _, journal, _ = _replication(Models(m=served), wait_s=30.0)
    journal.head_rows = {"m": _head(2)}

    async def go() -> None:
        waiting = asyncio.create_task(rep.wait_for("m", 2))
        await asyncio.sleep(0.05)  # the waiter reads the journal's heads (off the loop) and registers its gate
        assert not waiting.done()
        t = threading.Thread(target=_advance, args=(served, 2))  # the worker's swap, on its own thread
        t.start()
        await asyncio.wait_for(waiting, 10.0)
        t.join()

    asyncio.run(go())


def test_wait_for_a_model_the_journal_has_but_this_replica_never_follows_is_not_found_after_the_wait() -> None:
    rep, _, journal, _ = _replication(Models(), wait_s=0.02)
    journal.head_rows = {"nope": _head(1, model="nope")}
    with pytest.raises(NotFoundError, match="does not exist on this replica"):
        asyncio.run(rep.wait_for("nope", 1))


def test_wait_for_a_version_beyond_the_journal_is_refused_at_once() -> None:
    rep, _, journal, _ = _replication(Models(m=_served(3)), wait_s=30.0)
    journal.head_rows = {"m": _head(3)}
    started = time.monotonic()
    with pytest.raises(VersionAheadError, match="newest is 3") as e:
        asyncio.run(rep.wait_for("m", 4))
    assert time.monotonic() - started < 5 and e.value.fields["latest"] == 3  # no wait for what cannot come
    with pytest.raises(VersionAheadError, match="holds none of it"):
        asyncio.run(rep.wait_for("other", 1))


def test_wait_for_a_model_created_elsewhere_waits_for_it_to_be_followed() -> None:
    models = Models()
    rep, _, journal, _ = _replication(models, wait_s=30.0)
    journal.head_rows = {"m": _head(1)}

    async def go() -> None:
        waiting = asyncio.create_task(rep.wait_for("m", 1))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        rep.follow({"m": _head(1)})  # the follower adopts it
        await asyncio.wait_for(waiting, 10.0)

    asyncio.run(go())


# -- the replica view --------------------------------------------------------------------------------------------
def test_the_view_lists_every_replica_with_its_lag() -> None:
    models = Models(m=_served(3))
    rep, _, journal, _ = _replication(models)
    now = time.time()
    me = rep.follower.id
    journal.head_rows = {"m": _head(5, ago=10.0)}
    journal.rows = [
        ReplicaRecord(me, "http://here:8000", {"m": 1}, now - 100, now),  # its own row: stale applied versions
        ReplicaRecord("peer", "http://peer:8000", {"m": 5}, now - 100, now - 1),
        ReplicaRecord("dead", "http://dead:8000", {"m": 2}, now - 100, now - ALIVE_S - 5),
    ]
    view = rep.view()
    assert view.self == me and view.journal.up and view.journal.backend == "memory" and view.heads == {"m": 5}
    by_id = {r.id: r for r in view.replicas}
    assert by_id[me].this and by_id[me].alive and by_id[me].versions == {"m": 3}  # what it serves now
    assert by_id[me].lag["m"].versions == 2 and 10.0 <= by_id[me].lag["m"].seconds < 40.0
    assert by_id["peer"].alive and not by_id["peer"].this and by_id["peer"].lag["m"].versions == 0
    assert by_id["peer"].lag["m"].seconds == 0.0
    assert not by_id["dead"].alive and by_id["dead"].lag["m"].versions == 3


def test_with_the_journal_down_the_view_still_shows_this_replica() -> None:
    models = Models(m=_served(3))
    rep, _, journal, _ = _replication(models)
    rep.follow({"m": _head(4)})  # the heads it last followed
    journal.down = StoreError("connection refused")
    view = rep.view()
    assert not view.journal.up and view.journal.error == "connection refused"
    assert [r.id for r in view.replicas] == [rep.follower.id]
    assert view.replicas[0].versions == {"m": 4} and view.heads == {"m": 4}


def test_a_replica_not_yet_in_the_journal_shows_itself_first() -> None:
    rep, _, journal, _ = _replication(Models(m=_served(2)))
    journal.rows = [ReplicaRecord("peer", "http://peer:8000", {"m": 2}, 0.0, time.time())]
    view = rep.view()
    assert [r.id for r in view.replicas] == [rep.follower.id, "peer"] and view.replicas[0].this


def test_wait_replicas_reports_which_replicas_have_the_version() -> None:
    rep, _, journal, _ = _replication(Models(m=_served(2)))
    now = time.time()
    journal.rows = [
        ReplicaRecord("ahead", "a", {"m": 2}, now, now),
        ReplicaRecord("behind", "b", {"m": 1}, now, now),
    ]
    done = asyncio.run(rep.wait_replicas("m", 2, "2", timeout=0.0))  # this replica and `ahead`
    assert done.complete and sorted(done.live) == sorted([rep.follower.id, "ahead"]) and done.pending == ["behind"]
    partial = asyncio.run(rep.wait_replicas("m", 2, "all", timeout=0.0))
    assert not partial.complete and partial.pending == ["behind"]
    assert journal.beats and journal.beats[-1].applied == {"m": 2}  # it beat first, so its row is current


def test_the_advertised_address() -> None:
    assert advertised_address("10.0.0.7", 8000) == "http://10.0.0.7:8000"
    assert advertised_address("::1", 9) == "http://[::1]:9"
    assert advertised_address("0.0.0.0", 80).startswith("http://") and "0.0.0.0" not in advertised_address("::", 80)


def test_while_the_journal_is_unreachable_the_lag_is_its_upper_bound_and_grows() -> None:
    """Cut off, a replica cannot know what was committed since it last read the heads: the lag in seconds is the
    lag it had then plus the time since (it grows for as long as the partition lasts); in versions, the last known;
    the view says when it last read the journal."""
    models = Models(m=_served(1))
    rep, _, journal, metrics = _replication(models)
    journal.head_rows = {"m": _head(1)}
    journal.down = StoreError("connection refused")
    rep.follower.sync()  # never read: nothing to bound yet
    assert metrics.registry.get_sample_value("morphserve_replica_lag_seconds", {"model": "m"}) is None
    journal.down = None
    rep.follower.sync()  # caught up: lag 0
    read_at = rep.follower.last_read_at
    assert read_at is not None
    rep.follower.last_read_at = read_at - 20.0  # read 20 s ago; the journal has been down since
    journal.down = StoreError("connection refused")
    rep.follower.sync()
    seconds = metrics.registry.get_sample_value("morphserve_replica_lag_seconds", {"model": "m"})
    assert seconds is not None and 20.0 <= seconds < 30.0
    assert metrics.registry.get_sample_value("morphserve_replica_lag_versions", {"model": "m"}) == 0
    view = rep.view()
    assert not view.journal.up and view.journal.last_read_at == read_at - 20.0
    assert 20.0 <= view.replicas[0].lag["m"].seconds < 30.0

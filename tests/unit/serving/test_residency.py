"""Residency on its own, with fake versions: capacity, least-recently-used eviction, the current version, reloads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from morphserve.graph import NotFoundError
from morphserve.serving.residency import Residency


class V:
    def __init__(self, version: int) -> None:
        self.version = version

    def __repr__(self) -> str:
        return f"V({self.version})"


def _runnable(n: int) -> Callable[..., Any]:
    return lambda *_: (n,)


def _residency(capacity: int = 2, **kw: Any) -> tuple[Residency[V], list[int], list[int]]:
    """A residency of version 1; the lists record what was prepared (placed) and loaded."""
    prepared: list[int] = []
    loaded: list[int] = []

    def prepare(v: V) -> Callable[..., Any]:
        prepared.append(v.version)
        return _runnable(v.version)

    def load(n: int) -> V:
        loaded.append(n)
        return V(n)

    opts: dict[str, Any] = {"capacity": capacity, "prepare": prepare, "load": load, **kw}
    return Residency("m", V(1), _runnable(1), **opts), prepared, loaded


def _advance(r: Residency[V], n: int) -> V:
    """What the edit pipeline does for a new version: record it, then (the worker) install it as current."""
    v = V(n)
    r.publish(v)
    r.install(v, r.prepare(v), current=True)
    return v


def test_the_current_version_is_never_evicted_and_the_least_recently_used_goes_first() -> None:
    r, _, _ = _residency(capacity=2)
    _advance(r, 2)
    assert r.resident_versions() == [1, 2] and r.current_version() == 2
    _advance(r, 3)
    assert r.resident_versions() == [2, 3]
    r.install(V(1), _runnable(1))  # an old version brought back for a request that names it: 2 goes, not current 3
    assert r.resident_versions() == [3, 1] and r.current_version() == 3
    assert r.runnable(3) is not None  # using 3 makes 1 the least recently used
    r.install(V(2), _runnable(2))
    assert r.resident_versions() == [3, 2]


def test_with_capacity_one_a_brought_back_version_serves_its_request_but_does_not_stay() -> None:
    r, prepared, _ = _residency(capacity=1)
    runnable = r.make_resident(V(5))
    assert runnable is not None and runnable() == (5,) and prepared == [5]
    assert r.resident_versions() == [1]


def test_latest_only_moves_forward_and_bounds_what_can_be_loaded() -> None:
    r, _, loaded = _residency()
    _advance(r, 2)
    with pytest.raises(ValueError, match="not past 2"):
        r.publish(V(2))
    r.publish(V(7))  # a follower jumps to the journal's head
    assert r.latest == 7 and r.current_version() == 2  # recorded, not serving until the worker installs it
    with pytest.raises(NotFoundError, match="latest is 7"):
        r.get(8)
    assert loaded == []


def test_views_load_an_evicted_version_once_and_keep_at_most_capacity_of_them() -> None:
    r, prepared, loaded = _residency(capacity=2)
    for n in range(2, 6):
        _advance(r, n)
    assert r.resident_versions() == [4, 5]
    for _ in range(3):
        assert r.get(2).version == 2 and r.get(3).version == 3
    assert loaded == [2, 3]
    assert r.cached(2) is not None and r.runnable(2) is None  # loaded for views, not placed on the device
    r.get(3)
    r.get(1)  # a third pushes out the least recently used (2)
    assert r.cached(2) is None and r.cached(3) is not None
    r.get(2)
    assert loaded == [2, 3, 1, 2]
    assert prepared == [2, 3, 4, 5]  # views never placed anything


def test_a_loaded_version_that_becomes_resident_is_held_once() -> None:
    r, _, _ = _residency(capacity=2)
    for n in range(2, 5):
        _advance(r, n)
    v2 = r.get(2)
    runnable = r.make_resident(v2)
    assert runnable is not None and r.resident_versions() == [4, 2]
    assert r.cached(2) is v2
    assert r.make_resident(v2) is None  # resident already: nothing placed again


def test_two_requests_for_one_evicted_version_place_it_once() -> None:
    calls: list[int] = []
    entered = threading.Event()

    def slow_prepare(v: V) -> Callable[..., Any]:
        calls.append(v.version)
        entered.set()
        time.sleep(0.05)
        return _runnable(v.version)

    r, _, _ = _residency(capacity=3, prepare=slow_prepare)
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(r.make_resident(V(9)))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert calls == [9]
    assert sorted(x is None for x in results) == [False, True]  # one placed it, the other found it resident


def test_evict_forgets_deleted_versions_but_never_the_current_one_and_tells_the_placement() -> None:
    kept: list[list[int]] = []
    r, _, _ = _residency(capacity=3, on_evict=lambda vs: kept.append([v.version for v in vs]))
    _advance(r, 2)
    _advance(r, 3)
    r.get(1)
    r.evict([1, 2, 3])
    assert r.resident_versions() == [3] and r.cached(1) is None and r.cached(2) is None
    assert kept == [[3]]
    r.evict([3])  # only the current one asked for: nothing to tell
    assert kept == [[3]] and r.current_version() == 3


def test_installing_the_current_version_requires_nothing_else_and_reads_stay_consistent() -> None:
    r, _, _ = _residency(capacity=2)
    v, runnable = r.current_entry()
    assert v.version == 1 and runnable() == (1,)
    _advance(r, 2)
    v, runnable = r.current_entry()
    assert v.version == 2 and runnable() == (2,) and r.current().version == 2


def test_capacity_must_hold_the_current_version() -> None:
    with pytest.raises(ValueError, match="at least"):
        _residency(capacity=0)

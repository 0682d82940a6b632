"""Residency: the one owner of which versions of a model are in memory, which can run, and which one serves.

Before, six mechanisms kept versions alive (the worker's LRU, the history's table with `forget`, a cache of reloaded
versions with its own lock, the placement's copies, the pipeline's retain/forget, inference's make-resident) and two
places knew the current version; a request could read the history's newer number before the worker ran it. Here one
object per model holds all of it under one lock, with one capacity policy (after vLLM's LoRA worker manager: one class
owns capacity, add, activate and evict):

- **resident** versions are placed on the device and can run: at most `capacity` of them, least recently used first
  out, the current version never;
- **loaded** versions were brought back from the store for a view (graph, diff, a rollback's target) without being
  placed: at most `capacity` of them, least recently used first out;
- **current** is the version a request that names none runs on. It changes only in `install(..., current=True)`,
  which only the device worker calls, between two batches: that is what makes "no batch mixes versions" and
  read-your-writes hold.
- **latest** is the newest version number this process knows of the model's history (committed here, or applied from
  the journal); a new version takes `latest + 1`.

The device work (placing a version and its warm-up forward) is injected as `prepare`, and reloading from the store as
`load`, so the policy is tested on its own with fakes (tests/unit/serving/test_residency.py).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Generic, Protocol, TypeVar

import torch

from morphserve.graph import NotFoundError

Runnable = Callable[..., Sequence[torch.Tensor]]


class Version(Protocol):
    """What residency needs of a version: its number (a ModelVersion in the server, a small fake in unit tests)."""

    @property
    def version(self) -> int: ...


V = TypeVar("V", bound=Version)


class Residency(Generic[V]):
    def __init__(
        self,
        model: str,
        first: V,
        runnable: Runnable,
        *,
        capacity: int,
        prepare: Callable[[V], Runnable],
        load: Callable[[int], V],
        on_evict: Callable[[list[V]], None] | None = None,
        latest: int | None = None,
    ) -> None:
        """`first` serves at once; `prepare(v)` places a version on the device and warms it up (blocking, may raise);
        `load(n)` rebuilds version n from the store; `on_evict(resident)` is told which versions stay resident after
        an eviction (the placement frees the device copies nothing uses any more); `latest`: the newest number the
        history has, when it is past `first` (a staged version newer than the current one)."""
        if capacity < 1:
            raise ValueError("a model keeps at least its current version resident")
        self.model = model
        self.capacity = capacity
        self._prepare = prepare
        self._load = load
        self._on_evict = on_evict
        self._lock = threading.Lock()
        #: Serialises bringing old versions back, so two requests for one evicted version place it once.
        self._placing = threading.Lock()
        self._resident: collections.OrderedDict[int, tuple[V, Runnable]] = collections.OrderedDict()
        self._loaded: collections.OrderedDict[int, V] = collections.OrderedDict()
        self._resident[first.version] = (first, runnable)
        self._current: int = first.version
        self._latest: int = max(first.version, latest or 0)
        #: Versions that must stay resident besides the current one (a rollout's candidate), with a count each.
        self._pinned: collections.Counter[int] = collections.Counter()

    # -- reads (any thread) -------------------------------------------------------------------------------------
    @property
    def latest(self) -> int:
        return self._latest

    def current_version(self) -> int:
        return self._current

    def current(self) -> V:
        with self._lock:
            return self._resident[self._current][0]

    def current_entry(self) -> tuple[V, Runnable]:
        """The current version and its runnable, read together (the worker's batch runs exactly this pair)."""
        with self._lock:
            return self._resident[self._current]

    def resident(self) -> list[V]:
        """The resident versions, least recently used first."""
        with self._lock:
            return [v for v, _ in self._resident.values()]

    def resident_versions(self) -> list[int]:
        """Resident version numbers, least recently used first."""
        with self._lock:
            return list(self._resident)

    def kept_beside_new(self) -> list[V]:
        """The resident versions that stay in memory once a new version is installed as current (it takes the place
        of the least recently used one beyond `capacity - 1`): what a candidate is budgeted beside."""
        with self._lock:
            kept = [v for v, _ in self._resident.values()]
        return kept[max(0, len(kept) - (self.capacity - 1)) :] if self.capacity > 1 else []

    def runnable(self, version: int) -> Runnable | None:
        """The runnable of a resident version (and it counts as used), or None."""
        with self._lock:
            hit = self._resident.get(version)
            if hit is None:
                return None
            self._resident.move_to_end(version)
            return hit[1]

    def cached(self, version: int) -> V | None:
        """The version if it is in memory, resident or loaded (never loads)."""
        with self._lock:
            hit = self._resident.get(version)
            if hit is not None:
                return hit[0]
            v = self._loaded.get(version)
            if v is not None:
                self._loaded.move_to_end(version)
            return v

    def get(self, version: int | None = None) -> V:
        """A version, from memory or (blocking: call it off the event loop) from the store; NotFoundError for a number
        the history never had."""
        if version is None:
            return self.current()
        hit = self.cached(version)
        if hit is not None:
            return hit
        if not 1 <= version <= self._latest:
            raise NotFoundError(
                f"model {self.model!r} has no version {version} (latest is {self._latest})", version=version
            )
        v = self._load(version)
        with self._lock:
            self._loaded[version] = v
            self._loaded.move_to_end(version)
            while len(self._loaded) > self.capacity:
                self._loaded.popitem(last=False)
        return v

    # -- changes --------------------------------------------------------------------------------------------------
    def prepare(self, version: V) -> Runnable:
        """Place a candidate on the device and warm it up; nothing here changes (it joins with `install`)."""
        return self._prepare(version)

    def publish(self, version: V | int) -> None:
        """Record that a version exists in the history (committed here or applied from the journal), before it is
        installed: the next version number comes after it."""
        number = version if isinstance(version, int) else version.version
        with self._lock:
            if number <= self._latest:
                raise ValueError(f"version {number} of {self.model!r} is not past {self._latest}")
            self._latest = number

    def saw(self, number: int) -> None:
        """The history has reached `number` elsewhere (a staged version another replica committed): later
        numbers come after it. Unlike `publish`, an older number is no error."""
        with self._lock:
            self._latest = max(self._latest, number)

    def install(self, version: V, runnable: Runnable, *, current: bool = False) -> None:
        """Make a version resident, and current when `current` (only the device worker asks for that, between two
        batches); evicts the least recently used resident versions beyond `capacity`, never the current one."""
        with self._lock:
            self._resident[version.version] = (version, runnable)
            self._resident.move_to_end(version.version)
            self._loaded.pop(version.version, None)
            if current:
                self._current = version.version
            evicted = self._trim()
        self._evicted(evicted)

    def replace(self, version: int, runnable: Runnable) -> bool:
        """Run resident `version` with another runnable of the same graph (its compiled one); False when it is not
        resident any more. Only the device worker calls it, between two batches, as it does `install`."""
        with self._lock:
            hit = self._resident.get(version)
            if hit is None:
                return False
            self._resident[version] = (hit[0], runnable)  # its place in the LRU order stays
            return True

    def make_resident(self, version: V) -> Runnable | None:
        """Bring an evicted version back onto the device (resident, not current) for a request that names it.
        Returns its runnable, which that request may run on even if others evict the version again meanwhile, or
        None when it was resident already."""
        with self._placing:
            if self.runnable(version.version) is not None:
                return None
            runnable = self._prepare(version)
            self.install(version, runnable)
            return runnable

    def pin(self, version: int) -> None:
        """Keep a version resident until `unpin` (a rollout's candidate takes traffic), beyond the capacity if it
        must: the pinned versions and the current one are never evicted."""
        with self._lock:
            self._pinned[version] += 1

    def unpin(self, version: int) -> None:
        with self._lock:
            self._pinned[version] -= 1
            if self._pinned[version] <= 0:
                del self._pinned[version]
            evicted = self._trim()
        self._evicted(evicted)

    def pinned(self) -> set[int]:
        with self._lock:
            return set(self._pinned)

    def evict(self, versions: Iterable[int]) -> None:
        """Forget versions (deleted by gc) from memory; never the current or a pinned one."""
        with self._lock:
            gone = [v for v in versions if v != self._current and v not in self._pinned]
            for v in gone:
                self._resident.pop(v, None)
                self._loaded.pop(v, None)
        self._evicted(bool(gone))

    def _trim(self) -> bool:
        evicted = False
        while len(self._resident) > self.capacity:
            oldest = next((v for v in self._resident if v != self._current and v not in self._pinned), None)
            if oldest is None:  # everything left is current or pinned
                break
            del self._resident[oldest]
            evicted = True
        return evicted

    def _evicted(self, evicted: bool) -> None:
        if evicted and self._on_evict is not None:
            with self._lock:
                resident = [v for v, _ in self._resident.values()]
            self._on_evict(resident)

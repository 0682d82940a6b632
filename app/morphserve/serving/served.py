"""One served model: its version history, its device worker, its placement, and the locks that order its edits."""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from morphserve.graph import LiveModel, ModelVersion, NotFoundError

from .placement import Placement
from .worker import DeviceWorker


@dataclass(eq=False)
class ServedModel:
    live: LiveModel
    worker: DeviceWorker
    placement: Placement
    #: Edits, gc and delete of this model take it, in that order of business: one at a time.
    edit_lock: threading.Lock = field(default_factory=threading.Lock)
    #: Bringing an evicted version back onto the device.
    load_lock: threading.Lock = field(default_factory=threading.Lock)
    #: Versions reloaded from the store for views or old-version inference, most recent last (bounded).
    reloaded: collections.OrderedDict[int, ModelVersion] = field(default_factory=collections.OrderedDict)
    cache_lock: threading.Lock = field(default_factory=threading.Lock)
    #: Set under `edit_lock` by delete: an edit that was waiting for the lock must not journal a row for it.
    deleted: bool = False
    #: Which creation of this model name the journal knows it as (a model deleted and created again elsewhere is
    #: another model); None for a model the journal does not hold.
    incarnation: str | None = None
    #: Requests waiting for a version (`?min_version=`), as (version, loop, future); resolved when it is live.
    _gates: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = field(default_factory=list)
    _gate_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def name(self) -> str:
        return self.live.name

    def check_alive(self) -> None:
        if self.deleted:
            raise NotFoundError(f"model {self.name!r} does not exist (it was deleted)", model=self.name)

    def serving_version(self) -> int:
        """The version requests run on now. The history learns of a version before the worker swaps it in (so
        that any version a response reports is known), so `live.current` may be one ahead of it for a moment:
        read-your-writes must wait for this one."""
        v = self.worker.current_version()
        return self.live.current.version if v is None else v

    async def reached(self, version: int, timeout: float) -> bool:
        """Wait until `version` (or a later one) is live here, at most `timeout` seconds."""
        if self.serving_version() >= version:
            return True
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._gate_lock:
            self._gates.append((version, loop, fut))
        if self.serving_version() >= version:  # it went live while we registered
            return True
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            with self._gate_lock:
                self._gates = [g for g in self._gates if g[2] is not fut]

    def went_live(self, version: int) -> None:
        """Called (from any thread) after `version` was swapped in: wakes the requests that waited for it."""
        with self._gate_lock:
            ready = [(loop, fut) for v, loop, fut in self._gates if v <= version]
        for loop, fut in ready:
            loop.call_soon_threadsafe(lambda f=fut: f.done() or f.set_result(None))


def caching_loader(
    served: Callable[[], ServedModel], load: Callable[[int], ModelVersion], keep: int
) -> Callable[[int], ModelVersion]:
    """A LiveModel loader that keeps the last `keep` reloaded versions, so views of an old version do not reload it
    on every request. Called from worker threads only (never the event loop)."""

    def loader(version: int) -> ModelVersion:
        s = served()
        with s.cache_lock:
            hit = s.reloaded.get(version)
            if hit is not None:
                s.reloaded.move_to_end(version)
                return hit
        v = load(version)
        with s.cache_lock:
            s.reloaded[version] = v
            while len(s.reloaded) > keep:
                s.reloaded.popitem(last=False)
        return v

    return loader

"""One served model: its version history, its device worker, its placement, and the locks that order its edits."""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from app.graph import LiveModel, ModelVersion, NotFoundError

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

    @property
    def name(self) -> str:
        return self.live.name

    def check_alive(self) -> None:
        if self.deleted:
            raise NotFoundError(f"model {self.name!r} does not exist (it was deleted)", model=self.name)


def caching_loader(served: Callable[[], ServedModel], load: Callable[[int], ModelVersion], keep: int
                   ) -> Callable[[int], ModelVersion]:  # fmt: skip
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

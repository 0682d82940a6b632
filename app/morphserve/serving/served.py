"""One served model: which of its versions are in memory and which one serves (its residency), its device worker,
and the locks that order its edits."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

from morphserve.graph import ModelVersion, NotFoundError

from .residency import Residency
from .worker import DeviceWorker


@dataclass(eq=False)
class ServedModel:
    residency: Residency[ModelVersion]
    worker: DeviceWorker
    #: Edits, gc and delete of this model take it, in that order of business: one at a time.
    edit_lock: threading.Lock = field(default_factory=threading.Lock)
    #: Set under `edit_lock` by delete: an edit that was waiting for the lock must not journal a row for it.
    deleted: bool = False
    #: Which creation of this model name the journal knows it as (a model deleted and created again elsewhere is
    #: another model); None for a model the journal does not hold.
    incarnation: str | None = None
    #: The last version swapped in here and when (time.time() after its swap; None before the first): the
    #: commit-to-serving lag of this replica is that time minus the journal row's committed_at.
    went_live_at: tuple[int, float] | None = None
    #: Requests waiting for a version (`?min_version=`), as (version, loop, future); resolved when it is live.
    _gates: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = field(default_factory=list)
    _gate_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def name(self) -> str:
        return self.residency.model

    def current(self) -> ModelVersion:
        """The version requests that name none run on now (swapped in by the worker, not merely committed)."""
        return self.residency.current()

    def check_alive(self) -> None:
        if self.deleted:
            raise NotFoundError(f"model {self.name!r} does not exist (it was deleted)", model=self.name)

    def live_since(self, version: int) -> float | None:
        """When `version` went live here, if it is the last version swapped in."""
        last = self.went_live_at
        return last[1] if last is not None and last[0] == version else None

    def serving_version(self) -> int:
        """The number of the version requests run on now: read-your-writes waits for this one."""
        return self.residency.current_version()

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

    def went_live(self, version: int, at: float | None = None) -> None:
        """Called (from any thread) after `version` was swapped in (at `at`, time.time()): wakes the requests that
        waited for it."""
        if at is not None:
            self.went_live_at = (version, at)
        with self._gate_lock:
            ready = [(loop, fut) for v, loop, fut in self._gates if v <= version]
        for loop, fut in ready:
            loop.call_soon_threadsafe(_resolve, fut)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)

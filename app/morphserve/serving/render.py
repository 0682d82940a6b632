"""Graph renders (SVG through graphviz's `dot`, DOT text) on a pool of their own, bounded and cancellable.

Before, a render ran `dot` from a thread of the one pool every blocking call shares: six requests for the SVG of a
385-node graph held all six threads, so graph JSON, exports, edits and creates waited for over 100 s, and `dot`
kept both cores busy for ~150 s after the clients had gone. Layout time is not bounded by size (a 200-node graph
with long edges takes seconds, 400 nodes minutes). So here:

- renders run `--render-workers` (1) at a time, at most `WAITING_PER_WORKER` more wait (503 beyond), on a thread
  pool of their own (DOT text) and in `dot` processes at a lower CPU priority (and killed if the server dies):
  nothing else waits behind them;
- a graph of more than `--max-render-nodes` nodes is refused before anything runs (422: use format=json);
- `dot` is killed when it runs past `--render-timeout-s` (504) or when the request is cancelled (its client went
  away: the route watches the connection);
- a version's SVG is kept once made (versions never change), so a render waiting for its turn behind another of
  the same version answers at once.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from morphserve.graph import ModelVersion
from morphserve.graph.views import to_dot

from .errors import RenderBusyError, RenderTimeoutError, RenderTooLargeError, RenderUnavailableError

#: Renders that may wait for a free worker, per worker.
WAITING_PER_WORKER = 8
#: `nice` increment of a `dot` process: a layout takes what the serving process leaves.
DOT_NICENESS = 10
T = TypeVar("T")


def _dot_argv(dot: str) -> list[str] | None:
    """The command that runs `dot -Tsvg` at a lower CPU priority and (Linux) killed if the server dies first, so
    that no layout outlives the process that wanted it; None without graphviz. Priority and death signal come from
    `nice` and `setpriv` (coreutils, util-linux), each exec'ing the next, rather than from a preexec function: with
    one, every spawn was a full fork() of the server on the event loop's thread (its page tables copied: 60 ms of
    the loop for one SVG, seen by tests/integration/test_event_loop.py); without, Python spawns by vfork."""
    found = shutil.which(dot)
    if found is None:
        return None
    argv = [found, "-Tsvg"]
    nice = shutil.which("nice")
    if nice is not None:
        argv = [nice, "-n", str(DOT_NICENESS), *argv]
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    if setpriv is not None:
        argv = [setpriv, "--pdeathsig", "KILL", *argv]
    return argv


class Renders:
    def __init__(self, workers: int, timeout_s: float, max_nodes: int, dot: str = "dot") -> None:
        self.workers, self.timeout_s, self.max_nodes, self.dot = workers, timeout_s, max_nodes, dot
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="render")
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )
        self._svg: weakref.WeakKeyDictionary[ModelVersion, bytes] = weakref.WeakKeyDictionary()
        self._waiting = 0
        #: `dot` processes running now (their pids), for tests and for close().
        self.running: set[asyncio.subprocess.Process] = set()

    def close(self) -> None:
        for proc in list(self.running):
            if proc.returncode is None:
                proc.kill()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _check_size(self, v: ModelVersion, what: str) -> None:
        nodes = len(v.spec.nodes)
        if nodes > self.max_nodes:
            raise RenderTooLargeError(
                f"{what} of {v.model!r} v{v.version} is not drawn: it has {nodes} nodes, more than "
                f"{self.max_nodes} (--max-render-nodes); ask for format=json (the web page lays it out itself)",
                nodes=nodes,
                limit=self.max_nodes,
            )

    async def _turn(self) -> asyncio.Semaphore:
        """Wait for a render slot of this event loop (503 when too many wait already)."""
        loop = asyncio.get_running_loop()
        slots = self._slots.get(loop)
        if slots is None:
            slots = self._slots[loop] = asyncio.Semaphore(self.workers)
        if slots.locked() and self._waiting >= WAITING_PER_WORKER * self.workers:
            raise RenderBusyError(f"{self._waiting} graph renders are waiting already; retry shortly")
        self._waiting += 1
        try:
            await slots.acquire()
        finally:
            self._waiting -= 1
        return slots

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def dot_text(self, v: ModelVersion) -> str:
        slots = await self._turn()
        try:
            return await self._run(lambda: to_dot(v))
        finally:
            slots.release()

    async def svg(self, v: ModelVersion) -> bytes:
        """The SVG of `v`; cancelling the call (a client gone) kills its `dot`."""
        self._check_size(v, "the SVG")
        done = self._svg.get(v)
        if done is not None:
            return done
        slots = await self._turn()
        try:
            done = self._svg.get(v)  # made while this one waited
            if done is not None:
                return done
            text = await self._run(lambda: to_dot(v))
            svg = await self._dot(text.encode())
            self._svg[v] = svg
            return svg
        finally:
            slots.release()

    async def _dot(self, source: bytes) -> bytes:
        argv = _dot_argv(self.dot)
        if argv is None:
            raise RenderUnavailableError(
                "SVG needs graphviz's 'dot' program, which is not installed on the server; use format=dot"
            )
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        self.running.add(proc)
        try:
            out, err = await asyncio.wait_for(proc.communicate(source), self.timeout_s)
        except TimeoutError:
            raise RenderTimeoutError(
                f"drawing the graph took more than {self.timeout_s:g} s (--render-timeout-s) and was stopped; ask "
                "for format=json (the web page lays it out itself) or format=dot"
            ) from None
        finally:
            if proc.returncode is None:  # timed out, or the request was cancelled: the layout goes with it
                proc.kill()
                await asyncio.shield(proc.wait())
            self.running.discard(proc)
        if proc.returncode != 0:  # our DOT text, graphviz's failure: the server's fault (500, logged)
            raise RuntimeError(f"graphviz's dot failed: {err.decode(errors='replace').strip()[:300]}")
        return out

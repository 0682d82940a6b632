"""Compiled graphs that follow edits: each new current version serves eager at once, and is compiled in the background.

Why in the background: an inductor compile takes seconds to a minute (a small ResNet: ~30 s on 2 busy cores), and a
graph that changes at run time would otherwise pay that on every edit, in the edit's latency or in a warm-up spike
(serve#3261, pytorch#118492). Here the edit goes live eager as before; one compile thread per server then

1. traces the version's fx GraphModule with `torch.compile` (inductor, or the `--compile` mode), the batch dimension
   of every input marked dynamic, so that batches of any size run a compiled graph without recompiling. Dynamo
   specialises size 1, and a kernel choice may guard a range (the CPU convolution's fake kernel splits batches at 16),
   so the thread then runs the compiled graph at sizes 1, 2, 4, ... up to the largest batch the worker forms: each
   size outside the graphs compiled so far compiles one more (a ResNet: three graphs), and serving never has to;
2. checks the compiled graph against the eager one on a warm-up batch of a third size (every output allclose within a
   tolerance of its dtype); a compile that fails or disagrees is logged, recorded in the model's status, and the
   version keeps serving eager;
3. hands the worker the compiled runnable, which installs it between two batches (`DeviceWorker.replace`: same
   version, same number, another runnable), as it swaps versions. The runnable is `torch._dynamo.run` over the graph:
   it runs only what was compiled, and a batch no compiled graph fits (a new non-batch size) runs eager instead of
   compiling on the worker's thread.

A compile never delays serving by more than a bounded slice, as far as the interpreter allows. Its thread runs at a
lower CPU priority (nice), and inductor builds its C++ in a pool of two worker processes started from that thread
(they inherit its nice value), so no gcc is spawned from the server's own process (each spawn forks a process of the
server's size while holding the interpreter's lock). While live requests wait, the thread gives the interpreter back
every `slice_s` for `pause_s` (a profile hook on its own thread only): tracing and lowering are Python, and without
the hook they would hold the GIL in 5 ms turns against the event loop. What the hook cannot cut are single C-level
steps that hold the lock (dynamo building a graph's guards, loading the compiled module: measured up to ~80 ms on
this 2-core machine); docs/BENCHMARKS.md has serving's p99 while a compile runs. A compile under load takes longer;
serving does not wait for it.

Artifacts are cached by inductor's FX graph cache (keyed by the graph, the shapes and the options; weights are inputs
of the graph, so a weight edit reuses them) under `--compile-cache-dir` (default: the state dir's `compile-cache`),
so a rollback to a graph seen before or a restart recompiles from the cache in a fraction of the time; replicas that
point the setting at one shared directory share it (see docs/API.md, "Compiled graphs", for what that does and does
not give).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import torch

from morphserve.graph import ModelVersion
from morphserve.graph.errors import short_message

from .served import ServedModel

log = logging.getLogger("morphserve.compile")

MODES = ("off", "default", "max-autotune")
#: Output tolerance of the check against eager, by compute dtype: (rtol, atol as a share of the largest |output|).
_TOLERANCE = {torch.float16: (1e-2, 1e-2), torch.bfloat16: (5e-2, 5e-2)}
_FP32_TOLERANCE = (1e-3, 1e-4)
_ENDED = ("serving", "failed", "superseded")


_PRELOAD = threading.Lock()


def preload() -> None:
    """Import dynamo and inductor's compiler on the calling thread, before the compile thread needs them: two threads
    importing torch._inductor at once (dynamo's first use elsewhere, as the shape primer makes) can see a partially
    initialised module and fail the compile."""
    with _PRELOAD:
        import torch._dynamo
        import torch._inductor.compile_fx  # noqa: F401
        from torch._inductor import cpu_vec_isa

        # The CPU's vector ISA is found by compiling and running a probe program, once per process: here rather than
        # in the middle of the first compile (a process spawn, ~200 ms holding the interpreter's lock).
        with contextlib.suppress(Exception):
            cpu_vec_isa.pick_vec_isa()


class CompileMismatchError(RuntimeError):
    """The compiled graph's outputs differ from the eager graph's on the warm-up batch."""


@dataclass
class CompileState:
    """Where the compile of a model's current version stands (the model's status shows it)."""

    version: int
    mode: str
    #: queued, compiling, serving (the compiled graph serves), failed (eager serves), superseded (a newer version came)
    state: str
    #: time.time() when the version went live (eager): edit-to-compiled counts from here.
    live_at: float
    compile_s: float | None = None
    #: seconds from the version going live eager to its compiled graph serving.
    edit_to_compiled_s: float | None = None
    #: "hit" when inductor's FX graph cache had the graph (a rollback, a restart), else "miss".
    cache: str | None = None
    error: str | None = None

    def view(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}


@dataclass
class _Job:
    served: ServedModel
    version: ModelVersion
    mode: str
    live_at: float


class Compiler:
    """One per registry: the compile thread, the per-model modes and each model's compile state."""

    def __init__(
        self,
        mode: str,
        cache_dir: Path,
        busy: Callable[[], bool] = lambda: False,
        *,
        backend: str | Callable[..., Any] = "inductor",
        slice_s: float = 0.002,
        pause_s: float = 0.008,
        nice: int = 10,
        check_rows: int = 3,
        max_batch_size: int = 32,
    ) -> None:
        """`mode`: the server's default (`off`, `default`, `max-autotune`); a model may have its own (`set_mode`).
        `busy()`: whether live requests wait or run now (the thread then yields every `slice_s` for `pause_s`).
        `backend`: torch.compile's backend (tests pass a failing or a cheap one)."""
        if mode not in MODES:
            raise ValueError(f"compile mode {mode!r} is not one of {', '.join(MODES)}")
        if mode != "off":
            preload()
        self.mode = mode
        self.cache_dir = cache_dir
        self.busy = busy
        self.backend = backend
        self.slice_s, self.pause_s, self.nice, self.check_rows = slice_s, pause_s, nice, check_rows
        self.max_batch_size = max_batch_size
        self._modes: dict[str, str] = {}
        self._states: dict[str, CompileState] = {}
        self._jobs: dict[str, _Job] = {}  # the newest job per model: an older one is superseded before it starts
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._configured = False

    # -- modes ----------------------------------------------------------------------------------------------------
    def mode_of(self, model: str) -> str:
        return self._modes.get(model, self.mode)

    def set_mode(self, model: str, mode: str | None) -> None:
        """A model's own mode (None: the server's)."""
        if mode is None:
            self._modes.pop(model, None)
        elif mode not in MODES:
            raise ValueError(f"compile mode {mode!r} is not one of {', '.join(MODES)}")
        else:
            if mode != "off":
                preload()
            self._modes[model] = mode

    # -- from other threads ---------------------------------------------------------------------------------------
    def schedule(self, served: ServedModel, version: ModelVersion) -> None:
        """`version` went live on `served` (eager): compile it in the background unless the model's mode is off.
        Never blocks (the device worker calls it right after a swap)."""
        mode = self.mode_of(served.name)
        if mode == "off":
            self._states.pop(served.name, None)
            return
        job = _Job(served, version, mode, time.time())
        with self._cond:
            if self._stopping:
                return
            old = self._jobs.get(served.name)
            if old is not None:
                was = old.version.version
                log.info("model %s: compile of version %d superseded by %d", served.name, was, version.version)
            self._jobs[served.name] = job
            self._states[served.name] = CompileState(version.version, mode, "queued", job.live_at)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="compile", daemon=True)
                self._thread.start()
            self._cond.notify()

    def forget(self, model: str) -> None:
        with self._cond:
            self._jobs.pop(model, None)
            self._states.pop(model, None)
            self._modes.pop(model, None)

    def status(self, model: str) -> dict[str, Any] | None:
        state = self._states.get(model)
        return None if state is None else state.view()

    def wait(self, model: str, version: int, timeout: float) -> CompileState | None:
        """Until the compile of `version` has ended (serving, failed or superseded), at most `timeout` s."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                state = self._states.get(model)
                ended = state is not None and (state.version > version or state.state in _ENDED)
                if ended:
                    return state
                left = deadline - time.monotonic()
                if left <= 0:
                    return state
                self._cond.wait(left)

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._jobs.clear()
            self._cond.notify_all()
        # A compile in flight is not interruptible; the thread is a daemon and ends with the process.

    # -- the compile thread ---------------------------------------------------------------------------------------
    def _loop(self) -> None:
        self._lower_priority()
        while True:
            with self._cond:
                while not self._jobs and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                name = next(iter(self._jobs))
                job = self._jobs.pop(name)
                state = self._states[name]
                state.state = "compiling"
            try:
                self._run(job, state)
            except Exception as e:  # noqa: BLE001 - a failed compile is logged and the version keeps serving eager
                why = reason(e)
                number = job.version.version
                log.warning("model %s: compile of version %d failed, it serves eager: %s", name, number, why)
                with self._cond:
                    state.state, state.error = "failed", why[:500]
            with self._cond:
                self._cond.notify_all()

    def _run(self, job: _Job, state: CompileState) -> None:
        served, version = job.served, job.version
        current, eager = served.residency.current_entry()
        if served.deleted or current.version != version.version:
            state.state = "superseded"
            return
        self._configure()
        t0 = time.perf_counter()
        hits0 = _cache_hits()
        with self._yielding():
            runnable = compile_version(
                version, eager, job.mode, self.backend, self.check_rows, batch_sizes(self.max_batch_size)
            )
        state.compile_s = time.perf_counter() - t0
        state.cache = "hit" if _cache_hits() > hits0 else "miss"
        if not served.worker.replace(version.version, runnable).result(timeout=60):
            state.state = "superseded"  # evicted meanwhile (a newer version took its place)
            return
        state.state = "serving"
        state.edit_to_compiled_s = time.time() - job.live_at
        log.info(
            "model %s: version %d serves compiled (%s, %.1f s, cache %s)",
            served.name,
            version.version,
            job.mode,
            state.compile_s,
            state.cache,
        )

    def _configure(self) -> None:
        """Point inductor at the cache directory and keep its work in this thread, once, before the first compile."""
        if self._configured:
            return
        import torch._inductor.config as inductor_config

        self.cache_dir.mkdir(parents=True, exist_ok=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(self.cache_dir.resolve())
        # Two compile workers: inductor then builds its C++ in a pool of worker processes (started once, from this
        # thread, so at its nice value), not in gcc processes spawned from the server's own: each such spawn forks
        # a process of the server's size while holding the interpreter's lock, a stall of tens to hundreds of ms
        # that serving would see (measured: probe wake-ups > 20 ms fell from 17 to 5 in an mlp compile).
        inductor_config.compile_threads = 2
        inductor_config.fx_graph_cache = True
        self._configured = True

    def _lower_priority(self) -> None:
        """This thread (and the gcc processes it starts, which inherit a thread's nice value) yield the CPU to
        serving; Linux's nice is per thread."""
        if self.nice <= 0 or not hasattr(os, "setpriority"):
            return
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
        except OSError as e:
            log.info("compile thread keeps its priority: %s", e)

    @contextlib.contextmanager
    def _yielding(self) -> Iterator[None]:
        """While live requests wait, give the interpreter back every `slice_s` for `pause_s` (this thread only)."""
        busy, slice_s, pause_s = self.busy, self.slice_s, self.pause_s
        mark = [time.perf_counter(), 0]

        def hook(frame: FrameType, event: str, arg: Any) -> None:
            mark[1] += 1
            if mark[1] < 32:
                return
            mark[1] = 0
            now = time.perf_counter()
            if now - mark[0] >= slice_s:
                if busy():
                    time.sleep(pause_s)
                mark[0] = time.perf_counter()

        sys.setprofile(hook)
        try:
            yield
        finally:
            sys.setprofile(None)


def compile_version(
    version: ModelVersion,
    eager: Callable[..., Sequence[torch.Tensor]],
    mode: str,
    backend: str | Callable[..., Any] = "inductor",
    check_rows: int = 3,
    sizes: Sequence[int] = (2, 1),
) -> Callable[..., Sequence[torch.Tensor]]:
    """Compile `eager` (the version's placed GraphModule) with a dynamic batch dimension at each batch size of
    `sizes` (the first marks the dimension dynamic), check it against eager on a batch of `check_rows` rows, and
    return the runnable that serves it (blocking; seconds to minutes)."""
    if not isinstance(eager, torch.nn.Module):
        raise TypeError(f"cannot compile a {type(eager).__name__}: the runnable is not a module")
    device = next((p.device for p in eager.parameters()), torch.device("cpu"))
    options: dict[str, Any] = {"backend": backend, "dynamic": None}
    if backend == "inductor" and mode == "max-autotune":
        options["mode"] = "max-autotune"
    compiled = torch.compile(eager, **options)
    # The inputs are made as the worker makes its batches, outside inference mode: dynamo's guards tell an inference
    # tensor from another (their dispatch keys differ), and a graph compiled for one never serves the other.
    examples = [_example(version, rows, device, dynamic=i == 0) for i, rows in enumerate(sizes)]
    check = _example(version, check_rows, device, dynamic=False)
    with torch.inference_mode():  # as the worker runs its forwards
        for args in examples:
            compiled(*args)
        runnable = torch._dynamo.run(eager)
        want = eager(*check)
        got = runnable(*check)
    _check(want, got)
    return runnable  # type: ignore[no-any-return]  # dynamo's run() is typed Any


def batch_sizes(max_batch_size: int) -> list[int]:
    """The sizes compiled ahead of serving: 2 (the dynamic graph), 1, then 4, 8, ... and the largest batch."""
    sizes = [2, 1]
    n = 4
    while n < max_batch_size:
        sizes.append(n)
        n *= 2
    if max_batch_size > 2:
        sizes.append(max_batch_size)
    return sizes


def _example(version: ModelVersion, rows: int, device: torch.device, *, dynamic: bool) -> list[torch.Tensor]:
    """Inputs of the version's signature with `rows` rows (other free dimensions: 32, as the warm-up has them)."""
    gen = torch.Generator().manual_seed(rows)
    args = []
    for spec in version.inputs:
        shape = [rows if i == 0 else (32 if d == -1 else d) for i, d in enumerate(spec.shape)]
        dtype = spec.dtype
        random = dtype.is_floating_point
        t = (torch.randn(shape, generator=gen).to(dtype) if random else torch.zeros(shape, dtype=dtype)).to(device)
        if dynamic:
            torch._dynamo.mark_dynamic(t, 0)
        args.append(t)
    return args


def _check(want: Sequence[torch.Tensor], got: Sequence[torch.Tensor]) -> None:
    if len(want) != len(got):
        raise CompileMismatchError(f"the compiled graph has {len(got)} outputs, the eager one {len(want)}")
    for i, (w, g) in enumerate(zip(want, got, strict=True)):
        if w.shape != g.shape or w.dtype != g.dtype:
            raise CompileMismatchError(
                f"output {i}: compiled {list(g.shape)} {g.dtype}, eager {list(w.shape)} {w.dtype}"
            )
        if not w.dtype.is_floating_point:
            if not torch.equal(w, g):
                raise CompileMismatchError(f"output {i}: compiled and eager outputs differ")
            continue
        rtol, atol = _TOLERANCE.get(w.dtype, _FP32_TOLERANCE)
        scale = float(w.abs().max()) if w.numel() else 0.0
        if not torch.allclose(g.float(), w.float(), rtol=rtol, atol=atol * max(1.0, scale), equal_nan=True):
            worst = float((g.float() - w.float()).abs().max())
            raise CompileMismatchError(
                f"output {i}: compiled and eager outputs differ by up to {worst:.3g} "
                f"(tolerance rtol {rtol}, atol {atol})"
            )


def reason(e: BaseException) -> str:
    """Why a compile failed, in one line: dynamo wraps a backend's exception, whose own message is the useful one."""
    inner = getattr(e, "inner_exception", None)
    cause = inner if isinstance(inner, BaseException) else e
    return f"{type(cause).__name__}: {short_message(cause)}"


def _cache_hits() -> int:
    from torch._dynamo.utils import counters

    return int(counters["inductor"]["fxgraph_cache_hit"])

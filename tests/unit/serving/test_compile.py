"""Background compilation of current versions: equal outputs, the compiled graph swapped in between batches with no
failed request, a failed or disagreeing compile falling back to eager (logged, in the status), an edit that never
waits for a compile, and the compile thread yielding to live traffic.

Most tests compile with dynamo's `eager` backend (the whole path, tracing, dynamic batch, check and swap, in about a
second); the `slow` ones run inductor itself, and its cache across a weight edit."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from morphserve.graph import load_zoo
from morphserve.serving.budget import MemoryBudget
from morphserve.serving.compile import CompileMismatchError, Compiler, batch_sizes, compile_version
from morphserve.serving.metrics import Metrics
from morphserve.serving.pipeline import EditPipeline
from morphserve.serving.served import ServedModel
from tests.integration.helpers import head_ops

from .helpers import ServeFactory, X, memory_store, run

WAIT = 60.0


@pytest.fixture
def compilers() -> Iterator[Callable[..., Compiler]]:
    made: list[Compiler] = []

    def make(tmp: Path, backend: Any = "eager", mode: str = "default", **kw: Any) -> Compiler:
        c = Compiler(mode, tmp / "cache", backend=backend, max_batch_size=8, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def _hooked(served: ServedModel, compiler: Compiler) -> ServedModel:
    """Wire the worker's swap hook as the registry does, and compile the current version."""
    served.worker.on_swap = lambda v: compiler.schedule(served, v)
    compiler.schedule(served, served.current())
    return served


def test_batch_sizes_cover_one_two_and_up_to_the_largest_batch() -> None:
    assert batch_sizes(32) == [2, 1, 4, 8, 16, 32]
    assert batch_sizes(1) == [2, 1]


def test_compiled_outputs_equal_eager_at_batch_sizes_never_compiled() -> None:
    v = load_zoo("digits")
    runnable = compile_version(v, v.graph_module, "default", "eager", sizes=(2, 1))
    with torch.inference_mode():
        for rows in (1, 5, 13):
            x = torch.from_numpy(np.random.default_rng(rows).random((rows, 64), dtype=np.float32))
            torch.testing.assert_close(runnable(x)[0], v.graph_module(x)[0])


def test_the_worker_s_batches_run_the_compiled_graph_at_every_size() -> None:
    """Batches as the worker makes them (tensors from numpy, concatenated outside inference mode, the forward inside)
    hit a compiled graph at any size, never falling back to eager: dynamo's guards tell inference tensors apart, so
    a graph compiled for other tensors would never serve."""
    v = load_zoo("digits")
    ran: list[int] = []

    def counting(gm: torch.fx.GraphModule, _: Any) -> Callable[..., Any]:
        def run(*args: torch.Tensor) -> Any:
            ran.append(1)
            return gm(*args)

        return run

    runnable = compile_version(v, v.graph_module, "default", counting, sizes=batch_sizes(8))
    for rows in (1, 3, 8, 5):
        parts = [torch.from_numpy(np.random.default_rng(i).random((1, 64), dtype=np.float32)) for i in range(rows)]
        batch = parts[0] if rows == 1 else torch.cat(parts)
        before = len(ran)
        with torch.inference_mode():
            runnable(batch)
        assert len(ran) == before + 1, f"a batch of {rows} rows ran eager"


def test_a_compile_that_disagrees_with_eager_is_refused() -> None:
    v = load_zoo("digits")

    def off_by_one(gm: torch.fx.GraphModule, _: Any) -> Callable[..., Any]:
        return lambda *args: [o + 1 for o in gm(*args)]

    with pytest.raises(CompileMismatchError, match="differ"):
        compile_version(v, v.graph_module, "default", off_by_one, sizes=(2, 1))


def test_the_compiled_graph_is_swapped_in_between_batches_with_no_failed_request(
    serve: ServeFactory, compilers: Callable[..., Compiler], tmp_path: Path
) -> None:
    served = serve(load_zoo("digits"))
    eager = served.residency.current_entry()[1]
    want = run(served).outputs[0]
    errors: list[BaseException] = []
    answered = [0]
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                np.testing.assert_allclose(run(served).outputs[0], want, rtol=1e-5, atol=1e-6)
                answered[0] += 1
            except BaseException as e:  # noqa: BLE001 - collected and asserted below
                errors.append(e)

    client = threading.Thread(target=load)
    client.start()
    try:
        compiler = compilers(tmp_path)
        _hooked(served, compiler)
        state = compiler.wait("digits", 1, WAIT)
        assert state is not None and state.state == "serving", state
        before = answered[0]
        deadline = time.monotonic() + WAIT
        while answered[0] < before + 20 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        client.join(WAIT)
    assert not errors, errors[:3]
    assert served.residency.current_entry()[1] is not eager  # the compiled runnable serves, same version
    assert served.serving_version() == 1
    status = compiler.status("digits")
    assert status is not None and status["compile_s"] > 0 and status["edit_to_compiled_s"] >= status["compile_s"]


def test_a_failed_compile_is_logged_and_the_version_keeps_serving_eager(
    serve: ServeFactory, compilers: Callable[..., Compiler], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(gm: torch.fx.GraphModule, _: Any) -> Callable[..., Any]:
        raise RuntimeError("injected compile failure")

    served = serve(load_zoo("digits"))
    eager = served.residency.current_entry()[1]
    compiler = compilers(tmp_path, backend=broken)
    _hooked(served, compiler)
    state = compiler.wait("digits", 1, WAIT)
    assert state is not None and state.state == "failed" and "injected compile failure" in (state.error or "")
    assert served.residency.current_entry()[1] is eager
    assert run(served).version == 1
    assert any("compile of version 1 failed" in r.getMessage() for r in caplog.records)


def test_an_edit_goes_live_without_waiting_for_its_compile_and_the_new_version_compiles_next(
    serve: ServeFactory, compilers: Callable[..., Compiler], tmp_path: Path
) -> None:
    store = memory_store()
    first = load_zoo("digits")
    store.commit(first, create=True)
    served = serve(first, store=store)
    entered, release = threading.Event(), threading.Event()

    def slow(gm: torch.fx.GraphModule, _: Any) -> Callable[..., Any]:
        entered.set()
        assert release.wait(WAIT)
        return gm.forward

    compiler = compilers(tmp_path, backend=slow)
    _hooked(served, compiler)
    assert entered.wait(WAIT)  # version 1's compile is running (and blocked)
    pipeline = EditPipeline(store, Metrics(), MemoryBudget(1 << 30), None)
    try:
        t0 = time.perf_counter()
        outcome = pipeline.edit(served, head_ops(0.5))
        took = time.perf_counter() - t0
    finally:
        release.set()
        pipeline.close()
    assert outcome.version.version == 2 and took < 5.0  # live at once, eager
    assert run(served).version == 2
    np.testing.assert_allclose(run(served).outputs[0], np.full((3, 10), 0.5, dtype=np.float32))
    state = compiler.wait("digits", 2, WAIT)
    assert state is not None and state.version == 2 and state.state == "serving", state
    np.testing.assert_allclose(run(served, X).outputs[0], np.full((3, 10), 0.5, dtype=np.float32))


def test_the_compile_thread_pauses_while_live_requests_wait(tmp_path: Path) -> None:
    asked = [0]

    def busy() -> bool:
        asked[0] += 1
        return True

    compiler = Compiler("default", tmp_path, busy=busy, slice_s=0.001, pause_s=0.01)
    work = 0
    t0 = time.perf_counter()
    with compiler._yielding():
        while time.perf_counter() - t0 < 0.05:
            work += len(str(work))  # Python calls, as tracing makes
    paused = time.perf_counter() - t0
    assert asked[0] >= 2 and paused >= 0.05
    assert work < 10**7


@pytest.mark.slow
def test_inductor_compiles_serves_equal_outputs_and_reuses_its_cache_after_a_weight_edit(
    serve: ServeFactory, compilers: Callable[..., Compiler], tmp_path: Path
) -> None:
    store = memory_store()
    first = load_zoo("digits")
    store.commit(first, create=True)
    served = serve(first, store=store)
    want = run(served).outputs[0]
    compiler = compilers(tmp_path, backend="inductor")
    _hooked(served, compiler)
    state = compiler.wait("digits", 1, 600)
    assert state is not None and state.state == "serving" and state.cache == "miss", state
    np.testing.assert_allclose(run(served).outputs[0], want, rtol=1e-4, atol=1e-5)
    pipeline = EditPipeline(store, Metrics(), MemoryBudget(1 << 30), None)
    try:
        pipeline.edit(served, head_ops(0.25))  # the same graph, other weights: inductor's FX graph cache has it
    finally:
        pipeline.close()
    state = compiler.wait("digits", 2, 600)
    assert state is not None and state.version == 2 and state.state == "serving" and state.cache == "hit", state
    np.testing.assert_allclose(run(served).outputs[0], np.full((3, 10), 0.25, dtype=np.float32), atol=1e-5)

"""On a GPU: device placement shares layers across versions, inputs go through pinned memory, warm-ups run on a side
stream, workers spread over the GPUs, and FP16/BF16 models serve."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import torch

from morphserve.graph import LiveModel, load_zoo
from morphserve.serving.devices import CudaOps, ops_for
from morphserve.serving.metrics import Metrics
from morphserve.serving.placement import Placement, resolve_device, warm_up
from morphserve.serving.registry import Registry
from morphserve.settings import Settings

pytestmark = pytest.mark.cuda
X = np.random.default_rng(0).random((4, 64), dtype=np.float32)


def test_device_ops_pin_and_copy_without_blocking() -> None:
    ops = ops_for(torch.device("cuda"))
    assert isinstance(ops, CudaOps)
    (t,) = ops.to_device([torch.ones(3, 3)])
    assert t.is_cuda and torch.equal(t.cpu(), torch.ones(3, 3))


def test_warm_up_runs_on_the_side_stream() -> None:
    device = torch.device("cuda")
    v = load_zoo("digits")
    runnable = Placement(device).place(v)
    seen: list[torch.cuda.Stream] = []
    real = runnable.forward

    def spy(*args: torch.Tensor) -> object:
        seen.append(torch.cuda.current_stream())
        return real(*args)

    runnable.forward = spy  # type: ignore[method-assign]
    warm_up(v, runnable, device)
    assert seen and seen[0] != torch.cuda.default_stream()


def test_placement_shares_unchanged_layers_on_the_device() -> None:
    device = torch.device("cuda")
    live = LiveModel(load_zoo("digits"))
    p = Placement(device)
    a = p.place(live.current)
    v2 = live.propose([{"op": "set_weights", "node": "fc3", "tensors": {"bias": {"shape": [10], "data": [1.0] * 10}}}])
    b = p.place(v2)
    assert a.fc1 is b.fc1 and a.fc3 is not b.fc3 and next(b.parameters()).is_cuda


def test_workers_spread_over_the_gpus() -> None:
    n = torch.cuda.device_count()
    assert resolve_device("auto", 0) == torch.device("cuda" if n == 1 else "cuda:0")
    if n > 1:
        assert resolve_device("cuda", n + 1) == torch.device(f"cuda:{1 % n}")


@pytest.mark.parametrize("dtype", ["FP16", "BF16"])
def test_a_half_precision_model_serves_on_the_gpu(tmp_path: Path, dtype: str) -> None:
    reg = Registry(Settings(models=["digits"], state_dir=tmp_path, device="cuda", dtype=dtype), Metrics())
    reg.load_from_settings()
    try:
        out = asyncio.run(reg.infer("digits", {"input": X}))
        full = load_zoo("digits").run(torch.from_numpy(X))[0].numpy()
        assert out.outputs[0].dtype == np.float32 and np.abs(out.outputs[0] - full).max() < 0.5
        assert reg.current("digits").spec.compute_datatype == dtype
    finally:
        reg.close()

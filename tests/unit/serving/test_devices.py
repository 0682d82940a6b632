"""The device interface on the CPU (the CUDA side: tests/cuda)."""

from __future__ import annotations

import torch

from morphserve.serving.devices import CpuOps, ops_for
from morphserve.serving.placement import resolve_device


def test_cpu_ops_pass_tensors_through_and_have_no_side_stream() -> None:
    ops = ops_for(torch.device("cpu"))
    assert isinstance(ops, CpuOps) and ops_for(torch.device("cpu")) is ops
    t = torch.ones(2)
    assert ops.to_device([t])[0] is t
    with ops.side_stream():
        pass


def test_auto_is_the_cpu_without_cuda_whatever_the_worker() -> None:
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu") and resolve_device("auto") == torch.device("cpu")

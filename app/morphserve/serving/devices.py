"""What differs between a CPU and a CUDA device, behind one small interface, so the serving code has one path.

- Inputs: on CUDA a batch is copied to pinned (page-locked) host memory and sent with a non-blocking copy, so the
  copy overlaps the previous batch's compute; on the CPU the tensors are used as they are.
- Warm-ups of new versions (edits, versions brought back) run on a side CUDA stream and are synchronised on that
  stream only, so they do not queue behind (or stall) the serving stream; on the CPU there is nothing to do.
`tests/unit/serving/test_devices.py` checks the CPU side and the choice of ops; the CUDA side runs in
`pytest -m cuda` on a GPU machine (scripts/bench/gpu_check.sh).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from typing import Protocol

import torch


class DeviceOps(Protocol):
    device: torch.device

    def to_device(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]: ...

    def side_stream(self) -> contextlib.AbstractContextManager[None]:
        """Where warm-ups run; synchronised on leaving."""


class CpuOps:
    def __init__(self, device: torch.device) -> None:
        self.device = device

    def to_device(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return list(tensors)

    @contextlib.contextmanager
    def side_stream(self) -> Iterator[None]:
        yield


class CudaOps:
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._side = torch.cuda.Stream(device=device)  # type: ignore[no-untyped-call]  # torch leaves it unannotated

    def to_device(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [t.pin_memory().to(self.device, non_blocking=True) for t in tensors]

    @contextlib.contextmanager
    def side_stream(self) -> Iterator[None]:
        with torch.cuda.stream(self._side):
            yield
        self._side.synchronize()


@functools.cache
def ops_for(device: torch.device) -> DeviceOps:
    """One per device (a CUDA side stream is created once)."""
    return CudaOps(device) if device.type == "cuda" else CpuOps(device)

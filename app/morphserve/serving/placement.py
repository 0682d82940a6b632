"""Device placement of versions: the runnable a worker executes, with layers shared across versions.

On the CPU the version's own fx GraphModule runs as is. On a GPU each CPU module is copied to the device
once and the copy reused by every version that shares it, so an edit uploads only the layers it changed.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterable

import torch
import torch.fx as fx
from torch import nn

from morphserve.graph.errors import EditError, short_message
from morphserve.graph.spec import build_graph_module
from morphserve.graph.version import ModelVersion

from .devices import ops_for


def resolve_device(name: str, worker: int | None = None) -> torch.device:
    """The device a server (or worker `worker` of `--workers`) runs on: `auto` and `cuda` spread the workers over the
    GPUs (worker i takes cuda:(i mod n)); an explicit `cuda:N` or `cpu` is taken as given."""
    if name in ("auto", "cuda") and torch.cuda.is_available():
        count = torch.cuda.device_count()
        return torch.device(f"cuda:{(worker or 0) % count}" if worker is not None and count > 1 else "cuda")
    if name == "auto":
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device


class Placement:
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._copies: dict[int, tuple[nn.Module, nn.Module]] = {}  # id(cpu module) -> (cpu module, device copy)
        self._lock = threading.Lock()

    def place(self, version: ModelVersion) -> fx.GraphModule:
        if self.device.type == "cpu":
            return version.graph_module
        mods: dict[str, nn.Module] = {}
        with self._lock:
            for nid, m in version.modules.items():
                hit = self._copies.get(id(m))
                if hit is None or hit[0] is not m:
                    hit = (m, copy.deepcopy(m).to(self.device))
                    self._copies[id(m)] = hit
                mods[nid] = hit[1]
        return build_graph_module(version.spec, mods)

    def prepare(self, version: ModelVersion) -> fx.GraphModule:
        """Place a version and run its warm-up forward: what it takes before a version may serve."""
        runnable = self.place(version)
        warm_up(version, runnable, self.device)
        return runnable

    def retain(self, versions: Iterable[ModelVersion]) -> None:
        """Free device copies no longer used by any of `versions` (the resident ones)."""
        keep = {id(m) for v in versions for m in v.modules.values()}
        with self._lock:
            for k in [k for k in self._copies if k not in keep]:
                del self._copies[k]


def warm_up(version: ModelVersion, runnable: Callable[..., object], device: torch.device) -> None:
    """One forward on a one-row input before a version may serve: it must run, not just type-check."""
    args = []
    for t in version.inputs:
        args.append(torch.zeros(t.example_shape(batch=1), dtype=t.dtype, device=device))  # inside the input's bounds
    try:
        with ops_for(device).side_stream(), torch.inference_mode():  # off the serving stream on a GPU
            runnable(*args)
    except Exception as e:  # noqa: BLE001 - any failure means the version must not go live
        raise EditError(f"the new version failed its warm-up forward: {short_message(e)}") from None

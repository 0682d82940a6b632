"""Inference statistics per model and version, as Triton's statistics extension reports them.

Counted where each thing is known, with no lock on the hot path: the device worker records its batches (queue time of
each request, and the batch's input preparation, forward and output copy) on its own thread; the registry records each
request's outcome (success or failure, end to end) on the event loop. The two write disjoint fields, and an integer
field written by one thread and read by another is consistent under the interpreter's lock (a snapshot may be one
batch behind, never torn).

Triton's meanings, kept here: `inference_count` counts batch rows (each row of a batched request is one inference);
`execution_count` counts forwards; `queue`, `compute_input`, `compute_infer` and `compute_output` count requests, each
charged its batch's whole duration (as Triton's backends report one timestamp set per batch for all its requests);
`batch_stats` count forwards per batch size (rows). Background work (a rollout's shadow runs, evaluations) is not
serving and is not counted.
"""

from __future__ import annotations

import time
from typing import Any

#: Fields of Triton's `inference_stats`, in its order.
DURATIONS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output", "cache_hit", "cache_miss")


class VersionStats:
    """Counters of one version: [count, ns] per duration, and per batch size [count, input ns, infer ns, output ns]."""

    __slots__ = ("batches", "durations", "execution_count", "inference_count", "last_inference")

    def __init__(self) -> None:
        self.durations: dict[str, list[int]] = {name: [0, 0] for name in DURATIONS}
        self.batches: dict[int, list[int]] = {}
        self.inference_count = 0
        self.execution_count = 0
        self.last_inference = 0  # milliseconds since the epoch

    def view(self) -> dict[str, Any]:
        stats = {name: {"count": c, "ns": ns} for name, (c, ns) in self.durations.items()}
        batches = [
            {
                "batch_size": size,
                "compute_input": {"count": n, "ns": ci},
                "compute_infer": {"count": n, "ns": cf},
                "compute_output": {"count": n, "ns": co},
            }
            for size, (n, ci, cf, co) in sorted(self.batches.items())
        ]
        return {
            "last_inference": self.last_inference,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": stats,
            "batch_stats": batches,
        }


class ModelStats:
    """The statistics of one served model, by version number."""

    def __init__(self, keep: int = 64) -> None:
        """`keep`: statistics are kept for this many versions, the newest numbers (a model edited every second for
        a day must not grow a table of 86,400 entries)."""
        self._versions: dict[int, VersionStats] = {}
        self.keep = keep

    def of(self, version: int) -> VersionStats:
        found = self._versions.get(version)
        if found is None:
            found = self._versions.setdefault(version, VersionStats())  # setdefault: one wins if two threads race
            if len(self._versions) > self.keep:
                self._versions.pop(min(self._versions), None)
        return found

    def batch(
        self, version: int, rows: int, requests: int, queue_ns: int, inputs_ns: int, infer_ns: int, out_ns: int
    ) -> None:
        """A forward of `requests` requests (`rows` rows) that waited `queue_ns` in all (the worker's thread)."""
        s = self.of(version)
        d = s.durations
        d["queue"][0] += requests
        d["queue"][1] += queue_ns
        for name, ns in (("compute_input", inputs_ns), ("compute_infer", infer_ns), ("compute_output", out_ns)):
            d[name][0] += requests
            d[name][1] += ns * requests
        b = s.batches.get(rows)
        if b is None:
            b = s.batches.setdefault(rows, [0, 0, 0, 0])
        b[0] += 1
        b[1] += inputs_ns
        b[2] += infer_ns
        b[3] += out_ns
        s.inference_count += rows
        s.execution_count += 1

    def request(self, version: int, ns: int, ok: bool) -> None:
        """One request's outcome and its time end to end (the event loop's thread)."""
        s = self.of(version)
        d = s.durations["success" if ok else "fail"]
        d[0] += 1
        d[1] += ns
        if ok:
            s.last_inference = time.time_ns() // 1_000_000

    def versions(self) -> list[int]:
        return sorted(self._versions)

    def view(self, version: int) -> dict[str, Any] | None:
        found = self._versions.get(version)
        return None if found is None else found.view()

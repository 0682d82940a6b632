"""The feedback window: the inputs of the last N requests, by request id, so that a label sent later builds a
dataset without the client sending the tensors again (opt-in: `--feedback-window N`, off by default).

Kept in memory only, never logged and never journalled: what becomes durable is the dataset a feedback call builds.
Bounded twice: N requests, and `max_bytes` of input; the oldest go first.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Mapping

import numpy as np


class FeedbackWindow:
    def __init__(self, size: int, max_bytes: int) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self._kept: collections.OrderedDict[tuple[str, str], dict[str, np.ndarray]] = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.size > 0

    def keep(self, model: str, request_id: str, arrays: Mapping[str, np.ndarray]) -> None:
        if not self.enabled:
            return
        held = {k: v for k, v in arrays.items()}
        size = sum(a.nbytes for a in held.values())
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._kept.pop((model, request_id), None)
            if old is not None:
                self._bytes -= sum(a.nbytes for a in old.values())
            self._kept[(model, request_id)] = held
            self._bytes += size
            while len(self._kept) > self.size or self._bytes > self.max_bytes:
                _, gone = self._kept.popitem(last=False)
                self._bytes -= sum(a.nbytes for a in gone.values())

    def find(self, model: str, request_ids: list[str]) -> dict[str, dict[str, np.ndarray]]:
        """The inputs still held of each id (ids no longer, or never, held are absent)."""
        with self._lock:
            return {r: held for r in request_ids if (held := self._kept.get((model, r))) is not None}

    def forget(self, model: str) -> None:
        with self._lock:
            for key in [k for k in self._kept if k[0] == model]:
                self._bytes -= sum(a.nbytes for a in self._kept.pop(key).values())

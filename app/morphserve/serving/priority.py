"""Edit priority: while an edit is being built, the interpreter hands the GIL over more often.

Why: under load the event loop holds the GIL almost all the time (HTTP parsing, routing, JSON). The edit thread
releases the GIL around every torch call and file write, and each time it wants it back it waits for the loop
thread to give it up, which CPython asks for only after the switch interval (5 ms by default). An edit that makes
a few hundred such calls takes ~10 ms on an idle server and ~100 ms at c=64 (docs/BENCHMARKS.md, "Edit-to-live").
A short switch interval for the few milliseconds an edit runs lets it take the GIL back at once; serving pays
a little more switching for that time and nothing the rest of the time. One process-wide setting, so the
windows of concurrent edits (of different models) are counted and the default comes back when the last ends.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class SwitchIntervalBoost:
    def __init__(self, interval_s: float | None) -> None:
        """`interval_s`: the switch interval while any edit runs; None leaves the interpreter's alone."""
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._active = 0
        self._saved: float | None = None

    @contextmanager
    def boosted(self) -> Iterator[None]:
        if self.interval_s is None:
            yield
            return
        with self._lock:
            if self._active == 0:
                self._saved = sys.getswitchinterval()
                sys.setswitchinterval(min(self.interval_s, self._saved))
            self._active += 1
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1
                if self._active == 0 and self._saved is not None:
                    sys.setswitchinterval(self._saved)
                    self._saved = None

"""A lock that says who waits for it: tests wait until a thread is blocked on a lock instead of sleeping."""

from __future__ import annotations

import threading


class WatchedLock:
    """A `threading.Lock` stand-in (acquire/release/context manager) that knows the threads blocked on it, so that a
    test can wait for "that thread now waits for the lock" itself, not a sleep that hopes it got there."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._guard = threading.Lock()
        self._waiting: list[threading.Thread] = []

    def waiting(self) -> list[threading.Thread]:
        """The threads blocked in `acquire` now (found it held and wait for it)."""
        with self._guard:
            return list(self._waiting)

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self._lock.acquire(blocking=False):
            return True
        if not blocking:
            return False
        me = threading.current_thread()
        with self._guard:
            self._waiting.append(me)
        try:
            return self._lock.acquire(timeout=timeout)
        finally:
            with self._guard:
                self._waiting.remove(me)

    def release(self) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

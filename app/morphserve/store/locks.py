"""Per-model edit locks for the journals without a database server: a lock file (processes sharing a state dir,
the workers of `serve --workers N`) and a plain threading lock (the in-memory journal).

Both wait up to a timeout and then raise `JournalUnreachableError` ("busy": a retry may succeed), as the
PostgreSQL advisory lock does.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .records import JournalUnreachableError, StoreUnavailableError

#: How long an editor waits for another editor of the same model.
EDIT_LOCK_TIMEOUT_S = 30.0
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def lock_name(model: str) -> str:
    """A file name for a model's lock: the name itself where it is a valid model name (which cannot start with a
    dot or contain a slash), else a hash of it."""
    if _SAFE.fullmatch(model):
        return f"{model}.lock"
    return f"~{hashlib.sha256(model.encode()).hexdigest()[:32]}.lock"


def _busy(model: str, timeout: float) -> JournalUnreachableError:
    return JournalUnreachableError(f"another editor of {model!r} has held its edit lock for {timeout:g} s; try again")


@contextmanager
def file_lock(directory: Path, model: str, timeout: float) -> Iterator[None]:
    """An exclusive `flock` on `<directory>/<model>.lock`. flock belongs to the open file, so it excludes other
    threads of this process as well as other processes, and the kernel releases it when its holder dies."""
    path = directory / lock_name(model)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise StoreUnavailableError(f"the edit lock {path} cannot be opened: {e.strerror or e}") from None
    try:
        deadline = time.monotonic() + timeout
        pause = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise _busy(model, timeout) from None
                time.sleep(pause)
                pause = min(pause * 2, 0.02)
        yield
    finally:
        os.close(fd)  # closing the file releases its lock


class ModelLocks:
    """One threading lock per model name, for a journal that lives in one process."""

    def __init__(self) -> None:
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    @contextmanager
    def hold(self, model: str, timeout: float) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(model, threading.Lock())
        if not lock.acquire(timeout=max(timeout, 0.0)):
            raise _busy(model, timeout)
        try:
            yield
        finally:
            lock.release()

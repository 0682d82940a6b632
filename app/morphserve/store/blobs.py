"""Content-addressed weight blobs in a local directory: one safetensors file per layer's tensors, named by the
SHA-256 of its bytes.

Identical tensors hash to the same name, so every version that did not change a layer shares its blob, and
writing a blob twice is a no-op. A blob is written to a temporary file, fsynced, renamed into place and the
directory fsynced, so a crash leaves either no blob or a whole one — never a torn file under a valid name.
"""

from __future__ import annotations

import errno
import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from .records import BlobCorruptError, StorageFullError, StoreError, StoreUnavailableError


def os_error(e: OSError, what: str, needed: int | None = None) -> StoreError:
    """The store error an OS failure means: a full disk, or a state dir that cannot be written."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        more = f"; {needed} bytes were needed" if needed is not None else ""
        return StorageFullError(f"no space left for {what}{more}", needed)
    return StoreUnavailableError(f"{what} cannot be written: {e.strerror or e}")


class DirBlobs:
    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root
        self.where = str(root)
        self.fsync = fsync
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise os_error(e, f"the blob directory {root}") from None

    def path(self, digest: str) -> Path:
        return self.root / digest[:2] / f"{digest}.safetensors"

    def locate(self, digest: str) -> str:
        return str(self.path(digest))

    def put(self, digest: str, data: bytes) -> None:
        final = self.path(digest)
        if final.exists():
            return
        tmp = final.parent / f".tmp-{uuid.uuid4().hex}"
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
                if self.fsync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, final)
            if self.fsync:
                _fsync_dir(final.parent)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise os_error(e, f"weight blob {final} in the state dir {self.root.parent}", len(data)) from None

    def get(self, digest: str) -> bytes:
        path = self.path(digest)
        try:
            return path.read_bytes()
        except OSError as e:
            raise BlobCorruptError(str(path), f"cannot be read ({e.strerror or e})") from None

    def repair(self, digest: str) -> bytes:
        return self.get(digest)  # no other copy to fall back on

    def present(self, digests: Iterable[str]) -> set[str]:
        return {d for d in digests if self.path(d).exists()}

    def listing(self) -> Iterator[tuple[str, float]]:
        for p in self.root.glob("*/*.safetensors"):
            try:
                yield p.stem, p.stat().st_mtime
            except FileNotFoundError:
                continue

    def delete(self, digests: Iterable[str]) -> int:
        n = 0
        for d in digests:
            try:
                self.path(d).unlink()
                n += 1
            except FileNotFoundError:
                pass
        return n

    def sweep_temporaries(self) -> int:
        n = 0
        for p in self.root.glob("*/.tmp-*"):
            p.unlink(missing_ok=True)
            n += 1
        return n

    def reset(self) -> None:
        for p in self.root.glob("*/*"):
            p.unlink(missing_ok=True)

    def close(self) -> None:
        pass


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""System shared memory regions (Triton's extension): a client on the same host passes tensors by reference.

A client creates a POSIX shared memory object (`shm_open`, tritonclient.utils.shared_memory), registers a window of it
with the server under a name (key, offset, byte size: with the admin token), and then names the region, an offset and
a byte size in an inference request's input or output parameters instead of sending the bytes. The server reads the
inputs out of the window and writes the outputs into it; the request and the response carry only the references.

Every reference is checked against its region's window (offset and size non-negative, inside the window), and every
window against the object's size when it is registered, so a request can never read or write outside what its owner
registered. Regions end when their owner is done with them, which here means any of:
- an explicit unregister (one region by name, or all of them);
- the owner removing the object (`shm_unlink`, as tritonclient's `destroy_shared_memory_region` does): the server keeps
  the object's file descriptor and sees its link count drop to 0, at the region's next use or listing, and unregisters
  it then (the memory goes once the server's mapping does); an object shrunk below the window is dropped the same way;
- the server stopping (every mapping is closed).
A client process that dies without unlinking leaves its object in /dev/shm, as POSIX does; the region stays
registered until one of the above. One hazard is left, as in Triton: a holder of the token who shrinks the object in the
instant between that check and the copy makes the server's copy fault (SIGBUS).

Reads copy out of the mapping and writes copy into it, all on the event loop's thread (HTTP and gRPC alike), so an
unregister never races a request that uses the region. With `--workers N` each worker process would hold its own
regions, and a request could reach a worker that never saw the registration: registration is refused there.
"""

from __future__ import annotations

import mmap
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import BadInputError

if TYPE_CHECKING:
    from .cuda_shm import CudaSharedMemory

#: Where Linux keeps POSIX shared memory objects (shm_open's names, without their leading slash).
SHM_DIR = Path("/dev/shm")
MAX_REGIONS = 1024
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_KEY = re.compile(r"^/?[A-Za-z0-9_.:-]{1,250}$")


class SharedMemoryError(BadInputError):
    """A region that cannot be registered or used as asked (the client's mistake: a 400 / INVALID_ARGUMENT)."""


class SharedMemoryNotFoundError(SharedMemoryError):
    """A request names a region that is not registered."""


@dataclass
class Region:
    name: str
    key: str
    offset: int
    byte_size: int
    fd: int
    mapping: mmap.mmap

    def view(self) -> dict[str, object]:
        return {"name": self.name, "key": self.key, "offset": self.offset, "byte_size": self.byte_size}

    def unlinked(self) -> bool:
        """Whether the owner removed the object (its last link is gone), or shrank it below the window (touching the
        mapping past the object's end would kill the server with SIGBUS)."""
        try:
            info = os.fstat(self.fd)
        except OSError:
            return True
        return info.st_nlink == 0 or info.st_size < self.offset + self.byte_size

    def close(self) -> None:
        try:
            self.mapping.close()
        except BufferError:  # a view of it is still alive somewhere: the mapping goes when that view does
            pass
        finally:
            os.close(self.fd)


class SystemSharedMemory:
    """The registered regions of one server process."""

    def __init__(self, *, enabled: bool = True, why_not: str = "", directory: Path = SHM_DIR) -> None:
        self.enabled, self.why_not, self.directory = enabled, why_not, directory
        self._regions: dict[str, Region] = {}

    def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        if not self.enabled:
            raise SharedMemoryError(f"system shared memory is not available on this server: {self.why_not}")
        if not isinstance(name, str) or not _NAME.match(name):
            raise SharedMemoryError(f"region name {name!r} must match {_NAME.pattern}")
        if not isinstance(key, str) or not _KEY.match(key) or key.strip("/") in (".", ".."):
            raise SharedMemoryError(f"shared memory key {key!r} must be a POSIX shared memory name like /name")
        for what, value in (("offset", offset), ("byte_size", byte_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise SharedMemoryError(f"region {name!r}: {what} must be a non-negative integer, got {value!r}")
        if byte_size == 0:
            raise SharedMemoryError(f"region {name!r}: byte_size must be positive")
        self.sweep()
        if name in self._regions:
            raise SharedMemoryError(f"shared memory region {name!r} is already registered (unregister it first)")
        if len(self._regions) >= MAX_REGIONS:
            raise SharedMemoryError(f"{MAX_REGIONS} shared memory regions are registered already; unregister some")
        path = self.directory / key.lstrip("/")
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            raise SharedMemoryError(
                f"region {name!r}: cannot open shared memory object {key!r}: {e.strerror or e}"
            ) from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise SharedMemoryError(f"region {name!r}: {key!r} is not a shared memory object")
            if offset + byte_size > info.st_size:
                raise SharedMemoryError(
                    f"region {name!r}: offset {offset} + byte_size {byte_size} is beyond the end of {key!r} "
                    f"({info.st_size} bytes)"
                )
            mapping = mmap.mmap(fd, offset + byte_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            raise
        self._regions[name] = Region(name, key, offset, byte_size, fd, mapping)

    def unregister(self, name: str | None = None) -> None:
        """One region (unknown names are no error, as in Triton), or every region when `name` is None or empty."""
        names = list(self._regions) if not name else [name]
        for n in names:
            region = self._regions.pop(n, None)
            if region is not None:
                region.close()

    def status(self, name: str | None = None) -> list[dict[str, object]]:
        self.sweep()
        if name:
            return [self._get(name).view()]
        return [r.view() for r in self._regions.values()]

    def sweep(self) -> None:
        """Unregister the regions whose object its owner removed."""
        for region in [r for r in self._regions.values() if r.unlinked()]:
            self.unregister(region.name)

    def _get(self, name: str) -> Region:
        region = self._regions.get(name)
        if region is None:
            raise SharedMemoryNotFoundError(f"unknown shared memory region {name!r}")
        if region.unlinked():
            self.unregister(name)
            raise SharedMemoryNotFoundError(
                f"shared memory region {name!r} was removed or shrunk by its owner: unregistered"
            )
        return region

    def _window(self, region: Region, offset: int, byte_size: int, what: str) -> int:
        """The start of [offset, offset + byte_size) in the mapping, after the bounds check."""
        for label, value in (("offset", offset), ("byte_size", byte_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise SharedMemoryError(f"{what}: shared memory {label} must be a non-negative integer, got {value!r}")
        if offset + byte_size > region.byte_size:
            raise SharedMemoryError(
                f"{what}: offset {offset} + byte_size {byte_size} is outside shared memory region {region.name!r} "
                f"({region.byte_size} bytes)"
            )
        return region.offset + offset

    def has(self, name: str) -> bool:
        return name in self._regions

    def read(self, name: str, offset: int, byte_size: int, what: str = "input") -> memoryview:
        """A view of `byte_size` bytes at `offset` of the region, for the caller to copy at once (on this thread)."""
        region = self._get(name)
        start = self._window(region, offset, byte_size, what)
        return memoryview(region.mapping)[start : start + byte_size]

    def write(self, name: str, offset: int, byte_size: int, data: memoryview, what: str = "output") -> int:
        """Copy `data` into the region at `offset`; the window [offset, offset + byte_size) must hold it. The bytes
        written."""
        region = self._get(name)
        start = self._window(region, offset, byte_size, what)
        n = data.nbytes
        if n > byte_size:
            raise SharedMemoryError(
                f"{what} needs {n} bytes, but its shared memory window in region {name!r} has {byte_size}"
            )
        region.mapping[start : start + n] = data
        return n

    def close(self) -> None:
        self.unregister(None)


class SharedMemory:
    """The regions a request may name, system and CUDA alike (one namespace per kind, as in Triton: a name is looked
    up among the system regions first)."""

    def __init__(self, system: SystemSharedMemory, cuda: CudaSharedMemory) -> None:
        self.system, self.cuda = system, cuda

    def _backend(self, name: str) -> SystemSharedMemory | CudaSharedMemory:
        if self.system.has(name):
            return self.system
        if self.cuda.has(name):
            return self.cuda
        raise SharedMemoryNotFoundError(f"unknown shared memory region {name!r} (register it first)")

    def read(self, name: str, offset: int, byte_size: int, what: str) -> bytes | memoryview:
        return self._backend(name).read(name, offset, byte_size, what)

    def write(self, name: str, offset: int, byte_size: int, data: memoryview, what: str) -> int:
        return self._backend(name).write(name, offset, byte_size, data, what)

    def close(self) -> None:
        self.system.close()
        self.cuda.close()

"""CUDA shared memory regions (Triton's extension), only on a server that runs its models on a GPU.

A client on the same host allocates device memory, exports it as a CUDA IPC handle (`cudaIpcGetMemHandle`, 64 bytes)
and registers it under a name with its device and byte size; requests then name the region for inputs and outputs as
with system shared memory. This server opens the handle (`cudaIpcOpenMemHandle`) once at registration and closes it at
unregistration or when the server stops.

What is built (docs/API.md, "CUDA shared memory", has the design and what is left): inputs are copied device to host
into the request's arrays and outputs host to device into the region (`cudaMemcpy`), so the protocol works end to end
and a client keeps its tensors on the device; the zero-copy step (the worker taking a device tensor as its batch
input and writing its output into the region, one device-to-device copy each way) is designed there, not built. A
server without CUDA refuses registration with a message that says so. The CUDA runtime is reached through ctypes
(`libcudart`, loaded by torch's CUDA build already), since neither torch nor the standard library exposes the IPC
calls; the CPU-only CI never loads it, and scripts/bench/gpu_check.sh runs tests/cuda/test_cuda_shm.py on a GPU.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
from dataclasses import dataclass

import torch

from .shm import MAX_REGIONS, SharedMemoryError, SharedMemoryNotFoundError

IPC_HANDLE_SIZE = 64
_MEMCPY_HOST_TO_DEVICE, _MEMCPY_DEVICE_TO_HOST = 1, 2
_LAZY_ENABLE_PEER_ACCESS = 1


class _IpcHandle(ctypes.Structure):
    _fields_ = [("reserved", ctypes.c_char * IPC_HANDLE_SIZE)]


class _CudaRuntime:
    """The four CUDA runtime calls this needs."""

    def __init__(self) -> None:
        self.lib = ctypes.CDLL(_find_cudart())
        self.lib.cudaIpcOpenMemHandle.argtypes = [ctypes.POINTER(ctypes.c_void_p), _IpcHandle, ctypes.c_uint]
        self.lib.cudaIpcCloseMemHandle.argtypes = [ctypes.c_void_p]
        self.lib.cudaMemcpy.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        self.lib.cudaSetDevice.argtypes = [ctypes.c_int]
        self.lib.cudaGetErrorString.restype = ctypes.c_char_p

    def check(self, code: int, what: str) -> None:
        if code != 0:
            message = self.lib.cudaGetErrorString(code).decode(errors="replace")
            raise SharedMemoryError(f"{what}: CUDA error {code} ({message})")

    def open(self, handle: bytes, device_id: int) -> int:
        self.check(self.lib.cudaSetDevice(device_id), f"cudaSetDevice({device_id})")
        ptr = ctypes.c_void_p()
        h = _IpcHandle()
        ctypes.memmove(ctypes.addressof(h), handle, IPC_HANDLE_SIZE)
        code = self.lib.cudaIpcOpenMemHandle(ctypes.byref(ptr), h, _LAZY_ENABLE_PEER_ACCESS)
        self.check(code, "cudaIpcOpenMemHandle")
        return int(ptr.value or 0)

    def close(self, ptr: int) -> None:
        self.lib.cudaIpcCloseMemHandle(ctypes.c_void_p(ptr))

    def copy(self, dst: int, src: int, n: int, kind: int) -> None:
        self.check(self.lib.cudaMemcpy(ctypes.c_void_p(dst), ctypes.c_void_p(src), n, kind), "cudaMemcpy")


def _find_cudart() -> str:
    """torch's CUDA wheels carry libcudart in the nvidia-cuda-runtime package; a system CUDA has it on the path."""
    for base in [os.path.dirname(torch.__file__), *(p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p)]:
        for found in glob.glob(os.path.join(base, "..", "nvidia", "cuda_runtime", "lib", "libcudart.so*")) + glob.glob(
            os.path.join(base, "libcudart.so*")
        ):
            return found
    name = ctypes.util.find_library("cudart")
    if name is None:
        raise SharedMemoryError("CUDA shared memory: the CUDA runtime library (libcudart) was not found")
    return name


@dataclass
class CudaRegion:
    name: str
    device_id: int
    byte_size: int
    ptr: int

    def view(self) -> dict[str, object]:
        return {"name": self.name, "device_id": self.device_id, "byte_size": self.byte_size}


class CudaSharedMemory:
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.enabled = device.type == "cuda" and torch.cuda.is_available()
        self._regions: dict[str, CudaRegion] = {}
        self._runtime: _CudaRuntime | None = None

    def _cuda(self) -> _CudaRuntime:
        if not self.enabled:
            raise SharedMemoryError(
                f"CUDA shared memory needs a GPU: this server runs its models on {self.device} "
                "(use system shared memory, /v2/systemsharedmemory)"
            )
        if self._runtime is None:
            self._runtime = _CudaRuntime()
        return self._runtime

    def register(self, name: str, raw_handle: bytes, device_id: int, byte_size: int) -> None:
        cuda = self._cuda()
        if not name or len(name) > 128:
            raise SharedMemoryError(f"region name {name!r} must have 1 to 128 characters")
        if len(raw_handle) != IPC_HANDLE_SIZE:
            raise SharedMemoryError(f"region {name!r}: raw_handle must be a {IPC_HANDLE_SIZE}-byte cudaIpcMemHandle")
        devices = torch.cuda.device_count()
        if isinstance(device_id, bool) or not isinstance(device_id, int) or not 0 <= device_id < devices:
            raise SharedMemoryError(f"region {name!r}: no CUDA device {device_id!r}")
        if isinstance(byte_size, bool) or not isinstance(byte_size, int) or byte_size <= 0:
            raise SharedMemoryError(f"region {name!r}: byte_size must be a positive integer")
        if name in self._regions:
            raise SharedMemoryError(f"CUDA shared memory region {name!r} is already registered (unregister it first)")
        if len(self._regions) >= MAX_REGIONS:
            raise SharedMemoryError(f"{MAX_REGIONS} CUDA shared memory regions are registered already")
        self._regions[name] = CudaRegion(name, device_id, byte_size, cuda.open(raw_handle, device_id))

    def unregister(self, name: str | None = None) -> None:
        for n in list(self._regions) if not name else [name]:
            region = self._regions.pop(n, None)
            if region is not None and self._runtime is not None:
                self._runtime.close(region.ptr)

    def has(self, name: str) -> bool:
        return name in self._regions

    def status(self, name: str | None = None) -> list[dict[str, object]]:
        if name:
            return [self._get(name).view()]
        return [r.view() for r in self._regions.values()]

    def _get(self, name: str) -> CudaRegion:
        region = self._regions.get(name)
        if region is None:
            raise SharedMemoryNotFoundError(f"unknown CUDA shared memory region {name!r}")
        return region

    def _window(self, region: CudaRegion, offset: int, byte_size: int, what: str) -> int:
        for label, value in (("offset", offset), ("byte_size", byte_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise SharedMemoryError(f"{what}: shared memory {label} must be a non-negative integer, got {value!r}")
        if offset + byte_size > region.byte_size:
            raise SharedMemoryError(
                f"{what}: offset {offset} + byte_size {byte_size} is outside CUDA shared memory region "
                f"{region.name!r} ({region.byte_size} bytes)"
            )
        return region.ptr + offset

    def read(self, name: str, offset: int, byte_size: int, what: str = "input") -> bytes:
        region = self._get(name)
        src = self._window(region, offset, byte_size, what)
        out = ctypes.create_string_buffer(byte_size)
        self._cuda().copy(ctypes.addressof(out), src, byte_size, _MEMCPY_DEVICE_TO_HOST)
        return out.raw

    def write(self, name: str, offset: int, byte_size: int, data: memoryview, what: str = "output") -> int:
        region = self._get(name)
        dst = self._window(region, offset, byte_size, what)
        raw = bytes(data)
        if len(raw) > byte_size:
            raise SharedMemoryError(f"{what} needs {len(raw)} bytes, its CUDA shared memory window has {byte_size}")
        buf = ctypes.create_string_buffer(raw, len(raw))
        self._cuda().copy(dst, ctypes.addressof(buf), len(raw), _MEMCPY_HOST_TO_DEVICE)
        return len(raw)

    def close(self) -> None:
        self.unregister(None)

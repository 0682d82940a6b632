"""Content-addressed weight blobs: one safetensors file per layer's tensors, named by its SHA-256.

Identical tensors hash to the same name, so every version that did not change a layer shares its blob, and
writing a blob twice is a no-op. A blob is written to a temporary file, fsynced, renamed into place and the
directory fsynced, so a crash leaves either no blob or a whole one — never a torn file under a valid name.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save


class BlobCorruptError(Exception):
    """A blob's content does not match its name (or it cannot be parsed)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"weight blob {path} is corrupt: {reason}")
        self.path = path


class BlobStore:
    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root
        self.fsync = fsync
        root.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        return self.root / digest[:2] / f"{digest}.safetensors"

    @staticmethod
    def encode(tensors: dict[str, torch.Tensor]) -> tuple[str, bytes]:
        data = st_save({k: v.detach().contiguous().cpu() for k, v in sorted(tensors.items())})
        return hashlib.sha256(data).hexdigest(), data

    def put(self, tensors: dict[str, torch.Tensor]) -> str:
        digest, data = self.encode(tensors)
        self.write(digest, data)
        return digest

    def write(self, digest: str, data: bytes) -> None:
        final = self.path(digest)
        if final.exists():
            return
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{uuid.uuid4().hex}"
        with open(tmp, "wb") as f:
            f.write(data)
            if self.fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, final)
        if self.fsync:
            _fsync_dir(final.parent)

    def get(self, digest: str) -> dict[str, torch.Tensor]:
        """The tensors of a blob, after checking that its content still hashes to its name."""
        path = self.path(digest)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise BlobCorruptError(path, f"cannot be read ({e.strerror or e})") from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise BlobCorruptError(path, f"its content hashes to {actual[:16]}…")
        try:
            return st_load(data)
        except Exception as e:  # noqa: BLE001 - a parse failure is corruption too
            raise BlobCorruptError(path, f"not a safetensors file ({e})") from None

    def digests(self) -> set[str]:
        return {p.stem for p in self.root.glob("*/*.safetensors")}

    def delete(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)

    def sweep_temporaries(self) -> int:
        """Remove half-written temporaries left by a crash (never referenced by the journal)."""
        n = 0
        for p in self.root.glob("*/.tmp-*"):
            p.unlink(missing_ok=True)
            n += 1
        return n


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

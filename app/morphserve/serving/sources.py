"""Where a model's first version comes from: the zoo, a JSON spec, a bundle file (zip / directory / spec file), or
a bundle zip uploaded over HTTP.

Each source is a small object with `load(name, budget)`, so that the registry serves any of them the same way and
a new kind of source is one more class, not another branch.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import shutil
import tempfile
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Protocol

import torch

from morphserve.graph import ZOO, ModelSpec, ModelVersion, SpecError, from_spec, load_zoo, parse_spec, read_bundle
from morphserve.graph.bundle import BundleLimits, json_depth
from morphserve.graph.zoo import zoo_spec
from morphserve.store import StorageFullError, StoreUnavailableError

from .budget import MemoryBudget

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):  # (`$` alone would let a trailing newline through)
        raise SpecError(f"model name {name!r} must match {NAME.pattern}")
    return name


class ModelSource(Protocol):
    def load(self, name: str | None, budget: MemoryBudget) -> ModelVersion:
        """Version 1, named `name` (or the source's own name), sized against `budget` before it is built."""

    def __str__(self) -> str: ...


@dataclass(frozen=True)
class ZooSource:
    zoo: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def load(self, name: str | None, budget: MemoryBudget) -> ModelVersion:
        budget.check_spec(zoo_spec(self.zoo, **self.options))
        return load_zoo(self.zoo, as_name=check_name(name or self.zoo), **self.options)

    def __str__(self) -> str:
        return f"zoo model {self.zoo}"


@dataclass(frozen=True)
class SpecSource:
    spec: Mapping[str, Any]
    tensors: Mapping[str, torch.Tensor] | None = None

    def load(self, name: str | None, budget: MemoryBudget) -> ModelVersion:
        depth, most = json_depth(dict(self.spec)), BundleLimits().max_spec_depth
        if depth > most:
            raise SpecError(f"the spec is nested {depth} levels deep; a spec may nest at most {most}", limit=most)
        spec = parse_spec(dict(self.spec))
        budget.check_spec(spec)
        return from_spec(spec, self.tensors, name=check_name(name or spec.name))

    def __str__(self) -> str:
        return "a JSON spec"


@dataclass(frozen=True)
class BundleSource:
    path: Path
    limits: BundleLimits = BundleLimits()

    def load(self, name: str | None, budget: MemoryBudget) -> ModelVersion:
        parsed: list[ModelSpec] = []

        def weights_limit(spec: dict[str, Any]) -> int:
            """The spec is sized against the budget before a byte of the weights is read, and bounds them."""
            parsed.append(parse_spec(spec))
            return budget.check_spec(parsed[0])

        spec, tensors = read_bundle(self.path, limits=self.limits, weights_limit=weights_limit)
        model = parsed[0] if parsed else parse_spec(spec)
        if not parsed:
            budget.check_spec(model)
        return from_spec(model, tensors, name=check_name(name or spec.get("name") or self.path.stem))

    def __str__(self) -> str:
        return f"bundle {self.path}"


#: Spools are written in pieces of this size: few thread hops per upload, little memory per upload.
SPOOL_CHUNK = 1 << 20
#: A spool left by a process that is gone (killed mid-upload) is removed once it is this old.
STALE_SPOOL_S = 600.0
_SPOOL_PREFIX = ".upload-"


class UploadedBundle:
    """A bundle zip arriving over HTTP, as a model source.

    The body is spooled to a temp file piece by piece (never whole in memory), under the state dir when there is
    one (the system temp dir is often RAM), then loaded like any bundle file. The file goes on `close()` (the
    context manager's exit) whatever happened: created, refused, or a client that went away mid-upload. Each
    spool is a directory `.upload-<pid>-<random>/` holding `<name>.zip`, so that messages about a bad bundle name
    the model's file rather than a random one, and a spool whose process died can be told apart and swept.
    """

    def __init__(self, name: str, directory: Path | None = None, limits: BundleLimits = BundleLimits()) -> None:
        self.name = check_name(name)
        self.limits = limits
        self.size = 0
        self._buffer = bytearray()
        try:
            if directory is not None:
                directory.mkdir(exist_ok=True)
                sweep_spools(directory)
            self._dir = Path(tempfile.mkdtemp(prefix=f"{_SPOOL_PREFIX}{os.getpid()}-", dir=directory))
            self.path = self._dir / f"{self.name}.zip"
            self._file: BinaryIO | None = open(self.path, "wb")  # noqa: SIM115 - closed by close()
        except OSError as e:
            raise _spool_error(e, directory) from None

    async def write(self, chunk: bytes) -> None:
        """Append a piece of the body; the disk write runs in a thread once a full piece is buffered."""
        self._buffer += chunk
        self.size += len(chunk)
        if len(self._buffer) >= SPOOL_CHUNK:
            await self._flush()

    async def finish(self) -> None:
        """The body is complete: write what is buffered and close the file, so that it can be read."""
        await self._flush()
        file, self._file = self._file, None
        if file is not None:
            await asyncio.to_thread(file.close)

    async def _flush(self) -> None:
        data, self._buffer = bytes(self._buffer), bytearray()
        if data and self._file is not None:
            try:
                await asyncio.to_thread(self._file.write, data)
            except OSError as e:
                raise _spool_error(e, self._dir.parent) from None

    def load(self, name: str | None, budget: MemoryBudget) -> ModelVersion:
        if self._file is not None:
            raise RuntimeError("UploadedBundle.load before finish()")
        if not zipfile.is_zipfile(self.path):
            raise SpecError(
                "the upload is not a zip file: send a bundle (a zip of spec.json + weights.safetensors, "
                "as `morphserve import` or an export writes it)"
            )
        return BundleSource(self.path, self.limits).load(name or self.name, budget)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> UploadedBundle:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __str__(self) -> str:
        return f"an uploaded bundle ({self.size:,} bytes)"


def _spool_error(e: OSError, directory: Path | None) -> Exception:
    where = directory or Path(tempfile.gettempdir())
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFullError(f"no space left under {where} for the uploaded bundle")
    return StoreUnavailableError(f"cannot keep the uploaded bundle under {where}: {e.strerror or e}")


def sweep_spools(directory: Path, stale_s: float = STALE_SPOOL_S) -> int:
    """Remove spools left by processes that died mid-upload (not running, and untouched for `stale_s`)."""
    removed = 0
    for spool in directory.glob(f"{_SPOOL_PREFIX}*"):
        pid = spool.name.removeprefix(_SPOOL_PREFIX).split("-", 1)[0]
        try:
            if not pid.isdigit() or _alive(int(pid)):
                continue
            newest = max((p.stat().st_mtime for p in (spool, *spool.iterdir())), default=0.0)
        except OSError:  # removed meanwhile
            continue
        if time.time() - newest >= stale_s:
            shutil.rmtree(spool, ignore_errors=True)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def bundles_in(directory: Path, name: str | None = None) -> list[tuple[str | None, ModelSource]]:
    """The models of `--model-dir` (a model repository, such as the /mnt/models KServe's storage initializer fills).

    A directory that is itself a bundle (a `spec.json`: what the storage initializer leaves after unpacking a
    bundle zip) is one model, named `name` or by its spec; a bundle file (zip or spec file) likewise. Otherwise
    every bundle in it is a model named by its file stem: `*.zip`, `*.json` spec files and subdirectories that
    hold a `spec.json` (names starting with a dot are skipped: Kubernetes' volume plumbing, `..data`). `name`
    renames the one bundle of a directory that holds exactly one, under whatever file name it was stored as."""
    if not directory.exists():
        raise SpecError(f"model directory {directory} does not exist")
    if directory.is_file() or (directory / "spec.json").is_file():
        return [(name, BundleSource(directory))]
    found: list[tuple[str | None, ModelSource]] = []
    for path in sorted(directory.iterdir()):
        if path.name.startswith("."):
            continue
        if (path.is_file() and path.suffix in (".zip", ".json")) or (path.is_dir() and (path / "spec.json").is_file()):
            found.append((path.stem, BundleSource(path)))
    if not found:
        raise SpecError(
            f"model directory {directory} holds no bundle (*.zip, a spec *.json, or a directory with spec.json)"
        )
    if name is not None:
        if len(found) > 1:
            names = ", ".join(str(n) for n, _ in found)
            raise SpecError(
                f"--model-name {name!r} names the one bundle of {directory}, which holds {len(found)} ({names}): "
                "leave --model-name out to serve each under its file name"
            )
        return [(name, found[0][1])]
    return found


def parse_entry(entry: str) -> tuple[str | None, ModelSource]:
    """A `--model` entry: `zoo`, `path`, or `name=zoo|path`."""
    name, _, source = entry.partition("=") if "=" in entry else (None, "", entry)
    if source in ZOO:
        return name or source, ZooSource(source)
    path = Path(source)
    if not path.exists():
        raise SpecError(f"model source {source!r} is neither a zoo model ({', '.join(ZOO)}) nor a file")
    return name, BundleSource(path)

"""UploadedBundle: a body spooled to disk in pieces, loaded like a bundle file, and removed whatever happens; stale
spools of dead processes are swept; disk errors become the store's errors (507 / 503)."""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from morphserve.graph import SpecError, load_zoo
from morphserve.graph.bundle import bundle_bytes
from morphserve.serving import sources
from morphserve.serving.budget import MemoryBudget
from morphserve.serving.sources import SPOOL_CHUNK, UploadedBundle, sweep_spools
from morphserve.store import StorageFullError, StoreUnavailableError

BUDGET = MemoryBudget(1 << 30)


def _feed(spool: UploadedBundle, data: bytes, piece: int = 65536) -> list[int]:
    """Write `data` in pieces; the file's size on disk after each piece."""
    sizes = []

    async def go() -> None:
        for i in range(0, len(data), piece):
            await spool.write(data[i : i + piece])
            sizes.append(spool.path.stat().st_size)
        await spool.finish()

    asyncio.run(go())
    return sizes


def test_a_spool_is_written_in_pieces_and_loads_as_the_bundle(tmp_path: Path) -> None:
    digits = load_zoo("digits")
    data = b"\0" * (2 * SPOOL_CHUNK + 12345)  # several pieces
    good = bundle_bytes(digits)
    with UploadedBundle("mine", tmp_path) as spool:
        sizes = _feed(spool, data)
        assert spool.size == len(data) == spool.path.stat().st_size
        # at most one piece is held in memory: the file grew while the body came in
        assert sizes[0] == 0 and 0 < sizes[len(sizes) // 2] < len(data)
        assert spool.path.parent.parent == tmp_path and spool.path.name == "mine.zip"
    assert list(tmp_path.iterdir()) == []
    with UploadedBundle("mine", tmp_path) as spool:
        _feed(spool, good)
        v = spool.load(None, BUDGET)
    assert v.model == "mine" and list(tmp_path.iterdir()) == []
    x = torch.rand(2, 64)
    assert torch.equal(v.run(x)[0], digits.run(x)[0])


def test_the_spool_goes_on_an_error_too(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not a zip"), UploadedBundle("mine", tmp_path) as spool:
        _feed(spool, b"garbage")
        spool.load("mine", BUDGET)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="before finish"), UploadedBundle("mine", tmp_path) as spool:
        spool.load("mine", BUDGET)
    assert list(tmp_path.iterdir()) == []


def test_a_bad_name_is_refused_before_any_file_exists(tmp_path: Path) -> None:
    for name in ("../x", "", ".hidden", "a/b"):
        with pytest.raises(SpecError, match="must match"):
            UploadedBundle(name, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_disk_errors_are_the_store_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(StoreUnavailableError, match=str(a_file)):
        UploadedBundle("mine", a_file)  # the spool directory cannot be made

    def full(*a: object, **k: object) -> str:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sources.tempfile, "mkdtemp", full)
    with pytest.raises(StorageFullError, match="no space left under"):
        UploadedBundle("mine", tmp_path / "uploads")


def test_stale_spools_of_dead_processes_are_swept(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # that process has exited
    old, recent, mine = (
        tmp_path / f".upload-{dead_pid}-a",
        tmp_path / f".upload-{dead_pid}-b",
        tmp_path / f".upload-{os.getpid()}-c",
    )
    for d in (old, recent, mine):
        d.mkdir()
        (d / "m.zip").write_bytes(b"x")
    long_ago = time.time() - 2 * sources.STALE_SPOOL_S
    for p in (old, old / "m.zip", mine, mine / "m.zip"):
        os.utime(p, (long_ago, long_ago))
    other = tmp_path / "not-a-spool"
    other.mkdir()
    assert sweep_spools(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([recent.name, mine.name, other.name])


def test_a_model_directory_is_its_bundles_by_file_stem_or_one_bundle_renamed(tmp_path: Path) -> None:
    zipped = bundle_bytes(load_zoo("digits"))
    (tmp_path / "b.zip").write_bytes(zipped)
    (tmp_path / "a.zip").write_bytes(zipped)
    (tmp_path / "notes.txt").write_text("not a model")
    (tmp_path / ".hidden.zip").write_bytes(zipped)
    assert [name for name, _ in sources.bundles_in(tmp_path)] == ["a", "b"]
    with pytest.raises(SpecError, match="holds 2 \\(a, b\\)"):  # which of two would the name be?
        sources.bundles_in(tmp_path, "isvc")
    (tmp_path / "b.zip").unlink()
    ((name, source),) = sources.bundles_in(tmp_path, "isvc")
    assert name == "isvc" and source.load(name, BUDGET).model == "isvc"
    with pytest.raises(SpecError, match="does not exist"):
        sources.bundles_in(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpecError, match="holds no bundle"):
        sources.bundles_in(tmp_path / "empty")

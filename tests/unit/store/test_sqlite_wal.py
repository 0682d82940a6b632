"""The write-ahead log check (app/morphserve/store/sqlite_wal.py) against logs that SQLite itself wrote."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from morphserve.store.sqlite_wal import wal_damage


@pytest.fixture
def wal(tmp_path: Path) -> Path:
    """A copy of a live log: three committed transactions after a checkpoint, several frames each."""
    db = sqlite3.connect(tmp_path / "j.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (x TEXT)")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for i in range(3):
        db.execute("INSERT INTO t VALUES (?)", ("a" * 3000 * (i + 1),))
    shutil.copy(tmp_path / "j.db-wal", tmp_path / "copy-wal")
    db.close()
    return tmp_path / "copy-wal"


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _frame(path: Path) -> int:
    return 24 + int.from_bytes(path.read_bytes()[8:12], "big")


def test_an_intact_log_is_not_damage(wal: Path) -> None:
    assert wal_damage(wal) is None
    assert wal_damage(wal.with_name("missing-wal")) is None


def test_a_flipped_byte_before_committed_transactions_is_damage(wal: Path) -> None:
    _flip(wal, 32 + 24 + 7)  # frame 1's page
    damage = wal_damage(wal)
    assert damage is not None and str(wal) in damage and "frame 1 " in damage and "3 committed" in damage


def test_a_damaged_header_is_damage(wal: Path) -> None:
    _flip(wal, 17)  # a salt: the header's checksum fails, so SQLite ignores every frame
    damage = wal_damage(wal)
    assert damage is not None and "header" in damage


def test_a_torn_last_frame_is_not_damage(wal: Path) -> None:
    data = wal.read_bytes()
    wal.write_bytes(data[: len(data) - _frame(wal) // 2])
    assert wal_damage(wal) is None
    _flip(wal, len(wal.read_bytes()) - _frame(wal) - 10)  # the last whole frame fails too: still the torn end
    assert wal_damage(wal) is None


def test_frames_left_over_from_an_older_generation_are_not_damage(wal: Path) -> None:
    """After a checkpoint SQLite rewrites the log from its start with new salts; the old frames after the new
    ones fail the checksum but belong to the old generation."""
    data = bytearray(wal.read_bytes())
    frame = _frame(wal)
    for i in range(1, (len(data) - 32) // frame):
        at = 32 + i * frame  # frame 2 onwards now carry other salts, as if left from before a restart
        data[at + 8 : at + 16] = bytes(8)
    wal.write_bytes(bytes(data))
    assert wal_damage(wal) is None


def test_a_log_being_rewritten_while_it_is_read_is_not_damage(wal: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another worker of the same state dir writes the log while this one opens it: the first read catches a frame
    half-rewritten, the second sees it whole. Only a log that reads the same twice is reported."""
    intact = wal.read_bytes()
    _flip(wal, 32 + 24 + 7)
    torn = wal.read_bytes()
    reads = iter([torn, intact])
    monkeypatch.setattr(Path, "read_bytes", lambda self: next(reads))
    assert wal_damage(wal) is None
    reads = iter([torn, torn])
    damage = wal_damage(wal)
    assert damage is not None and "frame 1 " in damage

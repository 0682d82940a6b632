"""Damage checks for the embedded journal, made before SQLite sees the files.

SQLite reads its write-ahead log up to the first frame whose checksum fails and silently ignores the rest, so a
flipped bit in the `-wal` file loses every version acknowledged after it without an error anywhere; and a damaged
database page surfaces only when a query happens to read it. Both are checked at open, so the loss is reported
(the file named) instead of served as if nothing happened.

The log's format (https://www.sqlite.org/fileformat2.html#walformat): a 32-byte header (magic, version, page size,
checkpoint sequence, two salts, a checksum of the first 24 bytes), then frames of a 24-byte header (page number,
database size in pages for the frame that commits a transaction and 0 otherwise, the two salts, a checksum
cumulative over every frame before it) and one page. A frame belongs to the log's current generation when its
salts are the header's; frames of older generations are left over after a checkpoint restarted the log.

What counts as damage: a frame of the current generation that fails its checksum, with a *commit* frame of the
current generation after it. A torn last transaction (a crash while writing it, never acknowledged because its
fsync never returned) fails at its last frames and has no commit after it, so it is not damage.
"""

from __future__ import annotations

import struct
from pathlib import Path

HEADER = 32
FRAME_HEADER = 24
MAGIC = (0x377F0682, 0x377F0683)  # the low bit: checksums over big-endian (1) or little-endian (0) words
#: A copy of a damaged log, kept beside the journal; while it is there the journal takes no edits.
DAMAGED_SUFFIX = ".damaged"


def _checksum(data: bytes, big_endian: bool, s0: int = 0, s1: int = 0) -> tuple[int, int]:
    """SQLite's WAL checksum: Fibonacci-weighted sums of 32-bit word pairs, continued from (s0, s1)."""
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def wal_damage(wal: Path, reads: int = 3) -> str | None:
    """Why the write-ahead log `wal` loses acknowledged transactions, or None when it does not (also when it is
    missing, empty, or ends in a torn transaction).

    Damage is reported only for a log at rest: found damaged, it is read again, and it counts only when both reads
    agree. Another process of the same state dir (`serve --workers N`) may be writing the log while this one opens
    it, and a frame read half-rewritten fails its checksum without being damaged. A log that keeps changing has a
    live writer, whose SQLite holds the valid state, so it is not damage either."""
    try:
        data = wal.read_bytes()
        for _ in range(reads):
            damage = _damage(wal, data)
            if damage is None:
                return None
            again = wal.read_bytes()
            if again == data:
                return damage
            data = again
    except FileNotFoundError:
        return None
    return None


def _damage(wal: Path, data: bytes) -> str | None:
    """`wal_damage` of one read of the log."""
    if len(data) < HEADER:
        return None  # never got a header: SQLite treats it as empty, and so nothing was committed through it
    magic, _version, page_size, _seq, salt1, salt2, c0, c1 = struct.unpack(">8I", data[:HEADER])
    big_endian = bool(magic & 1)
    sane = magic in MAGIC and 512 <= page_size <= 65536 and not page_size & (page_size - 1)
    if not sane or _checksum(data[:24], big_endian) != (c0, c1):
        if len(data) == HEADER:
            return None
        return (
            f"the write-ahead log {wal} has a damaged header: SQLite ignores all of it "
            f"({len(data) - HEADER} bytes of frames)"
        )
    frame = FRAME_HEADER + page_size
    frames = (len(data) - HEADER) // frame
    s0, s1 = c0, c1
    for i in range(frames):
        at = HEADER + i * frame
        _page, _committed, f_salt1, f_salt2, f0, f1 = struct.unpack(">6I", data[at : at + FRAME_HEADER])
        if (f_salt1, f_salt2) != (salt1, salt2):
            return None  # the end of the current generation: what follows is left over from an older one
        s0, s1 = _checksum(data[at : at + 8] + data[at + FRAME_HEADER : at + frame], big_endian, s0, s1)
        if (s0, s1) != (f0, f1):
            return _lost_after(wal, data, i, frames, frame, (salt1, salt2))
    return None


def _lost_after(wal: Path, data: bytes, bad: int, frames: int, frame: int, salts: tuple[int, int]) -> str | None:
    """Frame `bad` fails its checksum: damage when a transaction of the current generation committed after it."""
    commits = []
    for i in range(bad, frames):
        at = HEADER + i * frame
        _page, committed, f_salt1, f_salt2 = struct.unpack(">4I", data[at : at + 16])
        if (f_salt1, f_salt2) == salts and committed:
            commits.append(i)
    if not any(i > bad for i in commits):
        return None  # a torn last transaction
    lost = len(commits)
    return (
        f"the write-ahead log {wal} is damaged at frame {bad + 1} of {frames}: SQLite ignores it and all "
        f"after it, {lost} committed transaction(s)"
    )

"""Zip files written byte by byte, for the bundle tests: members whose headers say what a test wants (a size that
lies, an encryption flag, a compression method), and deflate bombs built in milliseconds.

A deflate block flushed with Z_FULL_FLUSH refers to nothing before it, so one compressed block of 16 MiB of zeros,
repeated, is a valid stream of any multiple of 16 MiB (`deflated`): a gigabyte-sized member costs the test a
CRC over it and ~1 MB of zip, not the seconds zlib would take to compress it.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

STORED, DEFLATED, BZIP2, LZMA = 0, 8, 12, 14


@dataclass(frozen=True)
class Member:
    name: str
    data: bytes  # as stored in the zip (compressed)
    size: int  # the uncompressed size the headers declare
    crc: int
    method: int = DEFLATED
    flags: int = 0


def deflated(name: str, pieces: Sequence[tuple[bytes, int]], **header: int) -> Member:
    """A deflate member holding each (chunk, times) in turn; `header` overrides `size`, `crc`, `flags`."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    out, size, crc = [], 0, 0
    for chunk, times in pieces:
        block = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
        out.append(block * times)
        size += len(chunk) * times
        for _ in range(times):
            crc = zlib.crc32(chunk, crc)
    out.append(c.flush())
    fields = {"size": size, "crc": crc, "flags": 0, **header}
    return Member(name, b"".join(out), fields["size"], fields["crc"], DEFLATED, fields["flags"])


def stored(name: str, data: bytes) -> Member:
    return Member(name, data, len(data), zlib.crc32(data), STORED)


def craft(members: Sequence[Member]) -> bytes:
    """The zip of `members`, in order, names repeated if a test repeats them (no zip64: under 4 GiB each)."""
    body, central = bytearray(), bytearray()
    for m in members:
        name = m.name.encode()
        offset = len(body)
        fixed = (20, m.flags, m.method, 0, 0x21, m.crc, len(m.data), m.size, len(name), 0)
        body += struct.pack("<IHHHHHIIIHH", 0x04034B50, *fixed) + name + m.data
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, *fixed, 0, 0, 0, 0, offset) + name
    eocd = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), len(body), 0)
    return bytes(body + central + eocd)

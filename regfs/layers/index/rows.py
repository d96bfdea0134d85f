"""Index entries as rows of ``schema.sql``'s ``entries`` table, and back.

Layers layer: pure, no IO.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Any

from regfs.layers.formats.entries import EntryKind, IndexEntry

COLUMNS = (
    "id, parent, name, kind, mode, uid, gid, size, mtime_ns, target, data_offset, link, "
    "nlink, rdev_major, rdev_minor, opaque, implicit, xattrs"
)


def encode_xattrs(xattrs: Iterable[tuple[bytes, bytes]]) -> bytes:
    """Length-prefixed name/value pairs: compact, and binary values survive."""
    out = bytearray()
    for name, value in xattrs:
        out += struct.pack("<II", len(name), len(value)) + name + value
    return bytes(out)


def decode_xattrs(data: bytes) -> tuple[tuple[bytes, bytes], ...]:
    pairs = []
    position = 0
    while position < len(data):
        name_length, value_length = struct.unpack_from("<II", data, position)
        position += 8
        name = data[position : position + name_length]
        position += name_length
        pairs.append((name, data[position : position + value_length]))
        position += value_length
    return tuple(pairs)


def row_of(entry: IndexEntry) -> tuple[object, ...]:
    return (
        entry.id, entry.parent, entry.name, int(entry.kind), entry.mode, entry.uid, entry.gid,
        entry.size, entry.mtime_ns, entry.target, entry.data_offset, entry.link, entry.nlink,
        entry.rdev_major, entry.rdev_minor, int(entry.opaque), int(entry.implicit),
        encode_xattrs(entry.xattrs),
    )  # fmt: skip


def entry_of(row: Sequence[Any]) -> IndexEntry:
    return IndexEntry(
        id=row[0],
        parent=row[1],
        name=bytes(row[2]),
        kind=EntryKind(row[3]),
        mode=row[4],
        uid=row[5],
        gid=row[6],
        size=row[7],
        mtime_ns=row[8],
        target=bytes(row[9]),
        data_offset=row[10],
        link=row[11],
        nlink=row[12],
        rdev_major=row[13],
        rdev_minor=row[14],
        opaque=bool(row[15]),
        implicit=bool(row[16]),
        xattrs=decode_xattrs(bytes(row[17])),
    )

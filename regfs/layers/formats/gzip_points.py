"""Where inflation of a gzip layer can restart: checkpoints with their windows.

Layers layer, blocking (for worker threads). indexed_gzip records seek points as it
inflates a blob: a compressed offset at a deflate block boundary, the bits of the byte
before it that begin the block, and the 32 KiB of output before it (the window); its
exported index (``GZIDX`` version 1) holds them all. A point restarts inflation only if
inflating from it gives the layer's bytes: one at a gzip member's header does not, and
one at the end of the stream, or repeating the offset of the one before (after an empty
member), would begin an empty span. ``restartable`` keeps those that do, probing each,
and always begins with the point right after the first gzip header (indexed_gzip records
none in a small blob). SOCI zTOCs and the first pass of a gzip layer both use them.
"""

from __future__ import annotations

import struct
from typing import BinaryIO, Protocol

from regfs.domain.errors import MalformedContent
from regfs.layers.formats.compression import read_exactly
from regfs.layers.formats.inflate import inflate_from_checkpoint
from regfs.layers.formats.ztoc import WINDOW_SIZE, Checkpoint

PROBE = 64 << 10
"""Bytes inflated from a seek point to tell whether it restarts inflation."""
_GZIDX_HEADER = struct.Struct("<5sBBQQIII")
_GZIDX_POINT = struct.Struct("<QQBB")
_FEXTRA, _FNAME, _FCOMMENT, _FHCRC = 4, 8, 16, 2


class Uncompressed(Protocol):
    """The layer's uncompressed stream, seekable (an ``indexed_gzip.IndexedGzipFile``)."""

    def seek(self, offset: int, /) -> int: ...

    def read(self, size: int = -1, /) -> bytes: ...


def seek_points(index: bytes) -> list[Checkpoint]:
    """The points of an indexed_gzip index (``GZIDX`` version 1): a header, then each
    point's compressed and uncompressed offsets, bits and whether it has a window, then
    the windows of those that have one, in order."""
    magic, version, _, _, _, _, window_size, count = _GZIDX_HEADER.unpack_from(index)
    if magic != b"GZIDX" or version != 1 or window_size != WINDOW_SIZE:
        raise MalformedContent(f"indexed_gzip index of an unknown form ({magic!r} {version})")
    position = _GZIDX_HEADER.size
    points = []
    for _ in range(count):
        points.append(_GZIDX_POINT.unpack_from(index, position))
        position += _GZIDX_POINT.size
    checkpoints = []
    for compressed, uncompressed, bits, has_window in points:
        window = bytes(WINDOW_SIZE)
        if has_window:
            window = index[position : position + WINDOW_SIZE]
            position += WINDOW_SIZE
        checkpoints.append(Checkpoint(compressed, uncompressed, bits, window))
    return checkpoints


def restartable(
    uncompressed: Uncompressed,
    raw: BinaryIO,
    points: list[Checkpoint],
    uncompressed_size: int,
    *,
    spacing: int = 0,
) -> list[Checkpoint]:
    """The points from which inflation restarts and gives the layer's bytes, each
    beginning a span of at least one byte and ``spacing`` bytes of output after the one
    kept before it; the first is at the start of the stream."""
    if not points or points[0].uncompressed != 0:
        raw.seek(0)
        points = [Checkpoint(gzip_header_length(raw.read(64 << 10)), 0, 0, bytes(WINDOW_SIZE)),
                  *points]  # fmt: skip
    kept: list[Checkpoint] = []
    for point in points:
        previous = kept[-1].uncompressed if kept else -1
        if not previous < point.uncompressed < uncompressed_size:
            continue  # it would begin an empty span
        if kept and point.uncompressed < previous + spacing:
            continue
        uncompressed.seek(point.uncompressed)
        expected = read_exactly(uncompressed, PROBE)
        if _inflate(raw, point, point.compressed + PROBE + 1024, len(expected)) == expected:
            kept.append(point)
    if not kept or kept[0].uncompressed != 0:
        raise MalformedContent("inflation does not restart at the start of the stream")
    return kept


def compressed_start(point: Checkpoint) -> int:
    """The first compressed byte inflation from ``point`` reads: the one holding its
    ``bits``, if any."""
    return point.compressed - (1 if point.bits else 0)


def _inflate(raw: BinaryIO, point: Checkpoint, end: int, size: int) -> bytes | None:
    start = compressed_start(point)
    raw.seek(start)
    try:
        return inflate_from_checkpoint(read_exactly(raw, end - start), point.bits,
                                       point.window, size)  # fmt: skip
    except MalformedContent:
        return None


def gzip_header_length(head: bytes) -> int:
    """Where the deflate data of the gzip member starting ``head`` begins (RFC 1952 §2.3)."""
    if len(head) < 10 or head[:3] != b"\x1f\x8b\x08":
        raise MalformedContent("not a gzip member")
    flags, position = head[3], 10
    if flags & _FEXTRA:
        position += 2 + int.from_bytes(head[position : position + 2], "little")
    for flag in (_FNAME, _FCOMMENT):
        if flags & flag:
            end = head.find(b"\0", position)
            if end < 0:
                raise MalformedContent("gzip header name or comment too long")
            position = end + 1
    if flags & _FHCRC:
        position += 2
    if position > len(head):
        raise MalformedContent("gzip header cut short")
    return position

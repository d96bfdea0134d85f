"""Where the frames of a zstd stream begin and end, read from their headers alone.

Layers layer, pure (a seekable file in, spans out; no decompression). Each zstd frame
decodes on its own, so a frame start is a place where decompression can restart: a layer
compressed as many frames (``pzstd``, the seekable format, zstd:chunked read without its
TOC) can be re-read from the frame nearest a chunk instead of from byte 0. A frame's length
is found by walking its block headers (3 bytes each, RFC 8878 §3.1.1.2) and seeking over
the block bodies, so a 1 GiB single-frame layer costs ~8 000 small reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from regfs.domain.errors import MalformedContent

FRAME_MAGIC = 0xFD2FB528
SKIPPABLE_MAGIC_MASK = 0xFFFFFFF0
SKIPPABLE_MAGIC = 0x184D2A50
MAX_BLOCK_SIZE = 128 << 10
"""A block never holds more than 128 KiB (RFC 8878 §3.1.1.2.4)."""

_DICTIONARY_ID_SIZES = (0, 1, 2, 4)
_CONTENT_SIZE_SIZES = (0, 2, 4, 8)  # 0 means 1 byte when the frame is a single segment
_RAW, _RLE, _COMPRESSED, _RESERVED = range(4)


@dataclass(frozen=True, slots=True)
class FrameSpan:
    """Bytes ``[start, end)`` of the stream: one frame, or a skippable frame (no output)."""

    start: int
    end: int
    skippable: bool


def is_skippable_frame(head: bytes) -> bool:
    """True if ``head`` starts with the magic number of a skippable frame."""
    return (
        len(head) >= 4 and _little_endian(head[:4], 4, 0) & SKIPPABLE_MAGIC_MASK == SKIPPABLE_MAGIC
    )


def frame_spans(stream: BinaryIO) -> Iterator[FrameSpan]:
    """The frames of the zstd stream ``stream`` from its current position to its end.

    Raises MalformedContent at the first thing that is not a whole frame: bytes that are
    not a frame magic, a reserved block type, a frame cut short.
    """
    here = stream.tell()
    size = stream.seek(0, 2)
    stream.seek(here)
    while (span := next_frame(stream, size)) is not None:
        yield span


def next_frame(stream: BinaryIO, size: int) -> FrameSpan | None:
    """The frame at the stream's position (left at its end), or None at ``size``."""
    magic_bytes = stream.read(4)
    if not magic_bytes:
        return None
    start = stream.tell() - len(magic_bytes)
    magic = _little_endian(magic_bytes, 4, start)
    if is_skippable_frame(magic_bytes):
        length = _little_endian(stream.read(4), 4, start)
        return FrameSpan(start, _skip(stream, start + 8 + length, size, start), skippable=True)
    if magic == FRAME_MAGIC:
        return FrameSpan(start, _frame_end(stream, size, start), skippable=False)
    raise MalformedContent(f"zstd: no frame at byte {start} (magic {magic:#010x})")


def _frame_end(stream: BinaryIO, size: int, start: int) -> int:
    """The end of the frame whose magic number was just read: past its header, every
    block, and the content checksum if it has one."""
    descriptor = _little_endian(stream.read(1), 1, start)
    single_segment = descriptor >> 5 & 1
    has_checksum = descriptor >> 2 & 1
    if descriptor >> 3 & 1:
        raise MalformedContent(f"zstd: frame at byte {start} sets the reserved header bit")
    header = (
        (0 if single_segment else 1)
        + _DICTIONARY_ID_SIZES[descriptor & 3]
        + (_CONTENT_SIZE_SIZES[descriptor >> 6] or single_segment)
    )
    position = _skip(stream, stream.tell() + header, size, start)
    while True:
        block_header = _little_endian(stream.read(3), 3, start)
        last, kind, length = block_header & 1, block_header >> 1 & 3, block_header >> 3
        if kind == _RESERVED:
            raise MalformedContent(f"zstd: frame at byte {start} has a reserved block type")
        if length > MAX_BLOCK_SIZE:
            raise MalformedContent(f"zstd: frame at byte {start} has a {length}-byte block")
        position = _skip(stream, position + 3 + (1 if kind == _RLE else length), size, start)
        if last:
            break
    if has_checksum:
        position = _skip(stream, position + 4, size, start)
    return position


def _little_endian(data: bytes, width: int, frame_start: int) -> int:
    if len(data) != width:
        raise MalformedContent(f"zstd: frame at byte {frame_start} is cut short")
    return int.from_bytes(data, "little")


def _skip(stream: BinaryIO, position: int, size: int, frame_start: int) -> int:
    """Seek to ``position``, which must not lie past the stream's ``size``."""
    if position > size:
        raise MalformedContent(f"zstd: frame at byte {frame_start} is cut short")
    stream.seek(position)
    return position

"""Decompressed views of a layer blob: whole-stream for indexing, random access after.

Layers layer. Blocking code for worker threads: gzip through the system's libz
(``gzip_scan.py``: checkpoints, each with its 32 KiB window, ``GZIP_SPACING`` apart), zstd
through ``zstandard`` (checkpoints at frame starts, ``ZSTD_SPACING`` apart: a frame needs
no window), and uncompressed tar as is. The kind
is told by the blob's magic bytes, not its media type, which registries do not always
get right.
"""

from __future__ import annotations

import io
from typing import BinaryIO, Protocol, cast

import zstandard

from regfs.domain.errors import MalformedContent
from regfs.layers.formats.gzip_scan import GzipScanner, ReadsInto
from regfs.layers.formats.zstd_frames import FrameSpan, is_skippable_frame, next_frame

GZIP_SPACING = 2 << 20
GZIP_HEAD = 4 << 10
"""Output kept after each gzip checkpoint of a first pass, to try the checkpoint with: a
point that does not restart inflation gives other bytes from the first. Kept small: a
layer of 10 GB of output has 5 000 checkpoints, each holding its 32 KiB window too."""
ZSTD_SPACING = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def sniff(head: bytes) -> str:
    """``gzip``, ``zstd`` or ``none`` from the first bytes of a blob."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC) or is_skippable_frame(head):
        return "zstd"  # pzstd starts each frame with a skippable one
    return "none"


def read_exactly(stream: Readable, size: int) -> bytes:
    """Up to ``size`` bytes, fewer only at the end of the stream."""
    parts = []
    remaining = size
    while remaining > 0:
        part = stream.read(remaining)
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


DECOMPRESSION_ERRORS: tuple[type[Exception], ...] = (
    zstandard.ZstdError,
    EOFError,
    OSError,
    ValueError,
)


class ZstdIndexer:
    """Sequential reads of a zstd blob, one frame after the other, noting where each
    frame's output begins: those are checkpoints, as a frame decodes on its own. Frames
    are found as they come (a blob of a million tiny frames holds no list of them)."""

    def __init__(self, blob: BinaryIO) -> None:
        self._blob = blob
        self._size = blob.seek(0, 2)
        self._next = blob.seek(0)
        self._decompressor = zstandard.ZstdDecompressor()
        self._frame: Readable | None = None
        self._output = 0
        self._starts: list[tuple[int, int]] = []

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` bytes (at least one unless the stream has ended)."""
        while True:
            if self._frame is None:
                span = self._next_data_frame()
                if span is None:
                    return b""
                self._note_start(span.start)
                self._blob.seek(span.start)
                self._frame = self._decompressor.stream_reader(
                    cast(BinaryIO, _Slice(self._blob, span.end)), closefd=False
                )
            data = self._frame.read(size)
            if data:
                self._output += len(data)
                return data
            self._frame = None

    def _next_data_frame(self) -> FrameSpan | None:
        while True:
            self._blob.seek(self._next)
            span = next_frame(self._blob, self._size)
            if span is None or not span.skippable:
                self._next = span.end if span else self._next
                return span
            self._next = span.end

    def _note_start(self, compressed: int) -> None:
        """Keep a frame start as a checkpoint if ``ZSTD_SPACING`` past the last kept."""
        if not self._starts or self._output >= self._starts[-1][0] + ZSTD_SPACING:
            self._starts.append((self._output, compressed))

    def checkpoints(self) -> list[tuple[int, int]]:
        """(uncompressed, compressed) offsets of frame starts, ``ZSTD_SPACING`` apart."""
        return self._starts or [(0, 0)]

    def consumed(self) -> int:
        """How far into the blob decompression has read: the output so far needs no more
        (from the checkpoint before it)."""
        return self._blob.tell()


class _Slice(io.RawIOBase):
    """``file`` from its position up to ``end``: one frame's bytes, so that a frame
    cut short is an error of that frame, not a read into the next one."""

    def __init__(self, file: BinaryIO, end: int) -> None:
        super().__init__()
        self._file = file
        self._end = end

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1, /) -> bytes:
        left = self._end - self._file.tell()
        return self._file.read(left if size < 0 else min(size, left))

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def open_for_indexing(blob: BinaryIO, compression: str) -> Readable:
    if compression == "gzip":
        return GzipScanner(cast(ReadsInto, blob), spacing=GZIP_SPACING, head=GZIP_HEAD)
    if compression == "zstd":
        return ZstdIndexer(blob)
    return blob


def zstd_bytes_at(compressed: bytes, skip: int, size: int) -> bytes:
    """``size`` bytes of output, after ``skip``, of zstd frames starting at the first byte
    of ``compressed`` (frames read across, skippable ones passed over)."""
    return zstd_file_bytes_at(io.BytesIO(compressed), skip, size)


def zstd_file_bytes_at(compressed: BinaryIO, skip: int, size: int) -> bytes:
    """``zstd_bytes_at`` of the frames in a file, from its start (output pulled as needed:
    memory stays bounded whatever the frames hold)."""
    compressed.seek(0)
    reader = zstandard.ZstdDecompressor().stream_reader(compressed, read_across_frames=True)
    while skip > 0:
        piece = reader.read(min(skip, 1 << 20))
        if not piece:
            raise MalformedContent("zstd stream ends before the chunk")
        skip -= len(piece)
    return read_exactly(reader, size)

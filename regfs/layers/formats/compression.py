"""Decompressed views of a layer blob: whole-stream for indexing, random access after.

Layers layer. Blocking code for worker threads: gzip through ``indexed_gzip`` (zran
checkpoints every ``GZIP_SPACING`` bytes of output, each with its 32 KiB window), zstd
through ``zstandard`` (checkpoints at frame starts, ``ZSTD_SPACING`` apart: a frame needs
no window), and uncompressed tar as is. The kind is told by the blob's magic
bytes, not its media type, which registries do not always get right.
"""

from __future__ import annotations

import io
import zlib
from typing import BinaryIO, Protocol, cast

import indexed_gzip
import zstandard

from regfs.domain.errors import MalformedContent
from regfs.layers.formats.zstd_frames import FrameSpan, is_skippable_frame, next_frame

GZIP_SPACING = 2 << 20
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
    indexed_gzip.ZranError,
    indexed_gzip.NoHandleError,
    indexed_gzip.NotCoveredError,
    EOFError,
    OSError,
    ValueError,
)


class GzipIndexer:
    """Sequential reads of a gzip blob that record random-access checkpoints on the way."""

    def __init__(self, blob: BinaryIO) -> None:
        self._file = indexed_gzip.IndexedGzipFile(
            fileobj=blob, spacing=GZIP_SPACING, readbuf_size=1 << 20, auto_build=True
        )

    def read(self, size: int = -1, /) -> bytes:
        return bytes(self._file.read(size))

    def checkpoints(self) -> list[tuple[int, int]]:
        """(uncompressed, compressed) offsets where decompression can restart, at least
        ``GZIP_SPACING`` apart (see ``thin_checkpoints``)."""
        return thin_checkpoints(
            [(int(u), int(c)) for u, c in self._file.seek_points()], GZIP_SPACING
        )

    def export(self) -> bytes:
        """indexed_gzip's index (every seek point with its window), zlib-compressed: a
        window of a decompression bomb is 32 KiB of zeros, and real ones shrink too."""
        buffer = io.BytesIO()
        self._file.export_index(fileobj=buffer)
        return zlib.compress(buffer.getvalue(), 1)

    def close(self) -> None:
        self._file.close()


def thin_checkpoints(points: list[tuple[int, int]], spacing: int) -> list[tuple[int, int]]:
    """The first point and then one at least ``spacing`` further each time.

    zlib restarts at every gzip member boundary, so indexed_gzip puts a seek point at each:
    a layer made of many members (eStargz, ``pigz --independent``) has thousands, and empty
    members put several at one uncompressed offset.
    """
    kept: list[tuple[int, int]] = []
    for uncompressed, compressed in sorted(points):
        if not kept or uncompressed >= kept[-1][0] + spacing:
            kept.append((uncompressed, compressed))
    return kept


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
        return GzipIndexer(blob)
    if compression == "zstd":
        return ZstdIndexer(blob)
    return blob


def read_at(
    remote: BinaryIO,
    compression: str,
    gzip_index: bytes | None,
    offset: int,
    size: int,
    *,
    zstd_checkpoint: tuple[int, int] = (0, 0),
) -> bytes:
    """``size`` bytes of the uncompressed stream at ``offset``, reading ``remote`` from the
    nearest checkpoint before it: gzip's come with their windows in ``gzip_index``; for
    zstd, ``zstd_checkpoint`` is the (uncompressed, compressed) start of a frame at or
    before ``offset``."""
    if compression == "gzip":
        if gzip_index is None:
            raise MalformedContent("gzip layer index has no checkpoints")
        # auto_build: past the last checkpoint it inflates onward from that checkpoint
        with indexed_gzip.IndexedGzipFile(
            fileobj=remote, readbuf_size=128 << 10, buffer_size=1 << 20, auto_build=True
        ) as file:
            file.import_index(fileobj=io.BytesIO(zlib.decompress(gzip_index)))
            file.seek(offset)
            return read_exactly(file, size)
    if compression == "zstd":
        skipped, compressed = zstd_checkpoint
        if skipped > offset:
            raise ValueError(f"zstd checkpoint at {skipped} is past offset {offset}")
        remote.seek(compressed)
        reader = zstandard.ZstdDecompressor().stream_reader(remote, read_across_frames=True)
        while skipped < offset:
            piece = reader.read(min(offset - skipped, 1 << 20))
            if not piece:
                raise MalformedContent(f"zstd stream ends before offset {offset}")
            skipped += len(piece)
        return read_exactly(reader, size)
    remote.seek(offset)
    return read_exactly(remote, size)

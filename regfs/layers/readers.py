"""Reading a layer's stream through its index: one reader per kind of index.

Layers layer. Every kind of index lays the layer's files on one stream of pieces (the
whole tar cut in fixed chunks; a TOC's chunks on a virtual stream; a zTOC's spans of the
tar) and every reader answers the same question: ``piece_at(position)``, where the piece
holding ``position`` starts and its bytes, checked by the one verifying getter
(``pieces.py``). The kind is chosen once, by ``IndexKind``; a re-fetch is always "fetch
the compressed bytes with one Range request, then decompress them in one worker hop".
"""

from __future__ import annotations

import functools
import hashlib
import logging
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cachetools
import trio

from regfs.cache.flight import SingleFlight
from regfs.cache.memory import keep
from regfs.domain.errors import MalformedContent
from regfs.layers.formats.compression import (
    DECOMPRESSION_ERRORS,
    zstd_bytes_at,
    zstd_file_bytes_at,
)
from regfs.layers.formats.inflate import inflate_from_checkpoint
from regfs.layers.formats.toc import TocChunk, chunk_bytes
from regfs.layers.index.layer_index import LayerIndex
from regfs.layers.index.meta import IndexKind
from regfs.layers.layer_ref import LayerRef
from regfs.layers.pieces import VerifiedPieces

log = logging.getLogger(__name__)

INFLATED_SPANS_BYTES = 16 << 20
"""Inflated zTOC spans kept in memory (their compressed bytes are pieces like any other)."""
ZSTD_HELD_BYTES = 16 << 20
"""Compressed bytes of a zstd re-fetch held in memory; more are spooled to a file."""
REFETCH_AHEAD = 4 << 20
"""Bytes a zstd re-fetch decompresses and keeps past the chunk asked for."""

RangeFetch = Callable[[int, int, str], Awaitable[bytes]]
"""``fetch(start, end, what)``: bytes [start, end) of the layer blob, within one deadline."""


class PieceReader(Protocol):
    async def piece_at(self, position: int) -> tuple[int, bytes]:
        """Where the piece holding ``position`` starts, and its (verified) bytes."""
        ...


@dataclass(frozen=True, slots=True)
class ReadContext:
    """What every reader of a mount shares."""

    pieces: VerifiedPieces
    ranges: Callable[[LayerRef], RangeFetch]
    """Range requests for a layer, sharing one deadline from the moment it is called."""
    decompressing: trio.CapacityLimiter
    """Worker threads decompressing re-fetched bytes at once."""
    inflated: cachetools.LRUCache[bytes, bytes]
    flight: SingleFlight[bytes]
    spool_dir: Path | None = None
    """Where a long zstd re-fetch is spooled (the cache's ``tmp/``; None: the system's)."""


def reader_for(layer: LayerRef, index: LayerIndex, context: ReadContext) -> PieceReader:
    """The reader for ``index``'s kind."""
    readers: dict[IndexKind, type[ChunkReader | TocChunkReader | SpanReader]] = {
        IndexKind.WHOLE: ChunkReader,
        IndexKind.TOC: TocChunkReader,
        IndexKind.SOCI: SpanReader,
    }
    return readers[index.meta.kind](layer, index, context)


async def read_stream(reader: PieceReader, stream_size: int, offset: int, size: int) -> bytes:
    """``size`` bytes at ``offset`` of a stream of ``stream_size`` bytes, piece by piece."""
    end = min(offset + size, stream_size)
    parts = []
    position = offset
    while position < end:
        start, data = await reader.piece_at(position)
        part = data[position - start : end - start]
        if not part:
            raise MalformedContent(f"no bytes at {position} of the layer's stream")
        parts.append(part)
        position += len(part)
    return b"".join(parts)


async def load_pieces(reader: PieceReader, end: int) -> None:
    """Load every piece before ``end`` into the caches."""
    position = 0
    while position < end:
        start, data = await reader.piece_at(position)
        if start + len(data) <= position:
            raise MalformedContent(f"no bytes at {position} of the layer's stream")
        position = start + len(data)


class _Reader:
    def __init__(self, layer: LayerRef, index: LayerIndex, context: ReadContext) -> None:
        self.layer = layer
        self.index = index
        self.context = context


class ChunkReader(_Reader):
    """A layer read whole once (gzip, zstd or plain tar): fixed chunks of its tar, each
    made again from the nearest checkpoint when the cache no longer has it."""

    async def piece_at(self, position: int) -> tuple[int, bytes]:
        chunk_size = self.index.meta.chunk_size
        number = position // chunk_size
        sha256 = self.index.chunk_hash(number)
        fetch = functools.partial(self._decompress_again, number)
        data = await self.context.pieces.get(sha256, fetch, f"{self.layer}: chunk {number}")
        return number * chunk_size, data

    async def _decompress_again(self, number: int) -> bytes:
        """Chunk ``number`` made again: the compressed bytes from the checkpoint before it
        up to where its output ends, fetched with one Range request, then decompressed in
        one worker hop (a plain tar's chunk is its bytes).

        A zstd layer restarts at a frame start, which may lie megabytes back: the chunks
        after this one, up to ``REFETCH_AHEAD`` or the next checkpoint, are decompressed on
        the way and kept, so that a reader going on through an evicted frame does not
        restart at its start for every chunk.
        """
        index, meta = self.index, self.index.meta
        offset = number * meta.chunk_size
        end = min(offset + meta.chunk_size, meta.uncompressed_size)
        ranges = self.context.ranges(self.layer)
        what = f"chunk {number} not fetched again"
        if meta.compression == "none":
            return await ranges(offset, end, what)
        start, compressed_start = index.checkpoint_before(offset)
        if meta.compression == "gzip":
            bits, window = index.span_start(start)
            _, stop = index.checkpoint_after(end - 1)
            compressed = await ranges(compressed_start, min(stop + 1, meta.compressed_size), what)
            made = await self._in_worker(
                inflate_from_checkpoint, compressed, bits, window, end - start, number=number
            )
            data = made[offset - start :]
            compressed_size = len(compressed)
        else:
            following, _ = index.checkpoint_after(offset)
            ahead = min(following, offset + REFETCH_AHEAD)
            if ahead < meta.uncompressed_size:
                ahead -= ahead % meta.chunk_size  # whole chunks only
            end = max(end, ahead)
            stop = index.chunk_compressed_end((end - 1) // meta.chunk_size)
            data = await self._zstd_again(
                compressed_start, stop, offset - start, end - offset, number=number
            )
            compressed_size = stop - compressed_start
        log.info("%s: chunk %d fetched again (%d compressed bytes)",
                 self.layer, number, compressed_size)  # fmt: skip
        for later, position in enumerate(range(meta.chunk_size, len(data), meta.chunk_size)):
            await self.context.pieces.keep_if_intact(
                index.chunk_hash(number + 1 + later), data[position : position + meta.chunk_size]
            )
        return data[: meta.chunk_size]

    async def _zstd_again(
        self, start: int, stop: int, skip: int, size: int, *, number: int
    ) -> bytes:
        """``size`` bytes after ``skip`` of the zstd frames in [start, stop) of the blob.
        More than ``ZSTD_HELD_BYTES`` of them (a chunk deep in a layer written as one frame)
        are spooled to a temporary file in ``ZSTD_HELD_BYTES`` Range requests, one worker
        hop each, rather than held in memory; all share the read's deadline."""
        ranges = self.context.ranges(self.layer)
        what = f"chunk {number} not fetched again"
        if stop - start <= ZSTD_HELD_BYTES:
            compressed = await ranges(start, stop, what)
            return await self._in_worker(zstd_bytes_at, compressed, skip, size, number=number)
        with tempfile.TemporaryFile(dir=self.context.spool_dir) as spool:
            for piece_start in range(start, stop, ZSTD_HELD_BYTES):
                piece = await ranges(piece_start, min(piece_start + ZSTD_HELD_BYTES, stop), what)
                await trio.to_thread.run_sync(spool.write, piece)
            return await self._in_worker(zstd_file_bytes_at, spool, skip, size, number=number)

    async def _in_worker(
        self, decompress: Callable[..., bytes], *args: object, number: int
    ) -> bytes:
        """``decompress(*args)`` in a worker thread; bytes that do not decompress are
        ``MalformedContent`` (fetched once more by the getter)."""
        try:
            return await trio.to_thread.run_sync(
                decompress, *args, limiter=self.context.decompressing
            )
        except DECOMPRESSION_ERRORS as error:
            raise MalformedContent(
                f"{self.layer}: chunk {number}: cannot decompress: {error}"
            ) from None


class TocChunkReader(_Reader):
    """An eStargz or zstd:chunked layer read through its TOC: each chunk is one gzip
    member or zstd frame of the blob, fetched alone."""

    async def piece_at(self, position: int) -> tuple[int, bytes]:
        chunk = self.index.toc_chunk(position)
        if chunk is None:
            raise MalformedContent(f"{self.layer}: no TOC chunk at {position}")
        fetch = functools.partial(self._fetch, chunk)
        what = f"{self.layer}: chunk at {chunk.compressed_offset}"
        return chunk.virtual_offset, await self.context.pieces.get(chunk.sha256, fetch, what)

    async def _fetch(self, chunk: TocChunk) -> bytes:
        what = f"chunk at {chunk.compressed_offset} not fetched"
        ranges = self.context.ranges(self.layer)
        member = await ranges(chunk.compressed_offset, chunk.compressed_end, what)
        try:
            return await trio.to_thread.run_sync(
                chunk_bytes, member, chunk, self.index.meta.compression,
                limiter=self.context.decompressing,
            )  # fmt: skip
        except MalformedContent as error:
            raise MalformedContent(f"{self.layer}: {error}") from None


class SpanReader(_Reader):
    """A gzip layer read through a SOCI zTOC: each span is fetched compressed (a piece,
    named by its zTOC digest) and inflated from its checkpoint in one worker hop."""

    async def piece_at(self, position: int) -> tuple[int, bytes]:
        span = self.index.toc_chunk(position)
        if span is None:
            raise MalformedContent(f"{self.layer}: no zTOC span at {position}")
        return span.virtual_offset, await self._inflated(span)

    async def _inflated(self, span: TocChunk) -> bytes:
        # what comes out depends on the zTOC's bits, window and size too, not only on the
        # compressed bytes: another image's zTOC may give the same span other ones
        bits, window = self.index.span_start(span.virtual_offset)
        key = hashlib.sha256(
            b"inflated span %s %d %d %s" % (span.sha256, bits, span.size, window)
        ).digest()
        data = self.context.inflated.get(key)
        if data is not None:
            return data

        async def fetch() -> bytes:
            what = f"span at {span.compressed_offset} not fetched"
            ranges = self.context.ranges(self.layer)
            return await ranges(span.compressed_offset, span.compressed_end, what)

        async def inflate() -> bytes:
            what = f"{self.layer}: span at {span.compressed_offset}"
            compressed = await self.context.pieces.get(span.sha256, fetch, what)
            inflated = await trio.to_thread.run_sync(
                inflate_from_checkpoint, compressed, bits, window, span.size,
                limiter=self.context.decompressing,
            )  # fmt: skip
            if len(inflated) != span.size:
                raise MalformedContent(f"{what} inflates to {len(inflated)} bytes, "
                                       f"not {span.size}")  # fmt: skip
            keep(self.context.inflated, key, inflated)
            return inflated

        return await self.context.flight.run(key, inflate)

"""Reading a layer indexed from its whole blob: fixed chunks of its tar, made again when
the cache no longer has them.

Layers layer. A chunk evicted from the cache is made again from the checkpoint before it
(recorded and probed during the verified first pass): one Range request, one
decompression hop; chunks a reader wants together (its read, the read-ahead of it) are
made together, a few at a time.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence

import trio

from regfs.domain.errors import MalformedContent
from regfs.layers.coalesce import runs
from regfs.layers.formats.compression import (
    DECOMPRESSION_ERRORS,
    zstd_bytes_at,
    zstd_file_bytes_at,
)
from regfs.layers.formats.inflate import inflate_from_checkpoint
from regfs.layers.index.layer_index import LayerIndex
from regfs.layers.piece_claims import Deliver, Piece
from regfs.layers.reader_base import Reader
from regfs.layers.streams import Priority

log = logging.getLogger(__name__)

ZSTD_HELD_BYTES = 16 << 20
"""Compressed bytes of a zstd re-fetch held in memory; more are spooled to a file."""
REFETCH_AHEAD = 4 << 20
"""Bytes a zstd re-fetch decompresses and keeps past the chunk asked for; also the most
a re-fetch of chunks a reader wants together makes at once."""


class ChunkReader(Reader[LayerIndex]):
    """A layer read whole once (gzip, zstd or plain tar): fixed chunks of its tar, each
    made again from the nearest checkpoint when the cache no longer has it."""

    reads_ahead = False

    def pieces(self, start: int, end: int) -> Sequence[Piece[int]]:
        meta = self.index.meta
        size = meta.chunk_size
        first, last = start // size, (end - 1) // size
        hashes = self.index.chunk_hashes(first, last)
        return [self._piece(number, sha256) for number, sha256 in enumerate(hashes, first)]

    def _piece(self, number: int, sha256: bytes) -> Piece[int]:
        meta = self.index.meta
        start = number * meta.chunk_size
        size = min(meta.chunk_size, meta.uncompressed_size - start)
        return Piece(sha256, start, size, number, f"{self.layer}: chunk {number}")

    async def fetch(
        self, missing: Sequence[Piece[int]], deliver: Deliver[int],
        priority: Priority = Priority.WAITED,
    ) -> None:  # fmt: skip
        """The missing chunks made again, a few adjacent ones at a time (``_again``)."""
        made_up_to = -1
        most = max(1, REFETCH_AHEAD // self.index.meta.chunk_size)
        groups = runs(missing, lambda piece: (piece.source, piece.source + 1), largest=most,
                      gap=0)  # fmt: skip
        for group in groups:
            first, last = group[0].source, group[-1].source
            if last <= made_up_to:
                continue
            first = max(first, made_up_to + 1)
            try:
                async with self.context.streams.slot(priority):
                    data = await self._again(first, last)
            except MalformedContent as error:
                await deliver([(piece, error) for piece in group])
                continue
            size = self.index.meta.chunk_size
            count = -(-len(data) // size)
            made_up_to = first + count - 1
            hashes = self.index.chunk_hashes(first, made_up_to)
            await deliver([
                (self._piece(first + n, sha256), data[n * size : (n + 1) * size])
                for n, sha256 in enumerate(hashes)
            ])  # fmt: skip

    async def _again(self, first: int, last: int) -> bytes:
        """Chunks ``first`` to ``last`` made again: the compressed bytes from the
        checkpoint before them up to where their output ends, fetched with one Range
        request, then decompressed in one worker hop (a plain tar's chunks are its bytes).

        A zstd layer restarts at a frame start, which may lie megabytes back: the chunks
        after these, up to ``REFETCH_AHEAD`` or the next checkpoint, are decompressed on
        the way and kept, so that a reader going on through an evicted frame does not
        restart at its start for every chunk.
        """
        index, meta = self.index, self.index.meta
        offset = first * meta.chunk_size
        end = min((last + 1) * meta.chunk_size, meta.uncompressed_size)
        ranges = self.context.ranges(self.layer)
        what = f"chunk {first} not fetched again"
        if meta.compression == "none":
            return await ranges(offset, end, what)
        start, compressed_start = index.checkpoint_before(offset)
        if meta.compression == "gzip":
            bits, window = index.span_start(start)
            _, stop = index.checkpoint_after(end - 1)
            compressed = await ranges(compressed_start, min(stop + 1, meta.compressed_size), what)
            made = await self._in_worker(
                inflate_from_checkpoint, compressed, bits, window, end - start, number=first
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
                compressed_start, stop, offset - start, end - offset, number=first
            )
            compressed_size = stop - compressed_start
        log.info("%s: chunks %d-%d fetched again (%d compressed bytes)",
                 self.layer, first, last, compressed_size)  # fmt: skip
        return data

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

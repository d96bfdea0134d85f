"""Reading a layer's stream through its index: one reader per kind of index.

Layers layer. The kind is chosen once, by ``IndexKind``: ``ChunkReader``
(``chunk_reader.py``) for an index of the whole blob, ``TocChunkReader`` for an eStargz
or zstd:chunked TOC, ``SpanReader`` for a SOCI zTOC. The last two fetch the pieces wanted
together in runs (``coalesce.py``), one Range request each, all at once in parallel
streams (``streams.py``), and decompress a run in one worker hop.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from collections.abc import Sequence
from typing import Protocol

import trio

from regfs.cache.memory import keep
from regfs.domain.errors import MalformedContent, RegfsError
from regfs.layers.chunk_reader import ChunkReader
from regfs.layers.formats.inflate import inflate_from_checkpoint
from regfs.layers.formats.toc import TocChunk, chunk_bytes
from regfs.layers.index.layer_index import LayerIndex
from regfs.layers.index.meta import IndexKind, IndexMeta
from regfs.layers.layer_ref import LayerRef
from regfs.layers.piece_claims import Deliver, Made, Piece
from regfs.layers.reader_base import PieceReader, ReadContext, Reader, fetch_in_runs, joined
from regfs.layers.streams import Priority

INFLATED_SPANS_BYTES = 16 << 20
"""Inflated zTOC spans kept in memory (their compressed bytes are pieces like any other)."""
INFLATE_AT_LEAST = 512 << 10
"""Bytes of a span inflated at least when a read needs any (``inflate_until``)."""
LOAD_WINDOW = 16 << 20
"""Bytes of the stream ``load_pieces`` asks for at once."""
NEIGHBOURS = 128 << 10
"""Compressed bytes of TOC chunks laid out after a miss a reader waits for, fetched in its
request when not cached: a program starting reads file after file, mostly files laid out
side by side (a package's modules), and each miss would wait a round trip of its own."""


class RunIndex(Protocol):
    """What a reader of TOC chunks or zTOC spans asks of the layer's index: the written
    ``LayerIndex``, or the ``LaidOutIndex`` it is written from (``index/laid_out.py``)."""

    meta: IndexMeta

    def toc_chunks_between(self, start: int, end: int) -> list[TocChunk]: ...

    def span_start(self, virtual_offset: int) -> tuple[int, bytes]: ...


def reader_for(layer: LayerRef, index: LayerIndex, context: ReadContext) -> PieceReader:
    """The reader for ``index``'s kind."""
    if index.meta.kind is IndexKind.WHOLE:
        return ChunkReader(layer, index, context)
    return run_reader_for(layer, index, context)


def run_reader_for(layer: LayerRef, index: RunIndex, context: ReadContext) -> PieceReader:
    """The reader for a layer read through its TOC or zTOC."""
    if index.meta.kind is IndexKind.SOCI:
        return SpanReader(layer, index, context)
    return TocChunkReader(layer, index, context)


async def read_stream(reader: PieceReader, stream_size: int, offset: int, size: int) -> bytes:
    """``size`` bytes at ``offset`` of a stream of ``stream_size`` bytes."""
    end = min(offset + size, stream_size)
    return await reader.read(offset, end) if offset < end else b""


async def load_pieces(reader: PieceReader, end: int, priority: Priority) -> None:
    """Load every piece before ``end`` into the caches."""
    for start in range(0, end, LOAD_WINDOW):
        await reader.load(start, min(start + LOAD_WINDOW, end), priority)


def _extent(piece: Piece[TocChunk]) -> tuple[int, int]:
    return piece.source.compressed_offset, piece.source.compressed_end


class _RunReader(Reader[RunIndex]):
    """A reader whose pieces are rows of the index's ``toc_chunks`` (TOC chunks, zTOC
    spans), each a range of the blob: those wanted together are fetched in runs."""

    def pieces(self, start: int, end: int) -> Sequence[Piece[TocChunk]]:
        return [
            Piece(chunk.sha256, chunk.virtual_offset, chunk.size, chunk,
                  f"{self.layer}: {self.piece_name} at {chunk.compressed_offset}")
            for chunk in self.index.toc_chunks_between(start, end)
        ]  # fmt: skip

    async def fetch(
        self, missing: Sequence[Piece[TocChunk]], deliver: Deliver[TocChunk],
        priority: Priority = Priority.WAITED,
    ) -> None:  # fmt: skip
        """Runs of adjacent TOC chunks or spans, one Range request each, all at once."""
        await fetch_in_runs(
            missing, _extent, self._made, deliver,
            ranges=functools.partial(self.context.ranges, self.layer),
            streams=self.context.streams, priority=priority, name=self.piece_name,
            from_stream=self.context.from_stream(self.layer),
        )  # fmt: skip

    async def _made(self, compressed: bytes, run: Sequence[Piece[TocChunk]]) -> Made[TocChunk]:
        """The pieces of a run from its compressed bytes."""
        raise NotImplementedError


class TocChunkReader(_RunReader):
    """An eStargz or zstd:chunked layer read through its TOC: each chunk is one gzip
    member or zstd frame of the blob; chunks wanted together are fetched together, with
    the ``NEIGHBOURS`` after a read's last chunk when it must be fetched."""

    def along(self, pieces: Sequence[Piece[TocChunk]]) -> list[Piece[TocChunk]]:
        """The chunks within ``NEIGHBOURS`` compressed bytes after the last of ``pieces``
        (the getter leaves out those cached or on their way: a read-ahead of the same file,
        begun as this read was, may have claimed them)."""
        if not pieces:
            return []
        last = pieces[-1].source
        after = last.virtual_offset + last.size
        reach = last.compressed_end + NEIGHBOURS
        return [piece for piece in self.pieces(after, after + 4 * NEIGHBOURS)
                if piece.start >= after and piece.source.compressed_end <= reach]  # fmt: skip

    async def _made(self, compressed: bytes, run: Sequence[Piece[TocChunk]]) -> Made[TocChunk]:
        return await trio.to_thread.run_sync(
            _chunks_of_run, compressed, run, self.index.meta.compression, self.layer,
            limiter=self.context.decompressing,
        )  # fmt: skip


def _chunks_of_run(
    compressed: bytes, run: Sequence[Piece[TocChunk]], compression: str, layer: LayerRef
) -> Made[TocChunk]:
    """Each TOC chunk of a run from the run's compressed bytes (or why it cannot be
    made). Blocking: one worker hop for the run."""
    base = run[0].source.compressed_offset
    made: list[tuple[Piece[TocChunk], bytes | MalformedContent]] = []
    for piece in run:
        chunk = piece.source
        member = compressed[chunk.compressed_offset - base : chunk.compressed_end - base]
        try:
            made.append((piece, chunk_bytes(member, chunk, compression)))
        except MalformedContent as error:
            made.append((piece, MalformedContent(f"{layer}: {error}")))
    return made


class SpanReader(_RunReader):
    """A gzip layer read through a SOCI zTOC: each span is fetched compressed (a piece,
    named by its zTOC digest; spans wanted together are fetched together) and inflated
    from its checkpoint in one worker hop, as far as the read needs (``inflate_until``)."""

    piece_name = "span"

    async def _made(self, compressed: bytes, run: Sequence[Piece[TocChunk]]) -> Made[TocChunk]:
        """Each span's compressed bytes: the piece itself."""
        base = run[0].source.compressed_offset
        return [(span, compressed[_extent(span)[0] - base : _extent(span)[1] - base])
                for span in run]  # fmt: skip

    async def read(self, start: int, end: int) -> bytes:
        spans = self.pieces(start, end)
        needs = [min(end, span.end) - span.start for span in spans]
        keys = [self._key(span.source) for span in spans]
        # the compressed spans not inflated far enough already, asked for at once (one request)
        lacking = [span for span, key, need in zip(spans, keys, needs, strict=True)
                   if len(self.context.inflated.get(key, b"")) < need]  # fmt: skip
        compressed = dict(zip(lacking, await self.context.pieces.get(lacking, self.fetch),
                              strict=True))  # fmt: skip
        inflated = [
            await self._inflated(span, key, need, compressed.get(span))
            for span, key, need in zip(spans, keys, needs, strict=True)
        ]
        return joined(spans, inflated, start, end)

    async def prepare(self, ranges: Sequence[tuple[int, int]], priority: Priority) -> None:
        """Each range's spans fetched and inflated as far as it reaches (kept in the
        inflated spans' LRU), inflated in the order given: a read of a file in the middle
        of a span would otherwise wait for the span's inflation up to it (15-20 ms for
        4 MiB). The first range's spans are fetched alone, so that the first file read
        waits for its own span, not for the spans of all (podman reads /etc/passwd 40 ms
        sooner); then the spans of all the others at once, as the TOC readers do: a start
        record names dozens of files, and one after the other each waited a round trip."""
        failures: list[RegfsError] = []
        first, rest = ranges[:1], ranges[1:]
        async with trio.open_nursery() as nursery:
            try:
                await self.load_ranges(first, priority)
            except RegfsError as error:
                failures.append(error)
                first = []
            nursery.start_soon(self._load_quietly, rest, priority)
            await self._ready(first, priority, failures)
        await self._ready(rest, priority, failures)
        if failures:
            raise failures[0]

    async def _ready(
        self, ranges: Sequence[tuple[int, int]], priority: Priority, failures: list[RegfsError]
    ) -> None:
        """Each range loaded and inflated, in order; what fails is added to ``failures``
        (the other files may still come)."""
        for start, end in ranges:
            try:
                await self.load(start, end, priority)
                await self.read(start, end)
            except RegfsError as error:
                failures.append(error)

    async def _load_quietly(self, ranges: Sequence[tuple[int, int]], priority: Priority) -> None:
        """``load_ranges``, its failure left to the read of each range to meet again (or
        not: another range's span may have failed)."""
        with contextlib.suppress(RegfsError):
            await self.load_ranges(ranges, priority)

    def _key(self, span: TocChunk) -> bytes:
        # what comes out depends on the zTOC's bits, window and size too, not only on the
        # compressed bytes: another image's zTOC may give the same span other ones
        bits, window = self.index.span_start(span.virtual_offset)
        return hashlib.sha256(
            b"inflated span %s %d %d %s" % (span.sha256, bits, span.size, window)
        ).digest()

    async def _inflated(
        self, span: Piece[TocChunk], key: bytes, need: int, compressed: bytes | None
    ) -> bytes:
        """The span's first ``need`` bytes at least, inflated (kept in memory)."""
        data = self.context.inflated.get(key, b"")
        while len(data) < need:  # another reader's inflation may have stopped short

            async def inflate() -> bytes:
                nonlocal compressed
                if compressed is None:  # evicted from the inflated spans meanwhile
                    (compressed,) = await self.context.pieces.get([span], self.fetch)
                size = inflate_until(need, len(self.context.inflated.get(key, b"")), span.size)
                bits, window = self.index.span_start(span.start)
                inflated = await trio.to_thread.run_sync(
                    inflate_from_checkpoint, compressed, bits, window, size,
                    limiter=self.context.decompressing,
                )  # fmt: skip
                if len(inflated) != size:
                    raise MalformedContent(f"{span.what} inflates to {len(inflated)} bytes, "
                                           f"not {size}")  # fmt: skip
                keep(self.context.inflated, key, inflated)
                return inflated

            data = await self.context.flight.run(key, inflate)
        return data


def inflate_until(need: int, inflated: int, span_size: int) -> int:
    """How far to inflate a span (4 MiB for soci-snapshotter's default) for a read that
    needs its first ``need`` bytes, ``inflated`` of which were inflated before: at least
    ``INFLATE_AT_LEAST`` and twice as far as before, so that a file read start to end costs
    at most about twice the span's inflation, while a container's start, which reads a few
    small files and the heads of its libraries, stops short of most spans' ends (each
    whole span took 15-20 ms)."""
    return min(span_size, max(need, INFLATE_AT_LEAST, 2 * inflated))

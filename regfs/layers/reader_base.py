"""What every reader of a layer's stream shares: its context, its protocol, its base.

Layers layer. Every kind of index lays the layer's files on one stream of pieces (the
whole tar cut in fixed chunks; a TOC's chunks on a virtual stream; a zTOC's spans of the
tar) and every reader answers the same two questions: which pieces cover a range of the
stream (``pieces``), and how to make pieces the caches lack (``fetch``). The one
verifying getter (``pieces.py``) asks for what it lacks all at once, so a reader can make
adjacent pieces with one Range request and one decompression hop.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import cachetools
import trio

from regfs.cache.flight import SingleFlight
from regfs.domain.errors import MalformedContent, RegfsError
from regfs.layers.coalesce import STREAMED_RUN, runs
from regfs.layers.layer_ref import LayerRef
from regfs.layers.piece_claims import Deliver, Made, Piece
from regfs.layers.pieces import VerifiedPieces
from regfs.layers.streams import Priority, Streams

S = TypeVar("S")
IndexT = TypeVar("IndexT")

RangeFetch = Callable[[int, int, str], Awaitable[bytes]]
"""``fetch(start, end, what)``: bytes [start, end) of the layer blob, within one deadline."""


class PieceReader(Protocol):
    reads_ahead: bool
    """Whether a sequential reader is read ahead of (a whole layer's chunks are on disk
    after its first pass: only a re-fetch after eviction would gain, and a zstd re-fetch
    makes the chunks after the one asked for anyway)."""

    def pieces(self, start: int, end: int) -> Sequence[Piece[Any]]:
        """The pieces covering ``[start, end)`` of the stream, in order."""
        ...

    async def read(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of the stream, checked."""
        ...

    async def load(self, start: int, end: int, priority: Priority) -> None:
        """Have the pieces of ``[start, end)`` in the caches (fetching what they lack)."""
        ...

    async def prepare(self, ranges: Sequence[tuple[int, int]], priority: Priority) -> None:
        """Have ``ranges`` ready to be read without a wait: their pieces loaded, and
        whatever a read of them would do next with the pieces (a zTOC span's inflation)."""
        ...


class FromStream(Protocol):
    """Bytes of a blob's start a stream brings (``early_bytes.EarlyBytes``)."""

    @property
    def covered(self) -> int:
        """The first bytes of the blob a fetch may take from the stream."""

    async def take(self, start: int, end: int) -> bytes | None:
        """Bytes ``[start, end)``, once the stream brought them; None if it will not."""


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
    streams: Streams
    """Range requests on the wire at once, most urgent first."""
    spool_dir: Path | None = None
    """Where a long zstd re-fetch is spooled (the cache's ``tmp/``; None: the system's)."""
    from_stream: Callable[[LayerRef], FromStream | None] = lambda _: None
    """The stream of a layer's blob start, if one brings it (``early_bytes.py``)."""


def joined(pieces: Sequence[Piece[Any]], datas: Sequence[bytes], start: int, end: int) -> bytes:
    """Bytes ``[start, end)`` of the stream from the pieces covering it."""
    parts = []
    position = start
    for piece, data in zip(pieces, datas, strict=True):
        if position >= end:
            break
        part = data[position - piece.start : end - piece.start]
        if not piece.start <= position < piece.end or not part:
            break
        parts.append(part)
        position += len(part)
    if position < end:
        raise MalformedContent(f"no bytes at {position} of the layer's stream")
    return b"".join(parts)


async def fetch_in_runs(
    missing: Sequence[Piece[S]],
    extent: Callable[[Piece[S]], tuple[int, int]],
    made: Callable[[bytes, Sequence[Piece[S]]], Awaitable[Made[S]]],
    deliver: Deliver[S],
    *,
    ranges: Callable[[], RangeFetch],
    streams: Streams,
    priority: Priority,
    name: str,
    from_stream: FromStream | None = None,
) -> None:
    """Each run of adjacent pieces (``coalesce.py``; ``extent(piece)`` is where its bytes
    lie in the blob) fetched with one Range request, all at once, each holding a stream
    while on the wire (its deadline, ``ranges()``, begins then), made into pieces
    (``made(bytes, run)``) and delivered as it comes. A run that fails does not stop the
    others; the first failure is raised once they ended. ``name``: what a piece is called.
    Runs within what a stream of the blob's start brings (``from_stream``) are cut small
    and taken from it: each is made and delivered as soon as the stream has passed it, and
    fetched as any other if the stream does not bring it."""
    failures: list[RegfsError] = []

    async def one(run: Sequence[Piece[S]], source: FromStream | None) -> None:
        start, end = extent(run[0])[0], extent(run[-1])[1]
        try:
            fetched = await source.take(start, end) if source is not None else None
            if fetched is None:
                async with streams.slot(priority):
                    fetched = await ranges()(start, end, f"{name}s at {start}-{end} not fetched")
            await deliver(await made(fetched, run))
        except RegfsError as error:
            failures.append(error)

    streamed = from_stream.covered if from_stream is not None else 0
    async with trio.open_nursery() as nursery:
        for run in runs(missing, extent):
            if extent(run[-1])[1] > streamed:
                nursery.start_soon(one, run, None)
                continue
            for part in runs(run, extent, largest=STREAMED_RUN):
                nursery.start_soon(one, part, from_stream)
    if failures:
        raise failures[0]


class Reader(Generic[IndexT]):
    """The base of every reader; ``IndexT``: what it asks of the layer's index (a
    ``LayerIndex``, or for TOC chunks and zTOC spans anything with their pieces)."""

    reads_ahead = True
    piece_name = "chunk"
    """What a piece is called in messages."""

    def __init__(self, layer: LayerRef, index: IndexT, context: ReadContext) -> None:
        self.layer = layer
        self.index = index
        self.context = context

    def pieces(self, start: int, end: int) -> Sequence[Piece[Any]]:
        raise NotImplementedError

    async def fetch(
        self, missing: Sequence[Piece[Any]], deliver: Deliver[Any],
        priority: Priority = Priority.WAITED,
    ) -> None:  # fmt: skip
        raise NotImplementedError

    def along(self, pieces: Sequence[Piece[Any]]) -> Sequence[Piece[Any]]:
        """Pieces to fetch with ``pieces`` if any of them must be fetched (none here)."""
        return ()

    async def read(self, start: int, end: int) -> bytes:
        pieces = self.pieces(start, end)
        along = self.along(pieces)
        return joined(pieces, await self.context.pieces.get(pieces, self.fetch, along), start,
                      end)  # fmt: skip

    async def load(self, start: int, end: int, priority: Priority) -> None:
        await self.load_ranges([(start, end)], priority)

    async def load_ranges(self, ranges: Sequence[tuple[int, int]], priority: Priority) -> None:
        """``load`` for each range, all at once: adjacent pieces of different ranges share
        a Range request, and runs far apart go in parallel."""
        fetch = functools.partial(self.fetch, priority=priority)
        pieces = [piece for start, end in ranges for piece in self.pieces(start, end)]
        await self.context.pieces.load(pieces, fetch)

    async def prepare(self, ranges: Sequence[tuple[int, int]], priority: Priority) -> None:
        await self.load_ranges(ranges, priority)

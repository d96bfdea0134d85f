"""Reading a TOC layer (eStargz here) through its reader: a miss someone waits for brings
the chunks laid out after it in the same Range request, unless they are cached or on
their way already. Blob served from memory, every Range request recorded."""

from __future__ import annotations

import os
from pathlib import Path

import cachetools
import trio

from regfs.cache.chunks import ChunkCache
from regfs.cache.flight import SingleFlight
from regfs.cache.layout import CacheLayout
from regfs.domain.digest import Digest
from regfs.domain.manifest import Descriptor
from regfs.layers.formats.toc import ESTARGZ, TocReference, toc_offset
from regfs.layers.index.build import build_toc_index
from regfs.layers.index.layer_index import LayerIndex
from regfs.layers.layer_ref import LayerRef
from regfs.layers.pieces import VerifiedPieces
from regfs.layers.reader_base import PieceReader, RangeFetch, ReadContext
from regfs.layers.readers import reader_for
from regfs.layers.streams import Priority, Streams
from tests.support.estargz_writer import estargz

CHUNK = 1024
FILES = [("a", os.urandom(CHUNK)), ("b", os.urandom(CHUNK)), ("c", os.urandom(3 * CHUNK))]


class Registry:
    """The blob, served by Range; a request starting at ``held_from`` waits for ``go``."""

    def __init__(self, blob: bytes) -> None:
        self.blob = blob
        self.requests: list[tuple[int, int]] = []
        self.held_from = -1
        self.go = trio.Event()

    def ranges(self, layer: LayerRef) -> RangeFetch:
        async def fetch(start: int, end: int, what: str) -> bytes:
            self.requests.append((start, end))
            if start == self.held_from:
                await self.go.wait()
            return self.blob[start:end]

        return fetch


def toc_reader(tmp_path: Path) -> tuple[PieceReader, LayerIndex, Registry]:
    blob, toc = estargz(FILES, CHUNK)
    start, footer_size = toc_offset(blob[-51:], len(blob))
    reference = TocReference(ESTARGZ, Digest.of(toc))
    build_toc_index(
        blob[start : len(blob) - footer_size], tmp_path / "index", reference=reference,
        toc_start=start, digest=str(Digest.of(blob)), size=len(blob), built_from="test",
    )  # fmt: skip
    index = LayerIndex.open(tmp_path / "index")
    assert index is not None
    descriptor = Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", Digest.of(blob),
                            len(blob))  # fmt: skip
    registry = Registry(blob)
    context = ReadContext(
        VerifiedPieces(ChunkCache(CacheLayout(tmp_path / "cache"), 1 << 30)), registry.ranges,
        trio.CapacityLimiter(2), cachetools.LRUCache(1 << 20), SingleFlight(), Streams(),
    )  # fmt: skip
    layer = LayerRef("registry.test", "app", descriptor)
    return reader_for(layer, index, context), index, registry


def chunk_starts(index: LayerIndex) -> list[int]:
    """Where each chunk's gzip member starts in the blob, in stream order."""
    return [chunk.compressed_offset for chunk in index.toc_chunks_in()]


async def test_a_miss_brings_the_chunks_after_it_in_its_request(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    reader, _, registry = toc_reader(tmp_path)
    assert await reader.read(0, CHUNK) == FILES[0][1]
    assert len(registry.requests) == 1
    assert await reader.read(CHUNK, 5 * CHUNK) == FILES[1][1] + FILES[2][1]
    assert len(registry.requests) == 1  # all of it came with the first miss


async def test_chunks_on_their_way_are_not_fetched_again_with_a_miss(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    """A read-ahead of a file, begun as its first read was, claimed the file's next
    chunks: the read's own request stops before them."""
    reader, index, registry = toc_reader(tmp_path)
    starts = chunk_starts(index)
    registry.held_from = starts[3]  # c's second and third chunks, the layer's last
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader.load, 3 * CHUNK, 5 * CHUNK, Priority.AHEAD)
        await trio.sleep(1)
        assert await reader.read(2 * CHUNK, 3 * CHUNK) == FILES[2][1][:CHUNK]
        registry.go.set()
    assert registry.requests[0][0] == starts[3]
    assert registry.requests[1] == (starts[2], starts[3])
    assert await reader.read(0, 5 * CHUNK) == b"".join(data for _, data in FILES)
    assert len(registry.requests) == 3  # a and b: one more miss

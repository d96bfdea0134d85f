"""Reading a layer through its TOC (eStargz here) or its SOCI zTOC: a TOC miss someone
waits for brings the chunks laid out after it in the same Range request, unless they are
cached or on their way already; a zTOC span is inflated as far as reads need. Blob served
from memory, every Range request recorded."""

from __future__ import annotations

import gzip
import os
import tarfile
import time
from pathlib import Path

import cachetools
import trio

from regfs.cache.chunks import ChunkCache
from regfs.cache.flight import SingleFlight
from regfs.cache.layout import CacheLayout
from regfs.domain.digest import Digest
from regfs.domain.manifest import Descriptor
from regfs.layers.formats.toc import ESTARGZ, TocReference, toc_offset
from regfs.layers.index.build import build_soci_index, build_toc_index
from regfs.layers.index.layer_index import LayerIndex
from regfs.layers.layer_ref import LayerRef
from regfs.layers.pieces import VerifiedPieces
from regfs.layers.reader_base import PieceReader, RangeFetch, ReadContext
from regfs.layers.readers import INFLATE_AT_LEAST, inflate_until, read_stream, reader_for
from regfs.layers.streams import Priority, Streams
from regfs.layers.ztoc_builder import build_ztoc
from tests.support.crafted import member, tar_of
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

    async def asked(self, count: int) -> None:
        """Until ``count`` requests were made, or 10 s of real time passed: the clock jumps
        while a worker thread looks in the cache, so a deadline in its time cannot wait."""
        began = time.monotonic()
        while len(self.requests) < count and time.monotonic() - began < 10:
            await trio.sleep(0.01)


def toc_reader(tmp_path: Path) -> tuple[PieceReader, LayerIndex, Registry]:
    blob, toc = estargz(FILES, CHUNK)
    start, footer_size = toc_offset(blob[-51:], len(blob))
    reference = TocReference(ESTARGZ, Digest.of(toc))
    build_toc_index(
        blob[start : len(blob) - footer_size], tmp_path / "index", reference=reference,
        toc_start=start, digest=str(Digest.of(blob)), size=len(blob), built_from="test",
    )  # fmt: skip
    return reader_of(tmp_path, blob)


def reader_of(
    tmp_path: Path, blob: bytes, context: ReadContext | None = None
) -> tuple[PieceReader, LayerIndex, Registry]:
    """The reader of ``blob`` through the index built at ``tmp_path / "index"``."""
    index = LayerIndex.open(tmp_path / "index")
    assert index is not None
    descriptor = Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", Digest.of(blob),
                            len(blob))  # fmt: skip
    registry = Registry(blob)
    context = context or ReadContext(
        VerifiedPieces(ChunkCache(CacheLayout(tmp_path / "cache"), 1 << 30)), registry.ranges,
        trio.CapacityLimiter(2), cachetools.LRUCache(16 << 20, getsizeof=len), SingleFlight(),
        Streams(),
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
    # in either order: the read-ahead claimed its chunks at once, its request may come later
    assert sorted(registry.requests)[0] == (starts[2], starts[3])
    assert sorted(registry.requests)[1][0] == starts[3]
    assert await reader.read(0, 5 * CHUNK) == b"".join(data for _, data in FILES)
    assert len(registry.requests) == 3  # a and b: one more miss


def text_through_ztoc(
    tmp_path: Path, span_size: int = 4 << 20
) -> tuple[PieceReader, LayerIndex, Registry, bytes]:
    """A reader of a gzip layer of about 7 MiB of text (two 4 MiB spans) through the zTOC
    ``regfs index push`` would make; its index, its registry, and the layer's tar."""
    text = b"".join(b"line %d\n" % n for n in range(700_000))
    tar = tar_of([member("text", text), member("last", b"last\n")], tarfile.PAX_FORMAT)
    blob = gzip.compress(tar, mtime=0)
    (tmp_path / "layer").write_bytes(blob)
    ztoc = build_ztoc(tmp_path / "layer", span_size=span_size)
    build_soci_index(ztoc, tmp_path / "index", digest=str(Digest.of(blob)), size=len(blob),
                     built_from="test")  # fmt: skip
    return (*reader_of(tmp_path, blob), tar)


def test_a_span_is_inflated_as_far_as_reads_need_doubling() -> None:
    span = 4 << 20
    assert inflate_until(100, 0, span) == INFLATE_AT_LEAST
    assert inflate_until(INFLATE_AT_LEAST + 1, INFLATE_AT_LEAST, span) == 2 * INFLATE_AT_LEAST
    assert inflate_until(3 << 20, INFLATE_AT_LEAST, span) == 3 << 20
    assert inflate_until(span, 3 << 20, span) == span
    assert inflate_until(100, 0, 1000) == 1000


async def test_a_span_is_inflated_only_as_far_as_the_reads_went(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    """A container's start reads the heads of a few files: inflating each whole 4 MiB
    span it touches took 15-20 ms a miss."""
    reader, index, _, tar = text_through_ztoc(tmp_path)
    inflated = reader.context.inflated  # type: ignore[attr-defined]
    size = index.meta.uncompressed_size
    assert await read_stream(reader, size, 1000, 100) == tar[1000:1100]
    assert [len(data) for data in inflated.values()] == [INFLATE_AT_LEAST]
    assert await read_stream(reader, size, 3 << 20, 4096) == tar[3 << 20 : (3 << 20) + 4096]
    assert await read_stream(reader, size, 0, size) == tar


async def test_a_read_ahead_waits_for_what_a_miss_brings_along(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    """The neighbours a miss brings are claimed as it begins: a read-ahead of them begun
    meanwhile fetches nothing, and a read of them waits for the miss's request."""
    reader, index, registry = toc_reader(tmp_path)
    registry.held_from = chunk_starts(index)[0]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader.read, 0, CHUNK)
        await trio.sleep(1)
        await reader.load(CHUNK, 5 * CHUNK, Priority.AHEAD)
        nursery.start_soon(reader.read, CHUNK, 2 * CHUNK)
        await trio.sleep(1)
        registry.go.set()
    assert len(registry.requests) == 1
    assert await reader.read(0, 5 * CHUNK) == b"".join(data for _, data in FILES)
    assert len(registry.requests) == 1


async def test_prepared_ranges_of_a_span_are_read_with_no_fetch_and_no_inflation(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    """``prepare`` (a layer store's start files) fetches the spans of all its ranges at
    once and inflates each as far as its ranges reach: the reads that follow wait for
    neither."""
    reader, _, registry, tar = text_through_ztoc(tmp_path)
    inflated = reader.context.inflated  # type: ignore[attr-defined]
    ranges = [(1000, 1100), (5 << 20, (5 << 20) + 4096)]
    await reader.prepare(ranges, Priority.AHEAD)
    fetched = list(registry.requests)
    before = {key: len(data) for key, data in inflated.items()}
    assert len(before) == 2
    for start, end in ranges:
        assert await reader.read(start, end) == tar[start:end]
    assert registry.requests == fetched
    assert {key: len(data) for key, data in inflated.items()} == before


async def test_prepare_asks_for_the_spans_after_the_first_all_at_once(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    """A start record's files are spread over many spans: while the request of one is
    held, the requests of the spans of the files after it are made (one after the other,
    each waited a round trip); the first file's span is asked for alone, first."""
    reader, index, registry, tar = text_through_ztoc(tmp_path, span_size=1 << 20)
    spans = index.toc_chunks_in()
    assert len(spans) >= 5
    wanted = [spans[0], spans[2], spans[4]]  # far apart: three Range requests
    ranges = [(span.virtual_offset + 10, span.virtual_offset + 200) for span in wanted]
    registry.held_from = spans[2].compressed_offset
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader.prepare, ranges, Priority.AHEAD)
        await registry.asked(3)
        starts = [start for start, _ in registry.requests]
        assert starts[0] == wanted[0].compressed_offset
        assert sorted(starts[1:]) == [span.compressed_offset for span in wanted[1:]]
        registry.go.set()
    for start, end in ranges:
        assert await reader.read(start, end) == tar[start:end]
    assert len(registry.requests) == 3
